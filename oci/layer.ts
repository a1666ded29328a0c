/**
 * Layer blobs: a tar stream in, a stored blob out. The tar is hashed as it flows (the diff_id),
 * compressed, and hashed again by the content store as it is written (the blob digest): one pass,
 * never in memory, and nothing visible in the store unless all of it arrived.
 */
import { createHash, type Hash } from "node:crypto";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip, createZstdCompress, createZstdDecompress } from "node:zlib";
import { TbuildError } from "../errors/index.js";
import { InvalidTarError, readTarEntries } from "./archive/tar-reader.js";
import { type Descriptor, MediaType } from "./spec.js";
import type { ContentStore } from "./store/content.js";

export type LayerCompression = "gzip" | "zstd" | "uncompressed";

export interface WrittenLayer {
  /** The blob as stored: media type, digest and size of the compressed bytes. */
  descriptor: Descriptor;
  /** sha256 of the uncompressed tar, for the config's `rootfs.diff_ids`. */
  diffId: string;
}

/** Passes bytes through unchanged while hashing and counting them. */
export class DigestingStream extends Transform {
  private readonly hash: Hash;
  private readonly algorithm: string;
  size = 0;

  constructor(algorithm = "sha256") {
    super();
    this.algorithm = algorithm;
    this.hash = createHash(algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.size += chunk.length;
    this.hash.update(chunk);
    callback(null, chunk);
  }

  /** `sha256:<hex>`; only once the stream has ended. */
  digest(): string {
    return `${this.algorithm}:${this.hash.digest("hex")}`;
  }
}

const MEDIA_TYPES: Record<LayerCompression, string> = {
  gzip: MediaType.ociLayerGzip,
  zstd: MediaType.ociLayerZstd,
  uncompressed: MediaType.ociLayer,
};

/**
 * Bytes a layer's gzip compressor or decompressor gives at a time. zlib's default (16 KiB) makes a
 * fresh buffer and a callback per 16 KiB: exporting a 256 MB layer spent more time collecting that
 * garbage than decompressing. gzip's output does not depend on it (test/oci/layer-chunks.property.test.ts);
 * zstd compression keeps the default, as its output was not shown to be the same.
 */
const ZLIB_CHUNK_BYTES = 1 << 20;

function compressor(compression: LayerCompression): Transform | undefined {
  if (compression === "gzip") return createGzip({ chunkSize: ZLIB_CHUNK_BYTES });
  if (compression === "zstd") return createZstdCompress();
  return undefined;
}

/** Stores a tar stream as a layer blob, compressed as asked; returns its descriptor and diff_id. */
export async function writeLayer(
  content: ContentStore,
  tar: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
  options: { compression: LayerCompression; signal?: AbortSignal },
): Promise<WrittenLayer> {
  const diff = new DigestingStream();
  const compress = compressor(options.compression);
  const chunks = inLargeChunks(tar as AsyncIterable<Uint8Array>);
  const written = await pipeToStore(content, compress ? [chunks, diff, compress] : [chunks, diff], {
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return {
    descriptor: { mediaType: MEDIA_TYPES[options.compression], digest: written.digest, size: written.size },
    diffId: diff.digest(),
  };
}

/**
 * Pipes a source through its stages (`streams`, the source first) into the content store. The
 * store's own error (disk full, digest mismatch) says more than the stream's, and waiting for it
 * means its temp file is gone before the caller hears of the failure.
 */
export async function pipeToStore(
  content: ContentStore,
  streams: readonly unknown[],
  options: {
    signal?: AbortSignal;
    intoStore?(bytes: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array>;
  } = {},
): Promise<{ digest: string; size: number }> {
  let storing: Promise<{ digest: string; size: number }> | undefined;
  const store = (bytes: AsyncIterable<Uint8Array>) => {
    storing = content.write(options.intoStore ? options.intoStore(bytes) : bytes, {}, options.signal);
    return storing;
  };
  try {
    // pipeline's typings list fixed arities; the stages vary with the source and the target.
    await (pipeline as (...streams: unknown[]) => Promise<void>)(
      ...streams,
      store,
      options.signal ? { signal: options.signal } : {},
    );
  } catch (err) {
    const storeError = await storing?.then(
      () => undefined,
      (e: unknown) => e,
    );
    throw storeError ?? err;
  }
  return storing!;
}

/** Tar writers yield a header, the content and its padding per entry: joined here into chunks of this size. */
const CHUNK_BYTES = 256 * 1024;

/**
 * The stream joined into larger chunks: every chunk a compressor is given is a round trip to
 * zlib's thread pool, which for a layer of many small files cost more than the compression.
 */
async function* inLargeChunks(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of source) {
    if (chunk.length >= CHUNK_BYTES && size === 0) {
      yield chunk;
      continue;
    }
    pending.push(chunk);
    size += chunk.length;
    if (size >= CHUNK_BYTES) {
      yield Buffer.concat(pending, size);
      pending = [];
      size = 0;
    }
  }
  if (size > 0) yield Buffer.concat(pending, size);
}

/** What a layer blob is compressed with, from its media type. */
export function layerCompression(mediaType: string): LayerCompression {
  if (mediaType.endsWith("+gzip") || mediaType.endsWith(".tar.gzip")) return "gzip";
  if (mediaType.endsWith("+zstd")) return "zstd";
  if (mediaType.endsWith(".tar") || mediaType === "application/vnd.docker.image.rootfs.diff.tar") {
    return "uncompressed";
  }
  throw new TbuildError("E_UNSUPPORTED_LAYER", `layers of media type ${mediaType} are not supported`);
}

/** A decompressor for a layer's blob (a pass-through for uncompressed ones). */
export function decompressor(compression: LayerCompression): Transform {
  if (compression === "gzip") return createGunzip({ chunkSize: ZLIB_CHUNK_BYTES });
  if (compression === "zstd") return createZstdDecompress({ chunkSize: ZLIB_CHUNK_BYTES });
  return new Transform({ transform: (chunk, _encoding, callback) => callback(null, chunk) });
}

/** A layer blob whose bytes are not what its descriptor and config say: `what` names it, `reason` says how. */
export class LayerContentError extends TbuildError {
  readonly reason: string;

  constructor(what: string, reason: string) {
    super("E_INVALID_LAYER", `${what} ${reason}`);
    this.reason = reason;
  }
}

const MAGIC: Record<Exclude<LayerCompression, "uncompressed">, number[]> = {
  gzip: [0x1f, 0x8b],
  zstd: [0x28, 0xb5, 0x2f, 0xfd],
};

/** The blob's chunks, refused at once when its first bytes are not the magic of its compression. */
async function* withMagic(
  blob: AsyncIterable<Uint8Array>,
  compression: LayerCompression,
  mediaType: string,
  what: string,
): AsyncGenerator<Uint8Array> {
  if (compression === "uncompressed") {
    yield* blob;
    return;
  }
  const magic = MAGIC[compression];
  let head = Buffer.alloc(0);
  let checked = false;
  for await (const chunk of blob) {
    if (!checked) {
      head = Buffer.concat([head, chunk]);
      if (head.length < magic.length) continue;
      if (!magic.every((byte, i) => head[i] === byte)) {
        throw new LayerContentError(what, `is typed ${mediaType} but is not ${compression} data`);
      }
      checked = true;
      yield head;
      continue;
    }
    yield chunk;
  }
  if (!checked) throw new LayerContentError(what, `is typed ${mediaType} but is not ${compression} data`);
}

/**
 * Reads a layer blob through and checks what unpacking it will rely on: it is compressed as its
 * media type says, the compressed stream is whole, the tar inside is one (headers, sizes), and the
 * tar's sha256 is the config's diff_id. Streaming: a blob of any size costs a few chunks of memory.
 * Done where a layer arrives (a pull, a load), so that an image whose layer cannot unpack is never
 * named; the unpacker checks each entry's path again, which is where a hostile path is refused.
 */
export async function verifyLayer(
  blob: AsyncIterable<Uint8Array>,
  layer: { mediaType: string; diffId: string },
  what: string,
): Promise<void> {
  let compression: LayerCompression;
  try {
    compression = layerCompression(layer.mediaType);
  } catch {
    throw new LayerContentError(
      what,
      `has media type ${layer.mediaType}, which is not a layer tbuild can unpack`,
    );
  }
  const diff = new DigestingStream();
  const piping = pipeline(
    Readable.from(withMagic(blob, compression, layer.mediaType, what)),
    decompressor(compression),
    diff,
  );
  piping.catch(() => {});
  try {
    for await (const _entry of readTarEntries(diff, { what })) {
      // Bodies are skipped unread; only the structure and the hash matter here.
    }
    await piping;
  } catch (err) {
    diff.destroy();
    if (err instanceof LayerContentError) throw err;
    if (err instanceof InvalidTarError)
      throw new LayerContentError(what, `is not a valid tar archive: ${err.reason}`);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "Z_BUF_ERROR")
      throw new LayerContentError(what, `ends in the middle of its ${compression} stream`);
    if (
      typeof code === "string" &&
      (code.startsWith("Z_") || code.startsWith("ERR_ZSTD") || code.startsWith("ZSTD"))
    ) {
      throw new LayerContentError(what, `is not valid ${compression} data (${(err as Error).message})`);
    }
    throw err;
  }
  const actual = diff.digest();
  if (actual !== layer.diffId) {
    throw new LayerContentError(what, `uncompresses to ${actual}, not to its diff_id ${layer.diffId}`);
  }
}
