/**
 * Hostile input to `tbuild cache import`: archives and directories that try to write outside the
 * store's cache mounts (`..`, absolute paths, a symlink then a file through it, hard links out of
 * the archive or to a symlink, an entry twice), to seed another mount than they claim (an index
 * whose key is not its id's), or to make the import read the host's files (a mount directory that
 * is a symlink, symlinks inside a mount), or regular files whose header name was cut to end in
 * "/" (read as the files their PAX names name, which climb out or claim more than is there). Each
 * ends in one line of error or with what it planted confined to the mount; the canary outside is
 * untouched, no temp directory is left in the store, and the store still builds.
 */
import { execFileSync } from "node:child_process";
import {
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type Canary, hostileWorld, MODES, type Mode, ROOTLESS_USER } from "./harness.js";
import { type EntrySpec, writeLayer } from "./layer-images.js";

const world = hostileWorld();

/** A real mount's index record (id `pkgs`), as an export writes it. */
let record: { key: string; id: string; sharing: string; target: string };

beforeAll(async () => {
  const store = world.store("root");
  const context = world.context({
    Dockerfile: "FROM busybox\nRUN --mount=type=cache,id=pkgs,target=/cache touch /cache/x\n",
  });
  expect(world.tbuild("root", store, ["build", "-q", context]).status).toBe(0);
  const dir = world.dir("real-export");
  const exported = world.tbuild("root", store, ["cache", "export", "--all", "-o", dir]);
  expect(exported.status, exported.stderr).toBe(0);
  record = JSON.parse(readFileSync(path.join(dir, "tbuild-cache-mounts.json"), "utf8")).mounts[0];
  expect(record.id).toBe("pkgs");
}, 300_000);

const index = (mounts: unknown[]) => JSON.stringify({ version: 1, mounts });

/** An archive: the index naming `record` (or `mounts`), then `entries` (paths relative to the archive). */
function archive(entries: (key: string, canary: Canary) => EntrySpec[], mounts?: unknown[]) {
  return (canary: Canary): EntrySpec[] => [
    { path: "tbuild-cache-mounts.json", content: index(mounts ?? [record]) },
    { path: `${record.key}/`, type: "Directory" },
    ...entries(record.key, canary),
  ];
}

interface ArchiveCase {
  name: string;
  entries: (canary: Canary) => EntrySpec[];
  /** The one line of error it ends in. */
  error: RegExp;
}

const CASES: ArchiveCase[] = [
  {
    name: "an entry that climbs out with ..",
    entries: archive((key) => [{ path: `${key}/../../../escaped`, content: "out" }]),
    error: /refused to unpack the cache mounts of .*: its entry ".*\.\.\/escaped" has a '\.\.' component/,
  },
  {
    name: "an absolute path",
    entries: archive((_key, canary) => [{ path: path.join(canary.dir, "planted"), content: "out" }]),
    error: /its entry ".*planted" has an absolute path/,
  },
  {
    name: "a symlink to the canary, then a file through it",
    entries: archive((key, canary) => [
      { path: `${key}/link`, type: "SymbolicLink", linkpath: canary.dir },
      { path: `${key}/link/planted`, content: "through the link" },
    ]),
    error: /its entry ".*\/link\/planted" lies below ".*\/link", which is no directory/,
  },
  {
    name: "a hard link to a host file",
    entries: archive((key, canary) => [
      { path: `${key}/hard`, type: "Link", linkpath: path.join(canary.dir, "secret") },
    ]),
    error: /its entry ".*\/hard" links to ".*secret": has an absolute path/,
  },
  {
    name: "a hard link to a symlink of the archive",
    entries: archive((key, canary) => [
      { path: `${key}/link`, type: "SymbolicLink", linkpath: path.join(canary.dir, "secret") },
      { path: `${key}/hard`, type: "Link", linkpath: `${key}/link` },
    ]),
    error: /its entry ".*\/hard" is a hard link to ".*\/link", which is no file of the archive before it/,
  },
  {
    name: "the same path twice (a file, then a symlink over it)",
    entries: archive((key, canary) => [
      { path: `${key}/a`, content: "first" },
      { path: `${key}/a`, type: "SymbolicLink", linkpath: canary.dir },
    ]),
    error: /its entry ".*\/a" is there twice/,
  },
  {
    name: "an index whose key is not its id's (seeding another mount)",
    entries: archive(
      (key) => [{ path: `${key}/a`, content: "x" }],
      [{ ...{ key: "0".repeat(32), id: "pkgs", sharing: "shared", target: "/cache" } }],
    ),
    error: /lists a mount that is not valid/,
  },
  {
    name: "an index whose key climbs out",
    entries: archive(() => [], [{ key: "../../x", id: "pkgs", sharing: "shared", target: "/cache" }]),
    error: /lists a mount that is not valid/,
  },
  {
    name: "an index naming a mount whose directory is a symlink",
    entries: (canary) => [
      { path: "tbuild-cache-mounts.json", content: index([record]) },
      { path: record.key, type: "SymbolicLink", linkpath: canary.dir },
    ],
    error: /lists cache mount pkgs \(.*\) but holds no directory for it/,
  },
];

/**
 * A ustar header block written byte by byte (as Python's tarfile writes one): `name` as given,
 * whatever it ends in, and `size` in octal, with its checksum.
 */
function ustarBlock(name: string, type: string, size: number): Buffer {
  const block = Buffer.alloc(512);
  block.write(name, 0, 100, "utf8");
  block.write("0000644\0", 100);
  block.write("0000000\0", 108);
  block.write("0000000\0", 116);
  block.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  block.write("00000000000\0", 136);
  block.write(type, 156);
  block.write("ustar\u000000", 257);
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return block;
}

/** `bytes` and zero bytes up to the next 512-byte block. */
function blocks(bytes: Buffer): Buffer {
  return Buffer.concat([bytes, Buffer.alloc((512 - (bytes.length % 512)) % 512)]);
}

/** A regular file named in a PAX record, its header's 100-byte name cut to end in "/": "claims" bytes of content, `content` given. */
function cutNameFile(whole: string, claims: number, content: Buffer): Buffer {
  const body = ` path=${whole}\n`;
  let record = `${body.length}${body}`;
  record = `${record.length}${body}`;
  const cut = `${whole.slice(0, 99)}/`;
  return Buffer.concat([
    ustarBlock("PaxHeader/x", "x", record.length),
    blocks(Buffer.from(record)),
    ustarBlock(cut, "0", claims),
    blocks(content),
  ]);
}

/** An archive: the index naming `record`, its mount's directory, then `rest`; as bytes. */
function rawArchive(rest: Buffer): Buffer {
  const text = Buffer.from(index([record]));
  return Buffer.concat([
    ustarBlock("tbuild-cache-mounts.json", "0", text.length),
    blocks(text),
    ustarBlock(`${record.key}/`, "5", 0),
    rest,
    Buffer.alloc(1024),
  ]);
}

/** Archives of regular files whose header name was cut to end in "/", read as the files their PAX names name. */
const CUT_NAME_CASES = [
  {
    name: "a file whose cut name ends in '/' and whose whole name climbs out",
    bytes: () => rawArchive(cutNameFile(`${record.key}/${"../".repeat(40)}escaped`, 4, Buffer.from("out\n"))),
    error: /refused to unpack .*escaped/,
  },
  {
    name: "a file whose cut name ends in '/' claiming more content than the archive holds",
    bytes: () => rawArchive(cutNameFile(`${record.key}/${"a".repeat(120)}`, 1 << 20, Buffer.from("short"))),
    error: /ends in the middle of a file/,
  },
];

describe.each(MODES)("hostile cache mount archives, %s", (mode: Mode) => {
  let store: string;
  beforeAll(() => {
    store = world.store(mode);
  });

  const leftovers = () =>
    readdirSync(path.join(store, "cache-mounts")).filter(
      (name) => name.startsWith(".") && !name.endsWith(".lock"),
    );
  /** The store's cache mounts, as their directories (named by key) on disk. */
  const mountDirs = () =>
    readdirSync(path.join(store, "cache-mounts")).filter((n) => /^[0-9a-f]{32}$/.test(n));

  it.each(CASES)("refuses $name", async ({ entries, error }) => {
    const canary = world.canary(mode);
    const file = path.join(world.dir("archive", mode), "mounts.tar.gz");
    await writeLayer(file, entries(canary));
    const result = world.tbuild(mode, store, ["cache", "import", "-i", file]);
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split("\n");
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(error);
    canary.expectUntouched(result.stdout, result.stderr);
    expect(existsSync(path.join(path.dirname(store), "escaped"))).toBe(false);
    expect(leftovers()).toEqual([]);
    // Nothing was seeded: a refused archive leaves no mount behind (`cache mounts` says so too,
    // checked once after every case, in "leaves the store usable": a tbuild process less per case).
    expect(mountDirs()).toEqual([]);
  });

  it.each(CUT_NAME_CASES)("refuses $name", ({ bytes, error }) => {
    const canary = world.canary(mode);
    const file = path.join(world.dir("archive", mode), "mounts.tar");
    writeFileSync(file, bytes());
    const result = world.tbuild(mode, store, ["cache", "import", "-i", file]);
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split("\n");
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(error);
    canary.expectUntouched(result.stdout, result.stderr);
    expect(existsSync(path.join(path.dirname(store), "escaped"))).toBe(false);
    expect(leftovers()).toEqual([]);
    expect(mountDirs()).toEqual([]);
  });

  it("says that bytes that are no archive are not one", () => {
    const file = path.join(world.dir("garbage", mode), "mounts.tar.zst");
    writeFileSync(file, Buffer.alloc(4096, 7));
    const result = world.tbuild(mode, store, ["cache", "import", "-i", file]);
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/ERROR: .*mounts\.tar\.zst/);
    expect(leftovers()).toEqual([]);
  });

  it("reads a directory without following its symlinks out of it", () => {
    const canary = world.canary(mode);
    const dir = world.dir("import-dir", mode);
    const mount = path.join(dir, record.key);
    mkdirSync(mount);
    writeFileSync(path.join(mount, "own"), "own file\n");
    symlinkSync(path.join(canary.dir, "secret"), path.join(mount, "to-secret"));
    symlinkSync(canary.dir, path.join(mount, "to-dir"));
    writeFileSync(path.join(dir, "tbuild-cache-mounts.json"), index([record]));
    if (mode === "rootless") execFileSync("chown", ["-R", ROOTLESS_USER, dir]);
    const result = world.tbuild(mode, store, ["cache", "import", "-i", dir]);
    expect(result.status, result.stderr).toBe(0);
    // A build sees the links as links: the canary's content was never copied in.
    const context = world.context({
      Dockerfile:
        "FROM busybox\nRUN --mount=type=cache,id=pkgs,target=/cache sh -c 'cat /cache/own; readlink /cache/to-secret; ls /cache/to-dir 2>&1 || true; cat /cache/to-secret 2>&1 || true' > /report\n",
    });
    const out = world.dir("report", mode);
    const built = world.tbuild(mode, store, ["build", "-q", "-o", `type=local,dest=${out}`, context]);
    expect(built.status, built.stderr).toBe(0);
    const report = readFileSync(path.join(out, "report"), "utf8");
    expect(report.startsWith(`own file\n${path.join(canary.dir, "secret")}\n`)).toBe(true);
    canary.expectUntouched(result.stdout, result.stderr, report);
    // The import never copied the canary's secret into the store.
    const grep = execFileSync("sh", ["-c", `grep -r -l -F "${canary.secret}" "${store}" || true`], {
      encoding: "utf8",
    });
    expect(grep).toBe("");
  });

  it("refuses a mount directory that is a symlink to the host", () => {
    const canary = world.canary(mode);
    const dir = world.dir("import-link", mode);
    symlinkSync(canary.dir, path.join(dir, record.key));
    writeFileSync(path.join(dir, "tbuild-cache-mounts.json"), index([record]));
    if (mode === "rootless") chownSync(path.join(dir, "tbuild-cache-mounts.json"), ...ids());
    const result = world.tbuild(mode, store, ["cache", "import", "-i", dir]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/lists cache mount pkgs \(.*\) but holds no directory for it/);
    canary.expectUntouched(result.stdout, result.stderr);
  });

  it("leaves the store usable, listing no mount but the one a directory import seeded", () => {
    const listed = world.tbuild(mode, store, ["cache", "mounts", "-q"]).stdout.split("\n").filter(Boolean);
    expect(listed.filter((key) => key !== record.key)).toEqual([]);
    expect(listed).toEqual(mountDirs());
    world.expectStoreUsable(mode, store);
  });
});

describe("hostile cache mount archives, rootless: an owner the user namespace does not map", () => {
  it("says which entry it is, after the entries before it were written, and leaves nothing", async () => {
    const store = world.store("rootless");
    const file = path.join(world.dir("archive-unmapped", "rootless"), "mounts.tar.gz");
    // Enough files before it that the failing call is made on the writing thread well after the start.
    const before = Array.from({ length: 2000 }, (_, i) => ({ path: `f${i}`, content: "x".repeat(i) }));
    await writeLayer(
      file,
      archive((key) => [
        ...before.map((e) => ({ ...e, path: `${key}/${e.path}` })),
        { path: `${key}/unmapped`, content: "x", uid: 4_000_000, gid: 0 },
        { path: `${key}/after`, content: "y" },
      ])(world.canary("rootless")),
    );
    const result = world.tbuild("rootless", store, ["cache", "import", "-i", file]);
    expect(result.status).toBe(1);
    const lines = result.stderr.trim().split("\n");
    expect(lines, result.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(
      /\/unmapped in the cache mounts of .* is owned by 4000000:0, which this user namespace does not map; give the user a larger subordinate range/,
    );
    const cacheMounts = path.join(store, "cache-mounts");
    expect(readdirSync(cacheMounts).filter((n) => n.startsWith(".") && !n.endsWith(".lock"))).toEqual([]);
    expect(world.tbuild("rootless", store, ["cache", "mounts", "-q"]).stdout).toBe("");
  });
});

function ids(): [number, number] {
  const uid = Number(execFileSync("id", ["-u", ROOTLESS_USER], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", ROOTLESS_USER], { encoding: "utf8" }).trim());
  return [uid, gid];
}
