/**
 * The build cache as it travels between stores (`--cache-to`, `--cache-from`), after BuildKit's
 * cache manifest (`cache/remotecache/v1`): an OCI image manifest whose config blob is a JSON
 * description of cache records (key → the layer chain, plus the step name and the key's
 * material), and whose layers are the layer blobs themselves. Inline cache carries the same
 * description in the image config under INLINE_CACHE_FIELD, as BuildKit's `moby.buildkit.cache.v0`.
 *
 * As written, a record names the top of a stack of layers, each stack a layer on the stack below
 * it (as BuildKit's cache config chains its layers by parent): the records of a build 3,000 steps
 * deep, each holding every layer below it, listed whole would not fit in a JavaScript string.
 */

import type { Descriptor } from "../oci/spec.js";
import { CACHE_MOUNT_MEDIA_TYPE } from "../worker/cache-mounts/archive.js";
import { type CacheMountRecord, parseCacheMountRecord } from "../worker/cache-mounts/store.js";
import type { KeyMaterial } from "./cache.js";
import type { VertexDigest } from "./graph.js";
import type { FsResult, LayerRef } from "./worker.js";

export const CACHE_CONFIG_MEDIA_TYPE = "application/vnd.tbuild.cache.config.v0+json";
/** A top-level image config field (not a label), so that `docker inspect` labels stay the user's. */
export const INLINE_CACHE_FIELD = "tbuild.cache.v0";

export interface ExportedRecord {
  key: string;
  name: string;
  material: KeyMaterial;
  layers: LayerRef[];
  /** When the step's result was made (ms since the epoch): an image made from it is dated by it. */
  created?: number;
}

/**
 * A cache mount that travels with the cache (`mounts=true`): what it is, and its content as one
 * blob (worker/cache-mounts/archive.ts packMountBlob), listed in the cache manifest after the
 * layers. Never part of a record: a mount's content is no step's result nor in any key.
 */
export interface CachedMount {
  record: Omit<CacheMountRecord, "lastUsed">;
  blob: Descriptor;
}

export interface CacheDescription {
  records: ExportedRecord[];
  mounts?: CachedMount[];
}

export type CacheMode = "min" | "max";

/**
 * The records a cache export carries. `max`: every step of the build whose result is known;
 * `min`: only those whose layers are all in the final image (the final stage's chain), so an
 * intermediate stage's steps are left out; a step after them still hits, since keys are computed
 * from keys, never from results.
 */
export function describeCache(
  keys: Map<VertexDigest, string>,
  resultOf: (digest: VertexDigest, key: string) => FsResult | undefined,
  details: (
    digest: VertexDigest,
    key: string,
  ) => { name: string; material: KeyMaterial; created?: number } | undefined,
  finalLayers: LayerRef[],
  mode: CacheMode,
): CacheDescription {
  const inFinal = new Set(finalLayers.map((layer) => layer.descriptor.digest));
  const records: ExportedRecord[] = [];
  const seen = new Set<string>();
  for (const [digest, key] of keys) {
    if (seen.has(key)) continue;
    const result = resultOf(digest, key);
    const detail = details(digest, key);
    if (!result || !detail) continue;
    if (mode === "min" && !result.layers.every((layer) => inFinal.has(layer.descriptor.digest))) continue;
    seen.add(key);
    records.push({ key, ...detail, layers: result.layers });
  }
  records.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { records };
}

/** The distinct layer blobs a description refers to, in first-use order. */
export function describedLayers(description: CacheDescription): LayerRef[] {
  const byDigest = new Map<string, LayerRef>();
  for (const record of description.records) {
    for (const layer of record.layers)
      if (!byDigest.has(layer.descriptor.digest)) byDigest.set(layer.descriptor.digest, layer);
  }
  return [...byDigest.values()];
}

/** The mount blobs a description carries, after its layers in a cache manifest. */
export function describedMountBlobs(description: CacheDescription): Descriptor[] {
  return (description.mounts ?? []).map((mount) => mount.blob);
}

/** A description as written: stacks of layers, and records naming theirs by position. */
interface WrittenDescription {
  stacks: { below?: number; layer: LayerRef }[];
  records: (Omit<ExportedRecord, "layers"> & { stack?: number })[];
  mounts?: CachedMount[];
}

/** The description as it is written (JSON): each layer of each stack once. */
export function encodeCacheDescription(description: CacheDescription): WrittenDescription {
  const stacks: WrittenDescription["stacks"] = [];
  // Stack position by the layer on top (its digest: equal layers read from different records are
  // one) and the position below it ("" for none). So the same records are always the same bytes,
  // and an unchanged build's cache exports the blobs already there.
  const positions = new Map<string, Map<number | "", number>>();
  const records = description.records.map(({ layers, ...record }) => {
    let below: number | undefined;
    for (const layer of layers) {
      let byBelow = positions.get(layer.descriptor.digest);
      if (!byBelow) {
        byBelow = new Map();
        positions.set(layer.descriptor.digest, byBelow);
      }
      let position = byBelow.get(below ?? "");
      if (position === undefined) {
        position = stacks.length;
        stacks.push({ ...(below !== undefined ? { below } : {}), layer });
        byBelow.set(below ?? "", position);
      }
      below = position;
    }
    return { ...record, ...(below !== undefined ? { stack: below } : {}) };
  });
  const mounts = description.mounts ?? [];
  return { stacks, records, ...(mounts.length > 0 ? { mounts } : {}) };
}

/** How many layers the records of one description may list in all: a bound on reading a hostile one. */
const MAX_DESCRIBED_LAYERS = 20_000_000;

/** A layer; a mount blob is never one (a hostile description naming one as a layer is refused). */
const isLayer = (l: unknown): l is LayerRef =>
  typeof (l as LayerRef)?.diffId === "string" &&
  typeof (l as LayerRef)?.descriptor?.digest === "string" &&
  (l as LayerRef).descriptor.mediaType !== CACHE_MOUNT_MEDIA_TYPE;

/** How many cache mounts one description may carry: a bound on reading a hostile one. */
const MAX_DESCRIBED_MOUNTS = 1000;

/**
 * The mounts of an untrusted description: a record parseCacheMountRecord accepts (its key is its
 * identity's digest) and a blob that is a sha256 digest of a safe size with the mount media type;
 * a key's first mount only.
 */
function parseCachedMounts(value: unknown): CachedMount[] {
  if (!Array.isArray(value)) return [];
  const mounts = new Map<string, CachedMount>();
  for (const item of value.slice(0, MAX_DESCRIBED_MOUNTS)) {
    const parsed = parseCacheMountRecord({ ...(item as CachedMount | null)?.record, lastUsed: 0 });
    const blob = (item as CachedMount | null)?.blob;
    if (!parsed || !isMountBlob(blob) || mounts.has(parsed.key)) continue;
    const { lastUsed: _, ...record } = parsed;
    mounts.set(parsed.key, {
      record,
      blob: { mediaType: CACHE_MOUNT_MEDIA_TYPE, digest: blob.digest, size: blob.size },
    });
  }
  return [...mounts.values()];
}

const isMountBlob = (d: unknown): d is Descriptor =>
  typeof d === "object" &&
  d !== null &&
  (d as Descriptor).mediaType === CACHE_MOUNT_MEDIA_TYPE &&
  typeof (d as Descriptor).digest === "string" &&
  /^sha256:[0-9a-f]{64}$/.test((d as Descriptor).digest) &&
  Number.isSafeInteger((d as Descriptor).size) &&
  (d as Descriptor).size > 0;

/** A time JavaScript's Date can hold, in whole milliseconds since the epoch. */
const isTime = (t: unknown): t is number =>
  Number.isInteger(t) && (t as number) >= 0 && (t as number) <= 8.64e15;

/**
 * Reads a description from untrusted JSON, as written by encodeCacheDescription or with each
 * record's layers listed (as before): records without a key, a name or valid layers are dropped.
 */
export function parseCacheDescription(value: unknown): CacheDescription {
  const records = (value as { records?: unknown })?.records;
  if (!Array.isArray(records)) return { records: [] };
  const mounts = parseCachedMounts((value as { mounts?: unknown }).mounts);
  const stacks = (value as { stacks?: unknown }).stacks;
  // Each stack is valid only on a valid stack before it: no stack is its own ancestor.
  const depth: number[] = [];
  if (Array.isArray(stacks)) {
    for (const [i, stack] of stacks.entries()) {
      const below = (stack as { below?: unknown })?.below;
      const under =
        below === undefined
          ? 0
          : Number.isInteger(below) && (below as number) >= 0 && (below as number) < i
            ? depth[below as number]!
            : -1;
      depth.push(under >= 0 && isLayer((stack as { layer?: unknown })?.layer) ? under + 1 : -1);
    }
  }
  const layersOf = (top: unknown): LayerRef[] | undefined => {
    if (top === undefined) return [];
    if (!Number.isInteger(top) || !((depth[top as number] ?? -1) >= 0)) return undefined;
    const layers: LayerRef[] = [];
    for (let at: number | undefined = top as number; at !== undefined; ) {
      const stack: WrittenDescription["stacks"][number] = (stacks as WrittenDescription["stacks"])[at]!;
      layers.push(stack.layer);
      at = stack.below;
    }
    return layers.reverse();
  };
  let listed = 0;
  const parsed: ExportedRecord[] = [];
  for (const r of records) {
    if (typeof r?.key !== "string" || typeof r?.name !== "string") continue;
    const layers = Array.isArray(r.layers)
      ? r.layers.every(isLayer)
        ? r.layers
        : undefined
      : layersOf(r.stack);
    if (!layers) continue;
    listed += layers.length;
    if (listed > MAX_DESCRIBED_LAYERS) break;
    const created = isTime(r.created) ? { created: r.created } : {};
    parsed.push({ key: r.key, name: r.name, material: r.material, layers, ...created });
  }
  return { records: parsed, ...(mounts.length > 0 ? { mounts } : {}) };
}
