/**
 * Layers compressed as an export asks, by BuildKit's rules: an uncompressed layer is compressed;
 * a layer already compressed keeps its blob unless `force-compression` asks for another
 * algorithm. A conversion streams (blob → decompressor → diff_id hash → compressor → content
 * store, hashed again as it is written), so no layer is ever held in memory, and is remembered
 * (diff_id, algorithm, level → blob), so a layer already exported is not compressed again.
 */
import { createHash, type Hash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { constants, createGzip, createZstdCompress } from "node:zlib";
import PQueue from "p-queue";
import { TbuildError } from "../errors/index.js";
import { decompressor, type LayerCompression, layerCompression, pipeToStore } from "../oci/layer.js";
import { type Descriptor, MediaType } from "../oci/spec.js";
import { writeStoreFile } from "../oci/store/images.js";
import { parseDigest, type Store } from "../oci/store/index.js";
import type { LayerRef } from "../solver/worker.js";
import { releasingSpent } from "./destination.js";
import { layerMediaType } from "./media-types.js";

export interface LayerCompressionRequest {
  compression: LayerCompression;
  /** zlib's level for gzip (0–9) or zstd's (1–22); the library's default when absent. */
  level?: number;
  /** Recompress layers compressed with another algorithm too. */
  force?: boolean;
  signal?: AbortSignal;
}

/** Where conversions are remembered, inside the store: `<root>/exporters/layers/<algorithm>-<level>/<alg>-<hex>`. */
const CONVERSIONS_DIR = path.join("exporters", "layers");

/** The layers as the request wants them, converting (or reusing earlier conversions of) those that must change. */
export async function compressLayers(
  store: Store,
  layers: readonly LayerRef[],
  request: LayerCompressionRequest,
): Promise<LayerRef[]> {
  // zlib runs on libuv's thread pool: a few layers at once use the cores without piling up buffers.
  const queue = new PQueue({ concurrency: Math.max(1, Math.min(4, availableParallelism())) });
  // A layer that fails (a damaged blob) fails the export, but only once the layers being converted
  // are done, and no other starts: nothing writes into the store after this has returned.
  let failed = false;
  const settled = await Promise.allSettled(
    layers.map((layer) =>
      queue.add(async () => {
        if (failed || !needsConversion(layer, request)) return layer;
        try {
          return await convertLayer(store, layer, request);
        } catch (err) {
          failed = true;
          throw err;
        }
      }),
    ),
  );
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failure) throw failure.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<LayerRef>).value);
}

function needsConversion(layer: LayerRef, request: LayerCompressionRequest): boolean {
  // A foreign layer lives at its URLs; its bytes are not ours to rewrite.
  if (layer.descriptor.mediaType === MediaType.dockerForeignLayerGzip) return false;
  const current = layerCompression(layer.descriptor.mediaType);
  if (current === request.compression) return false;
  return current === "uncompressed" || request.force === true;
}

async function convertLayer(
  store: Store,
  layer: LayerRef,
  request: LayerCompressionRequest,
): Promise<LayerRef> {
  const record = conversionRecordPath(store, layer.diffId, request);
  const remembered = await rememberedConversion(store, record);
  if (remembered !== undefined) return { descriptor: remembered, diffId: layer.diffId };

  const content = store.content;
  const sourceCompression = layerCompression(layer.descriptor.mediaType);
  // An uncompressed blob is its own diff: its digest, checked when it was stored, is the diff_id.
  const check =
    sourceCompression === "uncompressed" && layer.descriptor.digest === layer.diffId
      ? undefined
      : new HashingStage(parseDigest(layer.diffId).algorithm);
  const stages: Transform[] = [
    ...(sourceCompression === "uncompressed" ? [] : [decompressor(sourceCompression)]),
    ...(check ? [check] : []),
    ...(compressor(request) ?? []),
  ];
  const source = releasingSpent(
    content.open(layer.descriptor.digest) as unknown as AsyncIterable<Uint8Array>,
  );
  const written = await pipeToStore(content, [source, ...stages], {
    ...(request.signal ? { signal: request.signal } : {}),
    intoStore: releasingSpent,
  });
  const diffId = check?.digest() ?? layer.diffId;
  if (diffId !== layer.diffId) {
    throw new TbuildError(
      "E_DIGEST_MISMATCH",
      `layer ${layer.descriptor.digest} uncompresses to ${diffId}, not to its diff_id ${layer.diffId}: the store is damaged; run the build again with --no-cache`,
    );
  }
  const descriptor: Descriptor = {
    mediaType: layerMediaType(request.compression, "oci"),
    digest: written.digest,
    size: written.size,
  };
  await writeStoreFile(record, JSON.stringify(descriptor), content.ingestDir);
  return { descriptor, diffId: layer.diffId };
}

/**
 * How much each stage of a conversion may hold: enough that hashing (on the main thread) and
 * compressing (on the thread pool) overlap instead of waiting on each other; a few MB per stage.
 */
const STAGE_BUFFER_BYTES = 4 << 20;

function compressor(request: LayerCompressionRequest): Transform[] | undefined {
  const level = request.level;
  const options = { highWaterMark: STAGE_BUFFER_BYTES, chunkSize: 64 * 1024 };
  if (request.compression === "gzip")
    return [createGzip(level !== undefined ? { ...options, level } : options)];
  if (request.compression === "zstd") {
    return [
      createZstdCompress(
        level !== undefined
          ? { ...options, params: { [constants.ZSTD_c_compressionLevel]: level } }
          : options,
      ),
    ];
  }
  return undefined;
}

/** The digest of what flows through, passed on unchanged. */
class HashingStage extends Transform {
  private readonly algorithm: string;
  private readonly hash: Hash;

  constructor(algorithm: string) {
    super({ highWaterMark: STAGE_BUFFER_BYTES });
    this.algorithm = algorithm;
    this.hash = createHash(algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    callback(null, chunk);
  }

  digest(): string {
    return `${this.algorithm}:${this.hash.digest("hex")}`;
  }
}

function conversionRecordPath(store: Store, diffId: string, request: LayerCompressionRequest): string {
  const { algorithm, hex } = parseDigest(diffId);
  const variant = `${request.compression}-${request.level ?? "default"}`;
  return path.join(store.root, CONVERSIONS_DIR, variant, `${algorithm}-${hex}`);
}

/**
 * The blob an earlier export converted this layer to, if the store still holds it (a garbage
 * collection may have removed it since: then it is converted again). `has` leases it.
 */
async function rememberedConversion(store: Store, record: string): Promise<Descriptor | undefined> {
  let descriptor: Descriptor;
  try {
    descriptor = JSON.parse(await readFile(record, "utf8")) as Descriptor;
    if (typeof descriptor?.digest !== "string" || typeof descriptor.size !== "number") return undefined;
    if (!(await store.content.has(descriptor.digest))) return undefined;
  } catch {
    // Absent, or unreadable (a foreign file, a damaged digest): converting again is always correct.
    return undefined;
  }
  if ((await store.content.size(descriptor.digest)) !== descriptor.size) return undefined;
  return { mediaType: descriptor.mediaType, digest: descriptor.digest, size: descriptor.size };
}
