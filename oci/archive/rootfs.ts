/**
 * A root filesystem (a directory, or a tar archive, plain or compressed) as a one-layer image: what
 * `tbuild import` and `docker import` do. A directory is packed deterministically: entries sorted
 * byte-wise, depth first; numeric owners, permission bits (with setuid/setgid/sticky) and mtimes
 * (whole seconds) kept; hard links as links; devices and FIFOs kept; sockets skipped, as Docker's
 * archiver does. The same tree gives the same layer digest wherever and whenever it is packed.
 */
import { createReadStream } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Header } from "tar";
import { TbuildError } from "../../errors/index.js";
import { decompressor, writeLayer } from "../layer.js";
import type { Platform } from "../platform.js";
import {
  type ContainerConfig,
  type Descriptor,
  type ImageConfig,
  type Manifest,
  MediaType,
} from "../spec.js";
import type { ContentStore } from "../store/content.js";
import { byBytes } from "./byte-order.js";
import { TAR_END, type TarEntry, tarEntry } from "./tar.js";

/** Reading the root filesystem failed in a way the user can fix. */
export class RootfsError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_ROOTFS", message, cause === undefined ? {} : { cause });
  }
}

/** Linux's encoding of a device number (glibc's gnu_dev_major/minor). */
export function deviceNumbers(rdev: bigint): { devmaj: number; devmin: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { devmaj: Number(major), devmin: Number(minor) };
}

/**
 * The tar stream of a directory's contents (the directory itself is the layer's root and has no
 * entry). `onSkip` hears of entries that cannot be in a layer (sockets).
 */
export function packDirectory(root: string, onSkip?: (relative: string, reason: string) => void): Readable {
  const hardLinks = new Map<string, string>();

  async function* visit(dir: string, prefix: string): AsyncGenerator<Buffer> {
    let names: string[];
    try {
      names = (await readdir(dir)).sort(byBytes);
    } catch (err) {
      throw unreadable(dir, err);
    }
    for (const name of names) {
      const absolute = path.join(dir, name);
      const relative = prefix + name;
      let st: Awaited<ReturnType<typeof lstat>>;
      try {
        st = await lstat(absolute, { bigint: true });
      } catch (err) {
        throw unreadable(absolute, err);
      }
      const base = {
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: 0,
        mtime: new Date(Number(st.mtimeMs)),
      };
      if (st.isDirectory()) {
        yield* tarEntry({ ...base, path: `${relative}/`, type: "Directory" });
        yield* visit(absolute, `${relative}/`);
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const first = st.nlink > 1n ? hardLinks.get(key) : undefined;
        if (first !== undefined) {
          yield* tarEntry({ ...base, path: relative, type: "Link", linkpath: first });
          continue;
        }
        if (st.nlink > 1n) hardLinks.set(key, relative);
        const entry: TarEntry = { ...base, path: relative, type: "File", size: Number(st.size) };
        let stream: NodeJS.ReadableStream;
        try {
          stream = createReadStream(absolute, { highWaterMark: 1 << 20 });
          yield* tarEntry(entry, stream);
        } catch (err) {
          if (err instanceof TbuildError) throw err;
          throw unreadable(absolute, err);
        }
      } else if (st.isSymbolicLink()) {
        const target = await readlink(absolute).catch((err: unknown) => {
          throw unreadable(absolute, err);
        });
        yield* tarEntry({ ...base, path: relative, type: "SymbolicLink", linkpath: target });
      } else if (st.isCharacterDevice() || st.isBlockDevice()) {
        const type = st.isCharacterDevice() ? "CharacterDevice" : "BlockDevice";
        yield* tarEntry({ ...base, path: relative, type, ...deviceNumbers(st.rdev) });
      } else if (st.isFIFO()) {
        yield* tarEntry({ ...base, path: relative, type: "FIFO" });
      } else {
        onSkip?.(relative, "a socket cannot be stored in a layer");
      }
    }
  }

  async function* all(): AsyncGenerator<Buffer> {
    const st = await lstat(root).catch((err: unknown) => {
      throw unreadable(root, err);
    });
    if (!st.isDirectory()) throw new RootfsError(`${root} is not a directory`);
    yield* visit(root, "");
    yield TAR_END;
  }
  return Readable.from(all(), { objectMode: false });
}

function unreadable(file: string, err: unknown): RootfsError {
  const code = (err as NodeJS.ErrnoException)?.code ?? String(err);
  const hint = code === "EACCES" || code === "EPERM" ? ": import as a user who can read the whole tree" : "";
  return new RootfsError(`cannot read ${file} (${code})${hint}`, err);
}

/** The first `n` bytes of a stream, and a stream that gives all of it again from the start. */
export async function peek(
  input: AsyncIterable<Uint8Array>,
  n: number,
): Promise<{ head: Buffer; stream: Readable }> {
  const iterator = input[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let length = 0;
  let done = false;
  while (length < n) {
    const next = await iterator.next();
    if (next.done) {
      done = true;
      break;
    }
    const chunk = Buffer.from(next.value);
    chunks.push(chunk);
    length += chunk.length;
  }
  const head = Buffer.concat(chunks);
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      if (head.length > 0) yield head;
      if (done) return;
      for (;;) {
        const next = await iterator.next();
        if (next.done) return;
        yield Buffer.from(next.value);
      }
    } finally {
      await iterator.return?.();
    }
  }
  return { head: head.subarray(0, n), stream: Readable.from(replay(), { objectMode: false }) };
}

type Compression = "gzip" | "zstd" | "bzip2" | "xz" | "uncompressed";

/** What a stream is compressed with, by its magic bytes. */
export function detectCompression(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return "zstd";
  if (head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
  return "uncompressed";
}

/**
 * A tar archive (plain, gzip or zstd) as a stream of the plain tar, checked to be a tar; `what`
 * names the input in errors (a file name, or "standard input").
 */
export async function openTarArchive(input: AsyncIterable<Uint8Array>, what: string): Promise<Readable> {
  const { head, stream } = await peek(input, 6);
  if (head.length === 0) throw new RootfsError(`${what} is empty: expected a tar archive`);
  const compression = detectCompression(head);
  if (compression === "bzip2" || compression === "xz") {
    stream.destroy();
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `${what} is compressed with ${compression}, which tbuild does not read yet: decompress it first (${compression === "xz" ? "xz -d" : "bunzip2"}) or use gzip or zstd`,
    );
  }
  let plain: Readable = stream;
  if (compression !== "uncompressed") {
    const decompress = decompressor(compression);
    // An error anywhere destroys the decompressor with it, and whoever reads the tar sees it.
    pipeline(stream, decompress).catch(() => {});
    plain = decompress;
  }
  const checked = await peek(plain, 512);
  const block = checked.head;
  const header = block.length === 512 ? new Header(block) : undefined;
  if (header === undefined || (!header.cksumValid && !header.nullBlock)) {
    checked.stream.destroy();
    throw new RootfsError(
      `${what} is not a tar archive${compression !== "uncompressed" ? ` (inside its ${compression})` : ""}`,
    );
  }
  return checked.stream;
}

export type RootfsSource =
  | { kind: "directory"; path: string }
  | { kind: "archive"; stream: AsyncIterable<Uint8Array>; name: string };

export interface ImportOptions {
  platform: Platform;
  /** The container config: what `--change` instructions set. */
  config: ContainerConfig;
  /** RFC 3339; the image's and its history's `created`. */
  created: string;
  /** The history entry's comment, e.g. `Imported from rootfs.tar`. */
  comment: string;
  signal?: AbortSignal;
  onSkip?: (relative: string, reason: string) => void;
}

export interface ImportedImage {
  descriptor: Descriptor;
  manifest: Manifest;
  config: ImageConfig;
}

/** Stores a root filesystem as a one-layer gzip image: layer, config and manifest blobs. */
export async function importRootfs(
  content: ContentStore,
  source: RootfsSource,
  options: ImportOptions,
): Promise<ImportedImage> {
  const tar =
    source.kind === "directory"
      ? packDirectory(source.path, options.onSkip)
      : await openTarArchive(source.stream, source.name);
  const layer = await writeLayer(content, tar, {
    compression: "gzip",
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const config: ImageConfig = {
    created: options.created,
    architecture: options.platform.architecture,
    os: options.platform.os,
    ...(options.platform.variant ? { variant: options.platform.variant } : {}),
    config: options.config,
    rootfs: { type: "layers", diff_ids: [layer.diffId] },
    history: [{ created: options.created, comment: options.comment }],
  };
  const configBlob = await content.writeBytes(Buffer.from(JSON.stringify(config)));
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, ...configBlob },
    layers: [layer.descriptor],
  };
  const manifestBlob = await content.writeBytes(Buffer.from(JSON.stringify(manifest)));
  return { descriptor: { mediaType: MediaType.ociManifest, ...manifestBlob }, manifest, config };
}
