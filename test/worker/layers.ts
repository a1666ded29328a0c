/**
 * Layers and images for the worker's tests, written with the project's own tar encoder
 * (oci/archive/tar.ts) and stored with writeLayer, so that the unpacker reads what tbuild writes;
 * tars are read back with the `tar` package, an independent judge of what the differ writes.
 */
import { lstat, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Parser, type ReadEntry } from "tar";
import { TAR_END, type TarEntry, type TarEntryType, tarEntry } from "../../oci/archive/tar.js";
import { type Image, readImage } from "../../oci/image.js";
import { type LayerCompression, writeLayer } from "../../oci/layer.js";
import { type ImageConfig, type Manifest, MediaType } from "../../oci/spec.js";
import { openStore, type Store } from "../../oci/store/index.js";

/** 2001-09-09T01:46:40Z: a round, recognizable mtime. */
export const LAYER_TIME = new Date(1_000_000_000 * 1000);

export interface Spec {
  path: string;
  type?: TarEntryType;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Date;
  linkpath?: string;
  content?: string;
  devmaj?: number;
  devmin?: number;
}

export function dir(p: string, extra: Partial<Spec> = {}): Spec {
  return { path: p.endsWith("/") ? p : `${p}/`, type: "Directory", mode: 0o755, ...extra };
}
export function file(p: string, content: string, extra: Partial<Spec> = {}): Spec {
  return { path: p, type: "File", mode: 0o644, content, ...extra };
}
export function symlinkTo(p: string, target: string): Spec {
  return { path: p, type: "SymbolicLink", mode: 0o777, linkpath: target };
}
export function hardlinkTo(p: string, target: string): Spec {
  return { path: p, type: "Link", mode: 0o644, linkpath: target };
}
export function whiteout(p: string): Spec {
  const parent = path.posix.dirname(p);
  return file(`${parent === "." ? "" : `${parent}/`}.wh.${path.posix.basename(p)}`, "", { mode: 0 });
}
export function opaque(dirPath: string): Spec {
  return file(`${dirPath.replace(/\/$/, "")}/.wh..wh..opq`, "", { mode: 0 });
}

/** An uncompressed layer tar of these entries, in this order. */
export async function layerTar(specs: Spec[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for (const spec of specs) {
    const content = spec.content !== undefined ? Buffer.from(spec.content) : undefined;
    const entry: TarEntry = {
      path: spec.path,
      type: spec.type ?? "File",
      mode: spec.mode ?? 0o644,
      uid: spec.uid ?? 0,
      gid: spec.gid ?? 0,
      size: content?.length ?? 0,
      mtime: spec.mtime ?? LAYER_TIME,
      ...(spec.linkpath !== undefined ? { linkpath: spec.linkpath } : {}),
      ...(spec.devmaj !== undefined ? { devmaj: spec.devmaj, devmin: spec.devmin ?? 0 } : {}),
    };
    for await (const chunk of tarEntry(entry, content)) chunks.push(chunk);
  }
  chunks.push(TAR_END);
  return Buffer.concat(chunks);
}

export async function* chunksOf(bytes: Buffer, size = 7000): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

/** Stores layers (uncompressed tars) and an image of them; returns the readable Image. */
export async function storeImage(
  store: Store,
  tars: Buffer[],
  compression: LayerCompression = "gzip",
): Promise<Image> {
  const layers = [];
  for (const tar of tars) layers.push(await writeLayer(store.content, chunksOf(tar), { compression }));
  const config: ImageConfig = {
    architecture: "amd64",
    os: "linux",
    config: {},
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configBlob = await store.content.writeBytes(configBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configBlob.digest, size: configBlob.size },
    layers: layers.map((l) => l.descriptor),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestBlob = await store.content.writeBytes(manifestBytes);
  return readImage(store.content, {
    mediaType: MediaType.ociManifest,
    digest: manifestBlob.digest,
    size: manifestBlob.size,
  });
}

export interface ListedEntry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkpath?: string;
  content?: string;
}

/** The entries of a tar, read by the `tar` package. */
export async function listTar(bytes: Buffer | AsyncIterable<Uint8Array>): Promise<ListedEntry[]> {
  let all: Buffer;
  if (Buffer.isBuffer(bytes)) all = bytes;
  else {
    const chunks: Buffer[] = [];
    for await (const chunk of bytes) chunks.push(Buffer.from(chunk));
    all = Buffer.concat(chunks);
  }
  const entries: ListedEntry[] = [];
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        const chunks: Buffer[] = [];
        entry.on("data", (c: Buffer) => chunks.push(c));
        entry.on("end", () => {
          entries.push({
            path: entry.path,
            type: entry.type,
            mode: entry.mode ?? 0,
            uid: entry.uid ?? 0,
            gid: entry.gid ?? 0,
            mtime: Math.floor((entry.mtime?.getTime() ?? 0) / 1000),
            ...(entry.linkpath ? { linkpath: entry.linkpath } : {}),
            ...(entry.type === "File" ? { content: Buffer.concat(chunks).toString() } : {}),
          });
        });
      },
    });
    parser.on("error", reject);
    parser.on("end", () => resolve());
    parser.end(all);
  });
  return entries;
}

/** A temp store, removed by the returned cleanup. */
export async function tempStore(): Promise<{ root: string; store: Store; cleanup: () => Promise<void> }> {
  const root = await mkdtemp(path.join(tmpdir(), "tbuild-worker-test-"));
  const store = await openStore(root);
  return { root, store, cleanup: () => rm(root, { recursive: true, force: true }) };
}

export async function exists(p: string): Promise<boolean> {
  return lstat(p).then(
    () => true,
    () => false,
  );
}

export async function read(p: string): Promise<string> {
  return readFile(p, "utf8");
}

/** Overlay mount points under `dir` still in this process's mount table. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  return info
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((mountPoint) => mountPoint.startsWith(dir));
}
