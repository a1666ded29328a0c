/**
 * `type=local` and `type=tar`: the final filesystem, judged against umoci's own unpacking of the
 * same image and against GNU tar's reading of the tar, plus the layer-stacking rules one by one.
 */
import { createHash } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type AssembledImage,
  assembleImage,
  exportImage,
  type FsEntry,
  flattenLayers,
} from "../../exporters/index.js";
import type { ImageConfig } from "../../oci/spec.js";
import type { FsResult, LayerRef } from "../../solver/worker.js";
import { tempDirs } from "../helpers/temp.js";
import {
  busyboxStore,
  EPOCH,
  type Fixture,
  type FixtureEntry,
  HELLO,
  helloBuild,
  run,
  writeFixtureLayer,
} from "./fixtures.js";

const tempDir = tempDirs();

/** What a directory holds, as `ls -l` would tell it: type, mode, owner, and content digest or link target. */
function describeTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const inodes = new Map<number, string>();
  const visit = (dir: string, prefix: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      const relative = prefix + name;
      const st = lstatSync(full);
      const owner = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      if (st.isDirectory()) {
        out[relative] = `dir ${owner}`;
        visit(full, `${relative}/`);
      } else if (st.isSymbolicLink()) {
        out[relative] = `symlink -> ${readlinkSync(full)}`;
      } else {
        const digest = createHash("sha256").update(readFileSync(full)).digest("hex").slice(0, 12);
        const first = inodes.get(st.ino);
        if (first === undefined) inodes.set(st.ino, relative);
        out[relative] = `file ${owner} ${digest}${first !== undefined ? ` =${first}` : ""}`;
      }
    }
  };
  visit(root, "");
  return out;
}

async function collect(entries: AsyncIterable<FsEntry>): Promise<{ entry: FsEntry; content?: string }[]> {
  const out: { entry: FsEntry; content?: string }[] = [];
  for await (const entry of entries) {
    let content: string | undefined;
    if (entry.body) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry.body) chunks.push(chunk);
      content = Buffer.concat(chunks).toString();
    }
    const { body: _body, ...rest } = entry;
    out.push({ entry: rest, ...(content !== undefined ? { content } : {}) });
  }
  return out;
}

describe("the final filesystem", () => {
  let fixture: Fixture;
  let result: FsResult;
  let config: ImageConfig;
  let image: AssembledImage;
  let umociRootfs: string;
  beforeAll(async () => {
    fixture = await busyboxStore(tempDir("fs-store"));
    ({ result, config } = await helloBuild(fixture));
    image = await assembleImage(fixture.store.content, { result, config }, { sourceDateEpoch: EPOCH });
    // The reference: umoci unpacks the same image (as root, so owners are kept as they are in the layers).
    const layout = path.join(tempDir("fs-layout"), "layout");
    await exportImage(fixture.store, image, result, {
      type: "oci",
      dest: layout,
      tar: false,
      names: ["ref:1"],
    });
    const bundle = path.join(tempDir("fs-umoci"), "bundle");
    run("umoci", ["unpack", "--image", `${layout}:1`, bundle]);
    umociRootfs = path.join(bundle, "rootfs");
  });

  it("type=local writes what umoci unpacks: whiteouts and opaque directories applied, owners, modes, links kept", async () => {
    const dest = path.join(tempDir("local"), "out");
    const outcome = await exportImage(fixture.store, image, result, { type: "local", dest });
    expect(outcome.digest).toBe(image.manifestDescriptor.digest);
    const tree = describeTree(dest);
    expect(tree).toEqual(describeTree(umociRootfs));
    expect(readFileSync(path.join(dest, "hello"), "utf8")).toBe(HELLO);
    expect(tree["etc/group"]).toBeUndefined();
    expect(readdirSync(path.join(dest, "old"))).toEqual(["c"]);
    expect(tree.data).toBe("dir 750 1000:1000");
    expect(tree["data/owned"]).toMatch(/^file 640 1000:1000 /);
    expect(tree["data/tool"]).toMatch(/^file 4755 0:0 /);
    expect(tree["data/tool-link"]).toMatch(/=data\/tool$/);
    expect(tree["data/passwd-link"]).toBe("symlink -> ../etc/passwd");
    expect(tree["bin/sh"]).toBe("symlink -> busybox");
    expect(lstatSync(path.join(dest, "hello")).mtimeMs).toBe(946684800_000);
  });

  it("type=local replaces what stands in the way in the destination and never writes through a link out of it", async () => {
    const parent = tempDir("local-existing");
    const outside = path.join(parent, "outside");
    mkdirSync(outside);
    const dest = path.join(parent, "out");
    mkdirSync(dest);
    symlinkSync(outside, path.join(dest, "data"));
    writeFileSync(path.join(dest, "old"), "a file where a directory goes");
    writeFileSync(path.join(dest, "kept"), "not named by the image");
    await exportImage(fixture.store, image, result, { type: "local", dest });
    expect(readdirSync(outside)).toEqual([]);
    expect(lstatSync(path.join(dest, "data")).isDirectory()).toBe(true);
    expect(readdirSync(path.join(dest, "old"))).toEqual(["c"]);
    expect(readFileSync(path.join(dest, "kept"), "utf8")).toBe("not named by the image");
  });

  it("type=tar writes the same filesystem as one tar, which GNU tar extracts to the same tree", async () => {
    const dir = tempDir("tar");
    const archive = path.join(dir, "fs.tar");
    await exportImage(fixture.store, image, result, { type: "tar", dest: archive });
    const listing = run("tar", ["-tf", archive]).split("\n").filter(Boolean);
    expect(listing).toContain("hello");
    expect(listing).toContain("old/c");
    expect(listing.filter((p) => p.includes(".wh."))).toEqual([]);
    expect(listing).not.toContain("etc/group");
    expect(listing).not.toContain("old/a");
    // Every path once.
    expect(new Set(listing).size).toBe(listing.length);
    const extracted = path.join(dir, "x");
    mkdirSync(extracted);
    run("tar", ["-xpf", archive, "--same-owner", "--numeric-owner", "-C", extracted]);
    expect(describeTree(extracted)).toEqual(describeTree(umociRootfs));
  });

  it("type=tar with dest=- writes to standard output, the same bytes each time", async () => {
    const read = async () => {
      const stdout = new PassThrough();
      const chunks: Buffer[] = [];
      stdout.on("data", (c: Buffer) => chunks.push(c));
      await exportImage(fixture.store, image, result, { type: "tar", dest: "-" }, { stdout });
      return Buffer.concat(chunks);
    };
    const first = await read();
    const file = path.join(tempDir("tar-stdout"), "fs.tar");
    await exportImage(fixture.store, image, result, { type: "tar", dest: file });
    expect(first.equals(readFileSync(file))).toBe(true);
    expect((await read()).equals(first)).toBe(true);
  });

  describe("layer stacking rules", () => {
    const stack = async (...layers: FixtureEntry[][]) => {
      const refs: LayerRef[] = [];
      for (const entries of layers) refs.push(await writeFixtureLayer(fixture.store, entries));
      return refs;
    };
    const flatten = async (layers: LayerRef[], warn?: (m: string) => void) =>
      collect(flattenLayers(fixture.store.content, layers, warn ? { warn } : {}));
    const paths = (entries: { entry: FsEntry }[]) =>
      entries.map(({ entry }) => `${entry.type} ${entry.path}`);

    it("a later file replaces a directory with all it held, and a later directory a file", async () => {
      const layers = await stack(
        [
          { path: "a", type: "Directory" },
          { path: "a/x", type: "File", content: "x" },
          { path: "b", type: "File", content: "b" },
        ],
        [
          { path: "a", type: "File", content: "now a file" },
          { path: "b", type: "Directory" },
          { path: "b/y", type: "File", content: "y" },
        ],
      );
      const entries = await flatten(layers);
      expect(paths(entries)).toEqual(["Directory b", "File a", "File b/y"]);
      expect(entries.find((e) => e.entry.path === "a")!.content).toBe("now a file");
    });

    it("a directory over a directory changes its metadata and keeps what it holds", async () => {
      const layers = await stack(
        [
          { path: "d", type: "Directory", mode: 0o755 },
          { path: "d/kept", type: "File", content: "k" },
        ],
        [{ path: "d", type: "Directory", mode: 0o700, uid: 5, gid: 6 }],
      );
      const entries = await flatten(layers);
      expect(paths(entries)).toEqual(["Directory d", "File d/kept"]);
      expect(entries[0]!.entry).toMatchObject({ mode: 0o700, uid: 5, gid: 6 });
    });

    it("whiteouts hide lower layers only: what the same layer writes stays, and a whiteout of nothing is harmless", async () => {
      const layers = await stack(
        [
          { path: "d", type: "Directory" },
          { path: "d/old", type: "File", content: "old" },
          { path: "f", type: "File", content: "lower" },
        ],
        [
          { path: "f", type: "File", content: "upper" },
          { path: "f", type: "Whiteout" },
          { path: "d/new", type: "File", content: "new" },
          { path: "d", type: "Opaque" },
          { path: "nothing", type: "Whiteout" },
        ],
      );
      const entries = await flatten(layers);
      // Files come in the order their layer holds them, after everything without content.
      expect(paths(entries)).toEqual(["Directory d", "File f", "File d/new"]);
      expect(entries.find((e) => e.entry.path === "f")!.content).toBe("upper");
    });

    it("an entry below a lower layer's symbolic link goes into a directory of its own layer there, never through the link", async () => {
      const layers = await stack(
        [
          { path: "usr", type: "Directory" },
          { path: "usr/lib", type: "Directory" },
          { path: "lib", type: "SymbolicLink", linkpath: "usr/lib" },
          { path: "escape", type: "SymbolicLink", linkpath: "../../../.." },
        ],
        [
          { path: "lib/libc.so", type: "File", content: "libc" },
          { path: "escape/etc/inside", type: "File", content: "stays inside" },
        ],
      );
      const entries = await flatten(layers);
      // As overlayfs stacks the unpacked layers (test/exporters/layer-rules.test.ts): `docker run` shows the same.
      expect(paths(entries)).toEqual([
        "Directory escape",
        "Directory escape/etc",
        "Directory lib",
        "Directory usr",
        "Directory usr/lib",
        "File lib/libc.so",
        "File escape/etc/inside",
      ]);
    });

    it("a hard link keeps its file's content when the file's own path is removed or replaced", async () => {
      const layers = await stack(
        [
          { path: "original", type: "File", content: "shared" },
          { path: "link1", type: "Link", linkpath: "original" },
          { path: "link2", type: "Link", linkpath: "original" },
        ],
        [
          { path: "original", type: "Whiteout" },
          { path: "link2", type: "File", content: "replaced" },
        ],
      );
      const entries = await flatten(layers);
      expect(
        entries.map(({ entry, content }) => [entry.type, entry.path, content ?? entry.linkpath ?? null]),
      ).toEqual([
        ["File", "link1", "shared"],
        ["File", "link2", "replaced"],
      ]);
    });

    it("hard links to one file come out as one file and links to it", async () => {
      const layers = await stack([
        { path: "z-file", type: "File", content: "one inode" },
        { path: "a-link", type: "Link", linkpath: "z-file" },
      ]);
      const entries = await flatten(layers);
      expect(
        entries.map(({ entry, content }) => [entry.type, entry.path, content ?? entry.linkpath]),
      ).toEqual([
        ["File", "a-link", "one inode"],
        ["Link", "z-file", "a-link"],
      ]);
    });

    it("a hard link to nothing is an error naming the layer and the paths", async () => {
      const layers = await stack([{ path: "dangling", type: "Link", linkpath: "missing" }]);
      await expect(flatten(layers)).rejects.toThrow(
        new RegExp(
          `cannot unpack layer 1 \\(${layers[0]!.descriptor.digest}\\): its entry "dangling" is a hard link to "missing", which does not exist`,
        ),
      );
    });

    it("refuses the entries unpacking refuses: a path that climbs out, a hard link out of the layer", async () => {
      for (const entries of [
        [{ path: "../escaped", type: "File", content: "x" }],
        [
          { path: "f", type: "File", content: "x" },
          { path: "link", type: "Link", linkpath: "../f" },
        ],
      ] as FixtureEntry[][]) {
        const layers = await stack(entries);
        await expect(flatten(layers)).rejects.toThrow(
          new RegExp(`refused to unpack layer 1 \\(${layers[0]!.descriptor.digest}\\)`),
        );
      }
    });

    it("a file of the same layer where it writes below it is an error; a lower layer's file is replaced by a directory", async () => {
      const own = await stack([
        { path: "f", type: "File", content: "" },
        { path: "f/x", type: "File", content: "" },
      ]);
      await expect(flatten(own)).rejects.toThrow(
        /layer 1 .*: its entry "f\/x" needs "f" to be a directory, but the layer made it a file/,
      );
      const lower = await stack(
        [{ path: "f", type: "File", content: "" }],
        [{ path: "f/x", type: "File", content: "x" }],
      );
      expect(paths(await flatten(lower))).toEqual(["Directory f", "File f/x"]);
    });

    it("parents a layer does not declare are made, and uncompressed and zstd layers read as gzip ones do", async () => {
      const plain = await writeFixtureLayer(
        fixture.store,
        [{ path: "a/b/c", type: "File", content: "deep" }],
        "uncompressed",
      );
      const zstd = await writeFixtureLayer(
        fixture.store,
        [{ path: "a/z", type: "File", content: "z" }],
        "zstd",
      );
      const entries = await flatten([plain, zstd]);
      expect(entries.map(({ entry }) => `${entry.type} ${entry.path} ${entry.mode.toString(8)}`)).toEqual([
        "Directory a 755",
        "Directory a/b 755",
        "File a/b/c 644",
        "File a/z 644",
      ]);
    });
  });
});

describe("entries no fixture layer has", () => {
  it("devices and extended attributes go into type=tar; type=local leaves them out and says so", async () => {
    const fixture = await busyboxStore(tempDir("special-store"));
    const mtime = new Date(946684800_000);
    const base = { mode: 0o644, uid: 0, gid: 0, size: 0, mtime, xattrs: new Map<string, Buffer>() };
    async function* special(): AsyncGenerator<FsEntry> {
      yield { ...base, path: "dev", type: "Directory", mode: 0o755 };
      yield { ...base, path: "dev/null", type: "CharacterDevice", mode: 0o666, devmaj: 1, devmin: 3 };
      yield { ...base, path: "dev/pipe", type: "FIFO" };
      const capability = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
      const xattrs = new Map([["security.capability", capability]]);
      yield {
        ...base,
        path: "ping",
        type: "File",
        size: 4,
        xattrs,
        body: (async function* () {
          yield Buffer.from("ping");
        })(),
      };
    }
    const { filesystemTar } = await import("../../exporters/tar.js");
    const { writeLayer } = await import("../../oci/layer.js");
    const { Readable } = await import("node:stream");
    const layer = await writeLayer(
      fixture.store.content,
      Readable.from(filesystemTar(special()), { objectMode: false }),
      {
        compression: "gzip",
      },
    );
    const config: ImageConfig = {
      architecture: "amd64",
      os: "linux",
      config: {},
      rootfs: { type: "layers", diff_ids: [] },
      history: [],
    };
    const result = { layers: [...fixture.base.layers, layer] };
    const image = await assembleImage(fixture.store.content, { result, config }, { sourceDateEpoch: EPOCH });

    const dir = tempDir("special");
    const archive = path.join(dir, "fs.tar");
    await exportImage(fixture.store, image, result, { type: "tar", dest: archive });
    const listing = run("tar", ["-tvf", archive]);
    expect(listing).toMatch(/^crw-rw-rw- 0\/0 +1,3 .* dev\/null$/m);
    expect(listing).toMatch(/^prw-r--r-- 0\/0 .* dev\/pipe$/m);
    const entries = await collect(flattenLayers(fixture.store.content, [layer]));
    const ping = entries.find((e) => e.entry.path === "ping")!;
    expect(ping.content).toBe("ping");
    expect(ping.entry.xattrs.get("security.capability")).toEqual(
      Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
    // GNU tar reads the attribute back from the exported tar.
    const extracted = path.join(dir, "x");
    mkdirSync(extracted);
    run("tar", ["--xattrs", "--xattrs-include=*", "-xpf", archive, "-C", extracted, "ping"]);
    expect(run("getcap", [path.join(extracted, "ping")])).toContain("cap_net_raw");

    const warnings: string[] = [];
    const local = path.join(dir, "local");
    await exportImage(
      fixture.store,
      image,
      result,
      { type: "local", dest: local },
      { warn: (m) => warnings.push(m) },
    );
    expect(readFileSync(path.join(local, "ping"), "utf8")).toBe("ping");
    expect(readdirSync(path.join(local, "dev"))).toEqual([]);
    expect(warnings.sort()).toEqual([
      "type=local left out FIFOs (Node cannot make them): /dev/pipe",
      "type=local left out device nodes (Node cannot make them): /dev/null",
      "type=local left out extended attributes (Node cannot set them): /ping",
    ]);
  });
});
