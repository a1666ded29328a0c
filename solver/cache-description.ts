/**
 * The build cache as it travels between stores (`--cache-to`, `--cache-from`), after BuildKit's
 * cache manifest (`cache/remotecache/v1`): an OCI image manifest whose config blob is a JSON
 * description of cache records (key → the layer chain, plus the step name and the key's
 * material), and whose layers are the layer blobs themselves. Inline cache carries the same
 * description in the image config under INLINE_CACHE_FIELD, as BuildKit's `moby.buildkit.cache.v0`.
 */
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
}

export interface CacheDescription {
  records: ExportedRecord[];
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
  details: (digest: VertexDigest, key: string) => { name: string; material: KeyMaterial } | undefined,
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
    records.push({ key, name: detail.name, material: detail.material, layers: result.layers });
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

/** Reads a description from untrusted JSON: records without a key or a layer list are dropped. */
export function parseCacheDescription(value: unknown): CacheDescription {
  const records = (value as { records?: unknown })?.records;
  if (!Array.isArray(records)) return { records: [] };
  return {
    records: records.filter(
      (r): r is ExportedRecord =>
        typeof r?.key === "string" &&
        typeof r?.name === "string" &&
        Array.isArray(r?.layers) &&
        r.layers.every(
          (l: LayerRef) => typeof l?.diffId === "string" && typeof l?.descriptor?.digest === "string",
        ),
    ),
  };
}
