import { execFileSync } from "node:child_process";
import { createReadStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { digestOf } from "../../oci/store/content.js";
import { HostileLayerError, InvalidLayerError, unpackLayer } from "../../worker/unpack.js";
import {
  chunksOf,
  dir,
  exists,
  file,
  hardlinkTo,
  LAYER_TIME,
  layerTar,
  type Spec,
  symlinkTo,
} from "./layers.js";

let work: string;
/** Outside every layer directory: a hostile layer must leave it exactly as it was. */
let canaryDir: string;

beforeEach(async () => {
  work = await mkdtemp(path.join(tmpdir(), "tbuild-unpack-test-"));
  canaryDir = path.join(work, "canary");
  await mkdir(canaryDir);
  await writeFile(path.join(canaryDir, "secret"), "untouched");
  await mkdir(path.join(work, "layers"));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

async function canaryUntouched(): Promise<void> {
  expect((await readdir(canaryDir)).sort()).toEqual(["secret"]);
  expect(await readFile(path.join(canaryDir, "secret"), "utf8")).toBe("untouched");
  expect((await readdir(work)).sort()).toEqual(["canary", "layers"]);
}

async function unpack(
  specs: Spec[],
  name = "layer",
  options: { rootless?: boolean; warn?: (m: string) => void } = {},
) {
  const target = path.join(work, "layers", name);
  await unpackLayer(chunksOf(await layerTar(specs)), target, {
    rootless: options.rootless ?? false,
    ...options,
  });
  return target;
}

describe("unpackLayer", () => {
  it("unpacks gzip, zstd and uncompressed layers alike", async () => {
    const tar = await layerTar([dir("etc"), file("etc/motd", "hello\n")]);
    for (const [name, bytes] of [
      ["plain", tar],
      ["gzip", gzipSync(tar)],
      ["zstd", zstdCompressSync(tar)],
    ] as const) {
      const target = path.join(work, "layers", name);
      await unpackLayer(chunksOf(Buffer.from(bytes), 100), target, { rootless: false });
      expect(await readFile(path.join(target, "etc/motd"), "utf8")).toBe("hello\n");
    }
  });

  it("keeps owners, setuid/setgid/sticky modes, mtimes, symlinks and hard links", async () => {
    const target = await unpack([
      dir("usr"),
      dir("usr/bin"),
      file("usr/bin/su", "su", { mode: 0o4755 }),
      dir("srv", { mode: 0o2775, uid: 1234, gid: 1234 }),
      file("srv/owned", "mine", { uid: 1234, gid: 1234, mode: 0o640 }),
      dir("tmp", { mode: 0o1777 }),
      symlinkTo("usr/bin/sh", "busybox"),
      file("usr/bin/busybox", "bb", { mode: 0o755 }),
      hardlinkTo("usr/bin/su2", "usr/bin/su"),
    ]);
    const su = await lstat(path.join(target, "usr/bin/su"));
    expect(su.mode & 0o7777).toBe(0o4755);
    expect(su.mtimeMs).toBe(LAYER_TIME.getTime());
    expect((await lstat(path.join(target, "srv"))).mode & 0o7777).toBe(0o2775);
    expect((await lstat(path.join(target, "tmp"))).mode & 0o7777).toBe(0o1777);
    const owned = await lstat(path.join(target, "srv/owned"));
    expect([owned.uid, owned.gid, owned.mode & 0o7777]).toEqual([1234, 1234, 0o640]);
    // Directory times are set after their contents, so they stay as the layer says.
    expect((await lstat(path.join(target, "srv"))).mtimeMs).toBe(LAYER_TIME.getTime());
    expect(await readlink(path.join(target, "usr/bin/sh"))).toBe("busybox");
    expect((await lstat(path.join(target, "usr/bin/sh"))).mtimeMs).toBe(LAYER_TIME.getTime());
    const link = await lstat(path.join(target, "usr/bin/su2"));
    expect(link.ino).toBe(su.ino);
    expect(link.nlink).toBe(2);
  });

  it("reads long names, from PAX headers (tbuild's encoder) and GNU long-name entries (GNU tar)", async () => {
    const long = `${"d".repeat(120)}/${"f".repeat(130)}`;
    const target = await unpack(
      [dir("d".repeat(120)), file(long, "long"), symlinkTo("l", "t".repeat(200))],
      "pax",
    );
    expect(await readFile(path.join(target, long), "utf8")).toBe("long");
    expect(await readlink(path.join(target, "l"))).toBe("t".repeat(200));

    const source = path.join(work, "gnu-source");
    await mkdir(path.join(source, "g".repeat(120)), { recursive: true });
    await writeFile(path.join(source, "g".repeat(120), "h".repeat(130)), "gnu");
    execFileSync("ln", [
      path.join(source, "g".repeat(120), "h".repeat(130)),
      path.join(source, "i".repeat(150)),
    ]);
    const gnuTar = execFileSync("tar", ["--format=gnu", "--numeric-owner", "-C", source, "-cf", "-", "."]);
    await rm(source, { recursive: true });
    const gnu = path.join(work, "layers", "gnu");
    await unpackLayer(chunksOf(gnuTar), gnu, { rootless: false });
    const first = await lstat(path.join(gnu, "g".repeat(120), "h".repeat(130)));
    expect((await lstat(path.join(gnu, "i".repeat(150)))).ino).toBe(first.ino);
    expect(await readFile(path.join(gnu, "i".repeat(150)), "utf8")).toBe("gnu");
  });

  it("makes whiteouts overlayfs's 0:0 character devices", async () => {
    const target = await unpack([dir("etc"), file("etc/.wh.gone", "")]);
    const whiteout = await lstat(path.join(target, "etc/gone"));
    expect(whiteout.isCharacterDevice()).toBe(true);
    expect(whiteout.rdev).toBe(0);
    expect(await exists(path.join(target, "etc/.wh.gone"))).toBe(false);
  });

  it("a whiteout hides the layers below only: what the same layer wrote at that path stays", async () => {
    const target = await unpack([
      file("kept", "same layer\n"),
      file(".wh.kept", ""),
      dir("d"),
      file("d/mine", "mine\n"),
      file(".wh.d", ""),
    ]);
    expect(await readFile(path.join(target, "kept"), "utf8")).toBe("same layer\n");
    // The directory stays with what this layer put in it, and hides whatever lower layers had there.
    expect(await readFile(path.join(target, "d/mine"), "utf8")).toBe("mine\n");
  });

  it("creates device nodes as root, and skips them with a warning in a user namespace", async () => {
    const specs: Spec[] = [
      dir("dev"),
      { path: "dev/null", type: "CharacterDevice", mode: 0o666, devmaj: 1, devmin: 3 },
      { path: "dev/fifo", type: "FIFO", mode: 0o600 },
    ];
    const asRoot = await unpack(specs, "root");
    const node = await lstat(path.join(asRoot, "dev/null"));
    expect(node.isCharacterDevice()).toBe(true);
    expect(node.rdev).toBe(0x103);
    expect((await lstat(path.join(asRoot, "dev/fifo"))).isFIFO()).toBe(true);

    const warnings: string[] = [];
    const rootless = await unpack(specs, "rootless", { rootless: true, warn: (m) => warnings.push(m) });
    expect(await exists(path.join(rootless, "dev/null"))).toBe(false);
    expect((await lstat(path.join(rootless, "dev/fifo"))).isFIFO()).toBe(true);
    expect(warnings.join("\n")).toMatch(/skipped 1 device node \(dev\/null\)/);
  });

  it("warns about extended attributes it does not set", async () => {
    // A PAX header carrying SCHILY.xattr.security.capability, as Docker writes for ping.
    const record = (key: string, value: string) => {
      const body = ` ${key}=${value}\n`;
      let length = body.length + 1;
      if (String(length).length + body.length !== length) length = String(length + 1).length + body.length;
      return `${length}${body}`;
    };
    const pax = Buffer.from(record("SCHILY.xattr.security.capability", "x"));
    const { Header } = await import("tar");
    const paxHeader = new Header({
      path: "PaxHeader/ping",
      type: "ExtendedHeader",
      size: pax.length,
      mode: 0o644,
      mtime: LAYER_TIME,
    });
    paxHeader.encode();
    const rest = await layerTar([file("ping", "p")]);
    const tar = Buffer.concat([paxHeader.block!, pax, Buffer.alloc(512 - pax.length), rest]);
    const warnings: string[] = [];
    await unpackLayer(chunksOf(tar), path.join(work, "layers", "x"), {
      rootless: false,
      warn: (m) => warnings.push(m),
    });
    expect(await readFile(path.join(work, "layers", "x", "ping"), "utf8")).toBe("p");
    expect(warnings.join("\n")).toMatch(/skipped 1 extended attribute \(security.capability on ping\)/);
  });

  it("refuses a layer whose diff_id does not match, leaving nothing", async () => {
    const tar = await layerTar([file("a", "a")]);
    const target = path.join(work, "layers", "bad");
    await expect(
      unpackLayer(chunksOf(tar), target, { rootless: false, diffId: digestOf("something else") }),
    ).rejects.toThrow(/not its diff_id/);
    expect(await readdir(path.join(work, "layers"))).toEqual([]);
    await unpackLayer(chunksOf(tar), target, { rootless: false, diffId: digestOf(tar) });
    expect(await exists(path.join(target, "a"))).toBe(true);
  });

  it("refuses a path beyond PATH_MAX as an invalid layer, leaving none of the directories it implied", async () => {
    // 2,100 levels: some 2,000 directories are made before the path is too long, then all removed.
    const target = path.join(work, "layers", "deep");
    const error = await unpackLayer(
      chunksOf(await layerTar([file(`${"d/".repeat(2100)}f`, "deep")])),
      target,
      {
        rootless: false,
      },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidLayerError);
    expect((error as Error).message).toMatch(/is too long for the file system/);
    expect(await readdir(path.join(work, "layers"))).toEqual([]);
  });

  it("leaves nothing visible when cancelled midway", async () => {
    const big = "x".repeat(1 << 20);
    const specs = Array.from({ length: 20 }, (_, i) => file(`f${i}`, big));
    const tar = await layerTar(specs);
    const controller = new AbortController();
    async function* slow() {
      let sent = 0;
      for await (const chunk of chunksOf(tar, 1 << 16)) {
        sent += chunk.length;
        if (sent > tar.length / 2) controller.abort(new Error("cancelled"));
        yield chunk;
      }
    }
    const target = path.join(work, "layers", "half");
    await expect(unpackLayer(slow(), target, { rootless: false, signal: controller.signal })).rejects.toThrow(
      "cancelled",
    );
    expect(await readdir(path.join(work, "layers"))).toEqual([]);
  });
});

describe("a hostile layer", () => {
  const cases: Array<[string, () => Spec[], RegExp]> = [
    ["a '..' path", () => [file("../canary/secret", "pwned")], /'\.\.' component/],
    ["a deeper '..' path", () => [dir("a"), file("a/../../canary/new", "pwned")], /'\.\.' component/],
    ["an absolute path", () => [file(`${canaryDir}/secret`, "pwned")], /absolute path/],
    [
      "a file through a symlink it planted (absolute)",
      () => [symlinkTo("evil", canaryDir), file("evil/secret", "pwned")],
      /symbolic link the layer planted/,
    ],
    [
      "a directory through a symlink it planted (relative)",
      () => [symlinkTo("evil", "../../canary"), dir("evil/sub")],
      /symbolic link the layer planted/,
    ],
    [
      "a deep path through a planted symlink",
      () => [dir("a"), symlinkTo("a/b", canaryDir), file("a/b/c/d", "pwned")],
      /symbolic link the layer planted/,
    ],
    [
      "a hard link to an absolute path",
      () => [hardlinkTo("stolen", `${canaryDir}/secret`)],
      /outside the layer/,
    ],
    ["a hard link with '..'", () => [hardlinkTo("stolen", "../../canary/secret")], /outside the layer/],
    [
      "a hard link through a planted symlink",
      () => [symlinkTo("evil", canaryDir), hardlinkTo("stolen", "evil/secret")],
      /symbolic link the layer planted/,
    ],
    ["a whiteout of '..'", () => [dir("a"), file("a/.wh...", "")], /whiteout of no file, or of a parent/],
  ];

  for (const [name, specs, reason] of cases) {
    it(`is refused: ${name}, and the host is untouched`, async () => {
      const target = path.join(work, "layers", "hostile");
      const error = await unpackLayer(chunksOf(await layerTar(specs())), target, { rootless: false }).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(HostileLayerError);
      expect((error as Error).message).toMatch(reason);
      expect((error as Error).message).toMatch(/nothing of the layer was unpacked/);
      await canaryUntouched();
      expect(await readdir(path.join(work, "layers"))).toEqual([]);
    });
  }

  it("is not read further once refused: its source is closed", async () => {
    const tarFile = path.join(work, "hostile.tar");
    const filler = Array.from({ length: 50 }, (_, i) => file(`filler${i}`, "x".repeat(100_000)));
    await writeFile(tarFile, await layerTar([file("../escape", "x"), ...filler]));
    const source = createReadStream(tarFile, { highWaterMark: 4096 });
    await expect(
      unpackLayer(source, path.join(work, "layers", "h"), { rootless: false }),
    ).rejects.toBeInstanceOf(HostileLayerError);
    expect(source.destroyed).toBe(true);
    await rm(tarFile);
    await canaryUntouched();
  });

  it("may still hold symlinks pointing anywhere: they are data, never followed while unpacking", async () => {
    const target = await unpack([symlinkTo("etc-link", "/etc"), symlinkTo("up", "../../..")]);
    expect(await readlink(path.join(target, "etc-link"))).toBe("/etc");
    await canaryUntouched();
  });

  it("cannot replace a planted symlink's target by writing the symlink's own path", async () => {
    // The second entry replaces the symlink itself; it never writes through it.
    const target = await unpack([symlinkTo("s", `${canaryDir}/secret`), file("s", "replaced")]);
    expect(await readFile(path.join(target, "s"), "utf8")).toBe("replaced");
    await canaryUntouched();
  });

  it("is refused when it needs a file to be a directory", async () => {
    const target = path.join(work, "layers", "broken");
    await expect(
      unpackLayer(chunksOf(await layerTar([file("a", "x"), file("a/b", "y")])), target, { rootless: false }),
    ).rejects.toBeInstanceOf(InvalidLayerError);
    expect(await readdir(path.join(work, "layers"))).toEqual([]);
  });
});
