/**
 * Hostile images made on the fly: layer tars written entry by entry (any path, any type, any
 * size, without the checks a real tar tool makes), streamed through gzip to a file, so a layer
 * holding 2 GiB of zeros costs 2 MB of disk and no memory; and OCI archives of such layers over
 * busybox, which `tbuild load` takes as it would a real one. Everything an attacker may get wrong on
 * purpose (a media type, a diff_id, a manifest) can be given instead of the true one.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { Header } from "tar";
import { busyboxRootfs, FIXED_EPOCH } from "../helpers/images.js";

export type EntryType =
  | "File"
  | "Directory"
  | "SymbolicLink"
  | "Link"
  | "CharacterDevice"
  | "BlockDevice"
  | "FIFO";

export interface EntrySpec {
  path: string;
  type?: EntryType;
  /** Text content of a file. */
  content?: string;
  /** Or this many zero bytes (written a MiB at a time, never held). */
  zeros?: number;
  linkpath?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  devmaj?: number;
  devmin?: number;
}

const BLOCK = 512;
const ZEROS = Buffer.alloc(1024 * 1024);

/** A PAX extended header carrying `records` for the entry after it (long names, big ids). */
function paxHeader(records: Record<string, string>): Buffer[] {
  let body = "";
  for (const [key, value] of Object.entries(records)) {
    const rest = ` ${key}=${value}\n`;
    let length = Buffer.byteLength(rest) + 1;
    while (String(length).length + Buffer.byteLength(rest) !== length) length++;
    body += `${length}${rest}`;
  }
  const data = Buffer.from(body);
  const header = Buffer.alloc(BLOCK);
  new Header({
    path: "PaxHeader",
    type: "ExtendedHeader",
    size: data.length,
    mode: 0o644,
    mtime: new Date(0),
  }).encode(header);
  return [header, data, Buffer.alloc(padding(data.length))];
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The bytes of an uncompressed tar of `entries`, as a stream of chunks; ends with the two zero blocks. */
export async function* tarChunks(entries: Iterable<EntrySpec>): AsyncGenerator<Buffer> {
  for (const spec of entries) {
    const type = spec.type ?? "File";
    const content = spec.content === undefined ? undefined : Buffer.from(spec.content);
    const size = type === "File" ? (content?.length ?? spec.zeros ?? 0) : 0;
    const long: Record<string, string> = {};
    if (Buffer.byteLength(spec.path) > 100) long.path = spec.path;
    if (spec.linkpath !== undefined && Buffer.byteLength(spec.linkpath) > 100) long.linkpath = spec.linkpath;
    if (Object.keys(long).length > 0) yield* paxHeader(long);
    const header = Buffer.alloc(BLOCK);
    new Header({
      path: long.path ? spec.path.slice(-90) : spec.path,
      type,
      size,
      mode: spec.mode ?? (type === "Directory" ? 0o755 : 0o644),
      uid: spec.uid ?? 0,
      gid: spec.gid ?? 0,
      mtime: new Date(FIXED_EPOCH * 1000),
      ...(spec.linkpath !== undefined ? { linkpath: long.linkpath ? "long" : spec.linkpath } : {}),
      ...(spec.devmaj !== undefined ? { devmaj: spec.devmaj, devmin: spec.devmin ?? 0 } : {}),
    }).encode(header);
    yield header;
    if (content) yield content;
    else if (type === "File") {
      for (let left = size; left > 0; left -= ZEROS.length)
        yield ZEROS.subarray(0, Math.min(left, ZEROS.length));
    }
    if (size > 0) yield Buffer.alloc(padding(size));
  }
  yield Buffer.alloc(2 * BLOCK);
}

/** A blob file with its digest and size; a layer's also with the digest of its uncompressed tar. */
export interface BlobFile {
  file: string;
  digest: string;
  size: number;
}

export interface LayerFile extends BlobFile {
  diffId: string;
  mediaType: string;
}

class Hashing extends Transform {
  readonly hash = createHash("sha256");
  size = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    callback(null, chunk);
  }
}

const GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

/** Writes a gzip layer of `entries` (or of any bytes `chunks` give) to `file`, streaming. */
export async function writeLayer(
  file: string,
  entries: Iterable<EntrySpec> | AsyncIterable<Buffer>,
  options: { gzip?: boolean } = {},
): Promise<LayerFile> {
  const chunks = Symbol.asyncIterator in entries ? entries : tarChunks(entries as Iterable<EntrySpec>);
  const diff = new Hashing();
  const blob = new Hashing();
  if (options.gzip === false) await pipeline(chunks, diff, blob, createWriteStream(file));
  else await pipeline(chunks, diff, createGzip({ level: 1 }), blob, createWriteStream(file));
  return {
    file,
    digest: `sha256:${blob.hash.digest("hex")}`,
    size: blob.size,
    diffId: `sha256:${diff.hash.digest("hex")}`,
    mediaType: options.gzip === false ? "application/vnd.oci.image.layer.v1.tar" : GZIP,
  };
}

/** A blob of exactly these bytes (a layer that lies about itself, a manifest, a config). */
export function writeBytesBlob(file: string, bytes: Buffer | string): BlobFile {
  const data = Buffer.from(bytes);
  writeFileSync(file, data);
  return { file, digest: `sha256:${createHash("sha256").update(data).digest("hex")}`, size: data.length };
}

let busybox: Promise<LayerFile> | undefined;

/** busybox's root filesystem as one gzip layer (made once per test file, in `dir`). */
export function busyboxLayer(dir: string): Promise<LayerFile> {
  busybox ??= (async () => rootfsLayer(await busyboxRootfs(), path.join(dir, "busybox-layer")))();
  return busybox;
}

/** A root filesystem directory as one gzip layer, `base`.tar.gz (its tar beside it), owned by root. */
export async function rootfsLayer(rootfs: string, base: string): Promise<LayerFile> {
  const tar = `${base}.tar`;
  execFileSync("tar", [
    "--numeric-owner",
    "--owner=0",
    "--group=0",
    "--sort=name",
    "-C",
    rootfs,
    "-cf",
    tar,
    ".",
  ]);
  return writeLayer(
    `${base}.tar.gz`,
    (async function* () {
      yield readFileSync(tar);
    })(),
  );
}

export interface ImageParts {
  /** The layers, lowest first. */
  layers: LayerFile[];
  /** Instead of the layers' true diff_ids. */
  diffIds?: string[];
  /** Replaces the config's JSON text. */
  configText?: string;
  /** Replaces the manifest's JSON text (given the true config and layer descriptors). */
  manifestText?: (manifest: Record<string, unknown>) => string;
}

/** A config and manifest for `parts`, as blobs in `dir`: what a registry or an archive would hold. */
export function imageBlobs(dir: string, parts: ImageParts): { config: BlobFile; manifest: BlobFile } {
  mkdirSync(dir, { recursive: true });
  const configText =
    parts.configText ??
    JSON.stringify({
      architecture: process.arch === "arm64" ? "arm64" : "amd64",
      os: "linux",
      config: { Cmd: ["sh"] },
      rootfs: { type: "layers", diff_ids: parts.diffIds ?? parts.layers.map((l) => l.diffId) },
    });
  const config = writeBytesBlob(path.join(dir, "config.json"), configText);
  const manifest = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: config.digest,
      size: config.size,
    },
    layers: parts.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  const manifestText = parts.manifestText ? parts.manifestText(manifest) : JSON.stringify(manifest);
  return { config, manifest: writeBytesBlob(path.join(dir, "manifest.json"), manifestText) };
}

/** An OCI archive of one image named `name`, as `tbuild load -i` reads it; returns its path. */
export function ociArchive(dir: string, name: string, parts: ImageParts): string {
  const layout = path.join(dir, "layout");
  const blobs = path.join(layout, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const { config, manifest } = imageBlobs(path.join(dir, "json"), parts);
  for (const blob of [config, manifest, ...parts.layers]) {
    execFileSync("cp", ["--reflink=auto", blob.file, path.join(blobs, blob.digest.slice("sha256:".length))]);
  }
  writeFileSync(path.join(layout, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    path.join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: manifest.digest,
          size: manifest.size,
          annotations: { "org.opencontainers.image.ref.name": name },
        },
      ],
    }),
  );
  const archive = path.join(dir, "image.tar");
  execFileSync("tar", ["-C", layout, "-cf", `${archive}.part`, "."]);
  renameSync(`${archive}.part`, archive);
  execFileSync("chmod", ["-R", "a+rX", dir]);
  return archive;
}
