/**
 * Cache mount archives' fast paths against the plain ones, on random trees (owners, modes with
 * setuid/setgid/sticky, symlinks, hard links, files of 0/1/511/512/513 bytes and over 512 KiB,
 * names over 100 bytes, deep directories):
 * - unpacking with the calls on their own thread, needless fchown/fchmod spared, the archive read
 *   by the pull parser, gives exactly the tree that every call made on one thread, the archive
 *   read by readTarEntries, gives, and the tree that was packed;
 * - GNU tar agrees: `tar -tv` lists our archive as the tree, and our unpack of GNU tar's archive of
 *   the tree gives the tree;
 * - the zstd frames compressed two at a time are one stream `zstd -d`, Node's decompressor and
 *   tbuild's layer reader all read as the tar packDirectoryTree gives (its chunks each a new
 *   buffer, where the blob's are a pool's, whole frames compressed as they are), the same bytes as
 *   frames copied from the tar in one piece give, and the same tree gives the same bytes.
 * Runs as root (owners are set freely); the code under test is dist's, which has its thread's file.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { createZstdDecompress } from "node:zlib";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { decompressor } from "../../../dist/oci/layer.js";
import {
  FRAME_BYTES,
  packDirectoryTree,
  packMountBlob,
  unpackTree,
  zstdFrames,
} from "../../../dist/worker/cache-mounts/archive.js";

const work = mkdtempSync(path.join(tmpdir(), "tbuild-mount-archive-property-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let runs = 0;

const SIZES = [0, 1, 511, 512, 513, 600 * 1024, 3000];
const OWNERS = [0, 1000, 65534, 4242];
const name = fc.oneof(fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,8}$/), fc.stringMatching(/^[a-z]{101,130}$/));

type Node =
  | { kind: "dir"; mode: number }
  | { kind: "file"; size: number; seed: number; mode: number }
  | { kind: "symlink"; target: string }
  | { kind: "hardlink"; to: number };

const node: fc.Arbitrary<Node> = fc.oneof(
  fc.record({
    kind: fc.constant("dir" as const),
    mode: fc.constantFrom(0o755, 0o700, 0o2775, 0o1777, 0o555),
  }),
  fc.record({
    kind: fc.constant("file" as const),
    size: fc.constantFrom(...SIZES),
    seed: fc.nat(1000),
    mode: fc.integer({ min: 0, max: 0o7777 }),
  }),
  fc.record({
    kind: fc.constant("symlink" as const),
    target: fc.constantFrom("../x", "/etc/passwd", "a/b", "missing"),
  }),
  fc.record({ kind: fc.constant("hardlink" as const), to: fc.nat(50) }),
);

const tree = fc.record({
  root: fc.record({ mode: fc.constantFrom(0o755, 0o2770, 0o1777), uid: fc.constantFrom(...OWNERS) }),
  entries: fc.array(
    fc.record({
      dir: fc.array(name, { maxLength: 7 }),
      name,
      node,
      uid: fc.constantFrom(...OWNERS),
      gid: fc.constantFrom(...OWNERS),
      mtime: fc.integer({ min: 0, max: 2_000_000_000 }),
    }),
    { minLength: 1, maxLength: 40 },
  ),
});

type TreeSpec = typeof tree extends fc.Arbitrary<infer T> ? T : never;

/** Makes the tree on disk; entries whose place is taken (or lies below a file) are left out. */
function makeTree(dir: string, spec: TreeSpec): void {
  mkdirSync(dir);
  const files: string[] = [];
  const dirs: { file: string; mode: number; uid: number; gid: number; mtime: number }[] = [];
  for (const e of spec.entries) {
    let parent = dir;
    let blocked = false;
    for (const part of e.dir) {
      parent = path.join(parent, part);
      const st = lstatSync(parent, { throwIfNoEntry: false });
      if (st === undefined) {
        mkdirSync(parent);
        dirs.push({ file: parent, mode: 0o755, uid: e.uid, gid: e.gid, mtime: e.mtime });
      } else if (!st.isDirectory()) blocked = true;
      if (blocked) break;
    }
    const file = path.join(parent, e.name);
    if (blocked || lstatSync(file, { throwIfNoEntry: false }) !== undefined) continue;
    const n = e.node;
    if (n.kind === "dir") {
      mkdirSync(file);
      dirs.push({ file, mode: n.mode, uid: e.uid, gid: e.gid, mtime: e.mtime });
    } else if (n.kind === "file") {
      writeFileSync(file, content(n.seed, n.size));
      chownSync(file, e.uid, e.gid);
      chmodSync(file, n.mode);
      utimesSync(file, e.mtime, e.mtime);
      files.push(file);
    } else if (n.kind === "symlink") {
      symlinkSync(n.target, file);
      lchownSync(file, e.uid, e.gid);
      lutimesSync(file, e.mtime, e.mtime);
    } else if (files.length > 0) {
      linkSync(files[n.to % files.length]!, file);
    }
  }
  for (const d of dirs.reverse()) {
    chownSync(d.file, d.uid, d.gid);
    chmodSync(d.file, d.mode);
    utimesSync(d.file, d.mtime, d.mtime);
  }
  chownSync(dir, spec.root.uid, spec.root.uid);
  chmodSync(dir, spec.root.mode);
  utimesSync(dir, 1_700_000_000, 1_700_000_000);
}

/** Half random-looking, half text: bytes that depend only on the seed and the size. */
function content(seed: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let at = 0, block = 0; at < size; block++)
    at += createHash("sha256").update(`${seed}:${block}`).digest().copy(out, at);
  if (seed % 2 === 1) for (let i = 0; i < size; i++) out[i] = 97 + (out[i]! % 26);
  return out;
}

/** Every entry: path, type, mode bits, owner, size, mtime in seconds, link target, content hash; hard links by their first path. */
function listTree(dir: string): string[] {
  const lines: string[] = [];
  const inodes = new Map<number, string>();
  const walk = (rel: string) => {
    const file = path.join(dir, rel);
    const st = lstatSync(file);
    const type = st.isDirectory() ? "d" : st.isSymbolicLink() ? "l" : st.isFile() ? "f" : "?";
    let extra = "";
    if (type === "f") {
      const first = st.nlink > 1 ? inodes.get(st.ino) : undefined;
      if (st.nlink > 1 && first === undefined) inodes.set(st.ino, rel);
      extra = `${createHash("sha256").update(readFileSync(file)).digest("hex").slice(0, 16)} ${first ?? ""}`;
    } else if (type === "l") extra = readlinkSync(file);
    const mode = (st.mode & 0o7777).toString(8);
    lines.push(
      `${rel} ${type} ${mode} ${st.uid}:${st.gid} ${type === "d" ? "" : st.size} ${Math.floor(st.mtimeMs / 1000)} ${extra}`,
    );
    if (type === "d")
      for (const child of readdirSync(file).sort()) walk(rel === "." ? child : `${rel}/${child}`);
  };
  walk(".");
  return lines;
}

async function bytesOf(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

async function unpack(archive: Buffer, dest: string, plainly: boolean): Promise<void> {
  await unpackTree(Readable.from([archive]), dest, { rootless: false, what: "the test archive", plainly });
}

describe("cache mount archives: fast paths against plain ones", () => {
  it("unpacks on its own thread, sparing needless calls, exactly the tree the plain path unpacks and that was packed", async () => {
    await fc.assert(
      fc.asyncProperty(tree, async (spec) => {
        const base = path.join(work, `run-${runs++}`);
        mkdirSync(base);
        try {
          const src = path.join(base, "src");
          makeTree(src, spec);
          const archive = await bytesOf(packDirectoryTree(src));
          await unpack(archive, path.join(base, "fast"), false);
          await unpack(archive, path.join(base, "plain"), true);
          const expected = listTree(src);
          expect(listTree(path.join(base, "plain"))).toEqual(expected);
          expect(listTree(path.join(base, "fast"))).toEqual(expected);
        } finally {
          rmSync(base, { recursive: true, force: true });
        }
      }),
      { numRuns: 25 },
    );
  });

  it("agrees with GNU tar: tar -tv lists our archive as the tree, and GNU tar's archive of it unpacks to it", async () => {
    await fc.assert(
      fc.asyncProperty(tree, async (spec) => {
        const base = path.join(work, `run-${runs++}`);
        mkdirSync(base);
        try {
          const src = path.join(base, "src");
          makeTree(src, spec);
          const ours = path.join(base, "ours.tar");
          writeFileSync(ours, await bytesOf(packDirectoryTree(src)));
          const linked = hardLinked(src);
          expect(gnuListing(ours, linked)).toEqual(gnuListing(path.join(base, "gnu.tar"), linked, src));
          const gnu = readFileSync(path.join(base, "gnu.tar"));
          await unpack(gnu, path.join(base, "from-gnu"), false);
          expect(listTree(path.join(base, "from-gnu"))).toEqual(listTree(src));
        } finally {
          rmSync(base, { recursive: true, force: true });
        }
      }),
      { numRuns: 15 },
    );
  });

  it("compresses in independent frames that zstd -d, Node and the layer reader read as the tar, the same bytes each time", async () => {
    const src = path.join(work, "frames");
    mkdirSync(src);
    for (let i = 0; i < 3; i++) writeFileSync(path.join(src, `big-${i}`), content(i, 7 << 20));
    // Small files filling many chunks: the blob's chunks come from a pool, filled again once copied.
    for (let i = 0; i < 4000; i++) writeFileSync(path.join(src, `small-${i}`), content(i, 1000 + (i % 2000)));
    const tar = await bytesOf(packDirectoryTree(src));
    expect(tar.length).toBeGreaterThan(2 * FRAME_BYTES);
    expect(tar.length - 3 * (7 << 20)).toBeGreaterThan(8 << 20);
    const blob = await bytesOf(packMountBlob(src));
    expect((await bytesOf(packMountBlob(src))).equals(blob)).toBe(true);
    // The plain path: the whole tar as one chunk, copied into frames.
    expect((await bytesOf(zstdFrames(Readable.from([tar])))).equals(blob)).toBe(true);
    const file = path.join(work, "frames.tar.zst");
    writeFileSync(file, blob);
    const frames = /^\s*(\d+)\s/m.exec(
      execFileSync("zstd", ["-l", file], { encoding: "utf8" }).split("\n")[1]!,
    );
    expect(Number(frames?.[1])).toBe(Math.ceil(tar.length / FRAME_BYTES));
    expect(execFileSync("zstd", ["-d", "-c", file], { maxBuffer: 1 << 30 }).equals(tar)).toBe(true);
    expect((await bytesOf(Readable.from([blob]).pipe(createZstdDecompress()))).equals(tar)).toBe(true);
    expect((await bytesOf(Readable.from([blob]).pipe(decompressor("zstd")))).equals(tar)).toBe(true);
    await unpack(blob, path.join(work, "frames-unpacked"), false);
    expect(listTree(path.join(work, "frames-unpacked"))).toEqual(listTree(src));
  });
});

/** Paths (relative, as tar lists them) of files with more than one link. */
function hardLinked(dir: string): Set<string> {
  return new Set(
    listTree(dir)
      .map((line) => line.split(" "))
      .filter((fields) => fields[1] === "f" && lstatSync(path.join(dir, fields[0]!)).nlink > 1)
      .map((fields) => fields[0]!),
  );
}

/**
 * `tar -tv` of an archive, as sorted lines of path, type and mode, owner, size, and mtime; with
 * `tree`, GNU tar first archives that tree into `archive`. Which of a file's hard links is stored
 * as the file and which as links to it depends on the order a packer walks in: for `linked` paths
 * the listing says only that it is a file, not its size or which it links to.
 */
function gnuListing(archive: string, linked: Set<string>, tree?: string): string[] {
  if (tree !== undefined) execFileSync("tar", ["-C", tree, "-cf", archive, "."]);
  const out = execFileSync("tar", ["-tv", "--numeric-owner", "--full-time", "-f", archive], {
    encoding: "utf8",
    env: { ...process.env, TZ: "UTC" },
  });
  return out
    .trim()
    .split("\n")
    .map((line) => {
      const [perms, owner, size, date, time, ...rest] = line.split(/\s+/);
      let entry = rest.join(" ").replace(/^\.\//, "").replace(/\/$/, "");
      let type = perms!;
      if (type.startsWith("h")) {
        type = `-${type.slice(1)}`;
        entry = entry.replace(/ link to .*$/, "");
      }
      const sized = type.startsWith("-") && !linked.has(entry);
      return `${entry || "."} ${type} ${owner} ${sized ? size : ""} ${date} ${time}`;
    })
    .sort();
}
