/**
 * Garbage collection that knows the build cache: blobs are live when an image reaches them, a
 * cache record refers to them, or a live process has leased them. Records chosen for removal are
 * deleted (one transaction) before any blob is, so no record is ever left pointing at a blob this
 * removed; a collector killed between the two leaves unreferenced blobs, which the next one frees.
 */
import type { Descriptor, Index, Manifest } from "../oci/spec.js";
import type { Store } from "../oci/store/index.js";
import type { CacheIndex, CacheRecord } from "./cache.js";

export interface PrunePolicy {
  /** Images outside the index to keep whole: those kept containers were made from. */
  keepImages?: readonly Descriptor[];
  /** Keep removing the least recently used records until the cache's own bytes are at most this. */
  keepStorage?: number;
  /** Only records unused for longer than this (ms) may go. */
  olderThan?: number;
}

export interface StoreUsage {
  /** Bytes of blobs images reach. */
  images: number;
  /** Bytes of blobs only cache records reach. */
  buildCache: number;
  records: number;
  /** Bytes nothing reaches (removed by the next collection). */
  unreferenced: number;
}

/**
 * Every descriptor the image index reaches, each once, with its document when it is a manifest
 * or an index the store holds (whose children are visited too).
 */
async function walkImages(
  store: Store,
  visit: (descriptor: Descriptor, document?: Partial<Manifest & Index>) => Promise<void> | void,
  keepImages: readonly Descriptor[] = [],
): Promise<void> {
  const seen = new Set<string>();
  const walk = async (descriptor: Descriptor): Promise<void> => {
    if (seen.has(descriptor.digest)) return;
    seen.add(descriptor.digest);
    if (!/manifest|index/.test(descriptor.mediaType ?? "")) return visit(descriptor);
    if ((await store.content.size(descriptor.digest)) === undefined) return visit(descriptor);
    const document = await store.content.readJson<Partial<Manifest & Index>>(descriptor.digest);
    await visit(descriptor, document);
    for (const child of document.manifests ?? []) await walk(child);
  };
  for (const entry of [...(await store.images.readIndex()).manifests, ...keepImages]) await walk(entry);
}

/** The blobs the image index (and `keepImages`) reaches: index and manifest documents, configs, layers. */
export async function imageBlobs(store: Store, keepImages: readonly Descriptor[] = []): Promise<Set<string>> {
  const live = new Set<string>();
  await walkImages(
    store,
    (descriptor, document) => {
      live.add(descriptor.digest);
      if (document?.config) live.add(document.config.digest);
      for (const layer of document?.layers ?? []) live.add(layer.digest);
    },
    keepImages,
  );
  return live;
}

/**
 * The layer stacks (diff IDs, lowest first) of every image the index reaches and of every cache
 * record's result: what an unpacked layer must belong to, to be kept.
 */
export async function liveLayerStacks(store: Store, cache: CacheIndex): Promise<string[][]> {
  const stacks = cache.all().map((record) => record.result.layers.map((layer) => layer.diffId));
  await walkImages(store, async (_descriptor, document) => {
    const config = document?.config;
    if (!config || (await store.content.size(config.digest)) === undefined) return;
    const image = await store.content.readJson<{ rootfs?: { diff_ids?: string[] } }>(config.digest);
    stacks.push(image.rootfs?.diff_ids ?? []);
  });
  return stacks;
}

function recordBlobs(records: CacheRecord[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const record of records) {
    for (const digest of new Set(record.result.layers.map((l) => l.descriptor.digest))) {
      counts.set(digest, (counts.get(digest) ?? 0) + 1);
    }
  }
  return counts;
}

export async function storeUsage(
  store: Store,
  cache: CacheIndex,
  keepImages: readonly Descriptor[] = [],
): Promise<StoreUsage> {
  const images = await imageBlobs(store, keepImages);
  const records = cache.all();
  const cached = recordBlobs(records);
  const usage: StoreUsage = { images: 0, buildCache: 0, records: records.length, unreferenced: 0 };
  for await (const blob of store.content.list()) {
    if (images.has(blob.digest)) usage.images += blob.size;
    else if (cached.has(blob.digest)) usage.buildCache += blob.size;
    else usage.unreferenced += blob.size;
  }
  return usage;
}

/**
 * Removes build cache records by the policy (least recently used first), then every blob no
 * image, remaining record or live process needs. With no limit in the policy every record goes.
 */
export async function pruneBuildCache(
  store: Store,
  cache: CacheIndex,
  policy: PrunePolicy,
  now = Date.now(),
): Promise<{ records: number; bytes: number }> {
  return store.images.withLock(async () => {
    // Listed before leases are read, as ImageStore.collectGarbage does, so a concurrent writer's
    // new blob is either not listed or already leased.
    const stored = new Map<string, number>();
    for await (const blob of store.content.list()) stored.set(blob.digest, blob.size);
    const leased = await store.content.liveLeases();
    const images = await imageBlobs(store, policy.keepImages);
    const records = cache.all().sort((a, b) => a.lastUsed - b.lastUsed);
    const counts = recordBlobs(records);
    let cacheBytes = 0;
    for (const [digest] of counts) if (!images.has(digest)) cacheBytes += stored.get(digest) ?? 0;
    const doomed: string[] = [];
    for (const record of records) {
      if (policy.olderThan !== undefined && now - record.lastUsed < policy.olderThan) continue;
      if (policy.keepStorage !== undefined && cacheBytes <= policy.keepStorage) break;
      doomed.push(record.key);
      for (const digest of new Set(record.result.layers.map((l) => l.descriptor.digest))) {
        const left = (counts.get(digest) ?? 1) - 1;
        counts.set(digest, left);
        if (left === 0 && !images.has(digest)) cacheBytes -= stored.get(digest) ?? 0;
      }
    }
    cache.remove(doomed);
    let bytes = 0;
    for (const [digest, size] of stored) {
      if (images.has(digest) || leased.has(digest) || (counts.get(digest) ?? 0) > 0) continue;
      if (await store.content.delete(digest)) bytes += size;
    }
    await store.content.cleanIngest();
    return { records: doomed.length, bytes };
  });
}

/** `10GB`, `512MB`, `1.5G`, `2048` (bytes): powers of 1000 as docker's sizes, `i` forms powers of 1024. */
export function parseSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$/i.exec(text);
  if (!match) return undefined;
  const power = " kmgt".indexOf((match[2] || " ").toLowerCase());
  return Math.round(Number(match[1]) * (match[3] ? 1024 : 1000) ** power);
}

/** `24h`, `30m`, `168h`, `90s`, `7d`: a duration in milliseconds. */
export function parseDuration(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
  if (!match) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as "ms"];
  return Number(match[1]) * unit;
}

/** config.toml's `[gc]`: limits a build enforces when it ends. */
export interface GcPolicy {
  /** `keep-storage`: the build cache's own bytes. */
  keepStorage?: number;
  /** `keep-duration`: records unused for longer than this (ms) go. */
  keepDuration?: number;
}

/** Prunes only when the policy is exceeded: a record too old, or the build cache too large. */
export async function applyGcPolicy(
  store: Store,
  cache: CacheIndex,
  policy: GcPolicy & Pick<PrunePolicy, "keepImages">,
  now = Date.now(),
): Promise<{ records: number; bytes: number } | undefined> {
  const { keepImages } = policy;
  const stale =
    policy.keepDuration !== undefined && cache.all().some((r) => now - r.lastUsed > policy.keepDuration!);
  const over =
    policy.keepStorage !== undefined &&
    (await storeUsage(store, cache, keepImages)).buildCache > policy.keepStorage;
  if (!stale && !over) return undefined;
  const freed = { records: 0, bytes: 0 };
  const add = (r: { records: number; bytes: number }) => {
    freed.records += r.records;
    freed.bytes += r.bytes;
  };
  const keep = keepImages !== undefined ? { keepImages } : {};
  if (stale) add(await pruneBuildCache(store, cache, { olderThan: policy.keepDuration!, ...keep }, now));
  if (over) add(await pruneBuildCache(store, cache, { keepStorage: policy.keepStorage!, ...keep }, now));
  return freed;
}
