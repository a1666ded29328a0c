/**
 * Build results for exporter tests, made of real parts: the busybox image imported into a real
 * store (its layer is the base), and small layers written with `writeLayer` from tar entries, as a
 * worker would write them: one adding files, one deleting a file with a whiteout, and so on.
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import { Readable } from "node:stream";
import { TAR_END, type TarEntry, tarEntry } from "../../oci/archive/tar.js";
import { readImage } from "../../oci/image.js";
import { type LayerCompression, writeLayer } from "../../oci/layer.js";
import type { History, ImageConfig } from "../../oci/spec.js";
import { openStore, type Store } from "../../oci/store/index.js";
import type { FsResult, LayerRef } from "../../solver/worker.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";

/** 2001-09-09T01:46:40Z: the SOURCE_DATE_EPOCH of reproducible exports. */
export const EPOCH = 1_000_000_000;
export const HELLO = "hello from a tbuild layer\n";

export type FixtureEntry =
  | { path: string; type: "File"; content: string; mode?: number; uid?: number; gid?: number }
  | { path: string; type: "Directory"; mode?: number; uid?: number; gid?: number }
  | { path: string; type: "SymbolicLink" | "Link"; linkpath: string }
  | { path: string; type: "Whiteout" }
  | { path: string; type: "Opaque" };

/** Tar bytes of fixture entries: whiteouts as `.wh.` files, opaque markers as `.wh..wh..opq`. */
export async function* fixtureTar(entries: FixtureEntry[]): AsyncGenerator<Buffer> {
  const mtime = new Date(FIXED_EPOCH * 1000);
  for (const entry of entries) {
    const base = { uid: 0, gid: 0, size: 0, mtime };
    if (entry.type === "File") {
      const bytes = Buffer.from(entry.content);
      const header: TarEntry = {
        ...base,
        path: entry.path,
        type: "File",
        mode: entry.mode ?? 0o644,
        size: bytes.length,
      };
      if (entry.uid !== undefined) header.uid = entry.uid;
      if (entry.gid !== undefined) header.gid = entry.gid;
      yield* tarEntry(header, bytes);
    } else if (entry.type === "Directory") {
      yield* tarEntry({
        ...base,
        path: `${entry.path}/`,
        type: "Directory",
        mode: entry.mode ?? 0o755,
        uid: entry.uid ?? 0,
        gid: entry.gid ?? 0,
      });
    } else if (entry.type === "SymbolicLink" || entry.type === "Link") {
      yield* tarEntry({ ...base, path: entry.path, type: entry.type, mode: 0o777, linkpath: entry.linkpath });
    } else {
      const dir = path.posix.dirname(entry.path);
      const name = entry.type === "Opaque" ? ".wh..wh..opq" : `.wh.${path.posix.basename(entry.path)}`;
      const whiteout =
        entry.type === "Opaque" ? `${entry.path}/${name}` : dir === "." ? name : `${dir}/${name}`;
      yield* tarEntry({ ...base, path: whiteout, type: "File", mode: 0o644 }, Buffer.alloc(0));
    }
  }
  yield TAR_END;
}

export async function writeFixtureLayer(
  store: Store,
  entries: FixtureEntry[],
  compression: LayerCompression = "gzip",
): Promise<LayerRef> {
  return writeLayer(store.content, Readable.from(fixtureTar(entries), { objectMode: false }), {
    compression,
  });
}

export interface Fixture {
  store: Store;
  base: { layers: LayerRef[]; config: ImageConfig };
}

/** A store holding the busybox image; the base its builds start from. */
export async function busyboxStore(root: string): Promise<Fixture> {
  await importBusybox(root, "busybox");
  const store = await openStore(root);
  const record = (await store.images.get("busybox"))!;
  const image = await readImage(store.content, record.descriptor);
  return {
    store,
    base: {
      layers: image.layers.map((layer) => ({ descriptor: layer.descriptor, diffId: layer.diffId })),
      config: image.config,
    },
  };
}

/** BuildKit's history comment for Dockerfile steps. */
const DOCKERFILE_COMMENT = "buildkit.dockerfile.v0";

/** The layers a small Dockerfile would make on busybox, and the config the frontend would give it. */
export async function helloBuild(
  fixture: Fixture,
  compression: LayerCompression = "gzip",
): Promise<{ result: FsResult; config: ImageConfig }> {
  const { store, base } = fixture;
  const hello = await writeFixtureLayer(
    store,
    [
      { path: "hello", type: "File", content: HELLO },
      { path: "data", type: "Directory", mode: 0o750, uid: 1000, gid: 1000 },
      { path: "data/owned", type: "File", content: "owned\n", mode: 0o640, uid: 1000, gid: 1000 },
      { path: "data/tool", type: "File", content: "#!/bin/sh\n", mode: 0o4755 },
      { path: "data/tool-link", type: "Link", linkpath: "data/tool" },
      { path: "data/passwd-link", type: "SymbolicLink", linkpath: "../etc/passwd" },
      { path: "old", type: "Directory" },
      { path: "old/a", type: "File", content: "a\n" },
      { path: "old/b", type: "File", content: "b\n" },
    ],
    compression,
  );
  const removal = await writeFixtureLayer(
    store,
    [
      { path: "etc", type: "Directory" },
      { path: "etc/group", type: "Whiteout" },
      { path: "old", type: "Directory" },
      { path: "old", type: "Opaque" },
      { path: "old/c", type: "File", content: "c\n" },
    ],
    compression,
  );
  const history: History[] = [
    ...(base.config.history ?? []),
    { created_by: "COPY . / # buildkit", comment: DOCKERFILE_COMMENT },
    { created_by: "ENV GREETING=hello", comment: DOCKERFILE_COMMENT, empty_layer: true },
    {
      created_by: "RUN /bin/sh -c rm /etc/group && rm -rf /old/* && echo c > /old/c # buildkit",
      comment: DOCKERFILE_COMMENT,
    },
    { created_by: 'CMD ["cat" "/hello"]', comment: DOCKERFILE_COMMENT, empty_layer: true },
  ];
  const config: ImageConfig = {
    ...base.config,
    config: {
      ...base.config.config,
      Env: ["PATH=/bin", "GREETING=hello"],
      Cmd: ["cat", "/hello"],
      Labels: { "from.dockerfile": "yes" },
    },
    history,
  };
  return { result: { layers: [...base.layers, hello, removal] }, config };
}

/** `cmd args…` must succeed; its standard output. */
export function run(cmd: string, args: string[], options: { input?: Buffer } = {}): string {
  return execFileSync(cmd, args, {
    encoding: "utf8",
    stdio: ["pipe", "pipe", "pipe"],
    ...(options.input ? { input: options.input } : {}),
  });
}

/** `cmd args…` fed `input`, which must succeed; its standard output as bytes. */
export function runBytes(cmd: string, args: string[], input: Buffer): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 1 << 30, stdio: ["pipe", "pipe", "pipe"] });
}
