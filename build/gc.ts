/**
 * The store's upkeep around builds: the unpacked layers nothing needs any more, the images kept
 * containers were made from (which no collection may take), and the space each part of the store
 * takes. Shared by a build's `[gc]` policy, `tbuild prune`, `du` and `rmi`, and a worker's `info`.
 *
 * Cache mounts count against `[gc]` as BuildKit counts its `exec.cachemount` records against a gc
 * policy's `keepBytes` and `keepDuration`: the build cache is pruned first, and when the build
 * cache and the cache mounts together still take more than `keep-storage`, the least recently used
 * mounts go too (never one the ending build used: it is the most recent).
 */

import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import type { Descriptor } from "../oci/spec.js";
import type { Store } from "../oci/store/index.js";
import type { ContainerRecord } from "../runtime/containers.js";
import type { CacheIndex } from "../solver/cache.js";
import { type GcPolicy, liveLayerStacks, type PrunePolicy, storeUsage } from "../solver/gc.js";
import { type CacheMountInfo, CacheMountStore } from "../worker/cache-mounts/store.js";
import { Snapshotter } from "../worker/snapshot/index.js";

/**
 * Removes the unpacked layers no image, cache record or kept container needs any more (a step's
 * kept result, a context's snapshot, once their records are pruned); the bytes `measure` finds
 * they hold. Nothing goes while another tbuild process is alive: it may be mounting or reading
 * any of them.
 */
export async function pruneUnneededLayers(
  store: Store,
  cache: CacheIndex,
  measure?: (dirs: readonly string[]) => Promise<number>,
): Promise<number> {
  if ((await store.content.liveLeases()).size > 0) return 0;
  const snapshotter = new Snapshotter(store.root, store.content);
  const unneeded = await snapshotter.unneededLayers(await liveLayerStacks(store, cache));
  const bytes = (await measure?.(unneeded)) ?? 0;
  await snapshotter.removeLayers(unneeded);
  return bytes;
}

/**
 * The images kept containers were made from, by manifest: every collection keeps them whole,
 * named or not, so that `tbuild commit` can still save a container whose image was untagged
 * (`rmi -f`) or whose name now points at a newer build, as Docker keeps a container's image.
 */
export async function containerImages(
  storeRoot: string,
): Promise<{ container: ContainerRecord; image: Descriptor }[]> {
  const { ContainerStore } = await import("../runtime/containers.js");
  return (await new ContainerStore(storeRoot).list()).map((container) => ({
    container,
    image: container.image.descriptor,
  }));
}

/** Which cache mounts a prune removes, least recently used first. With no limit, every one. */
export interface CacheMountPrunePolicy {
  /** Only mounts unused for longer than this (ms) go. */
  olderThan?: number;
  /** Stop once the cache mounts take at most this many bytes. */
  keepStorage?: number;
  /** Mounts used at or after this time (ms since the epoch) stay: the ending build used them. */
  keepUsedSince?: number;
}

export interface PrunedCacheMounts {
  removed: CacheMountInfo[];
  /** What removing them freed. */
  bytes: number;
  /** Nothing was removed: another tbuild process is alive, and it may be running on any mount. */
  busy: boolean;
}

/**
 * Removes cache mounts by the policy, least recently used first. A mount in use has nothing that
 * says so (a shared mount takes no lock), so while another tbuild process is alive none goes, as
 * `tbuild prune --all` keeps them. Rootless, their files belong to subordinate ids: call this
 * inside tbuild's user namespace.
 */
export async function pruneCacheMounts(
  store: Store,
  policy: CacheMountPrunePolicy,
  now = Date.now(),
): Promise<PrunedCacheMounts> {
  if ((await store.content.liveLeases()).size > 0) return { removed: [], bytes: 0, busy: true };
  const mounts = new CacheMountStore(store.root);
  await mounts.removeAbandoned();
  const sized = await cacheMountSizes(mounts);
  let total = sized.reduce((sum, { bytes }) => sum + bytes, 0);
  const pruned: PrunedCacheMounts = { removed: [], bytes: 0, busy: false };
  for (const { mount, bytes } of sized.reverse()) {
    if (policy.keepUsedSince !== undefined && mount.lastUsed >= policy.keepUsedSince) break;
    if (policy.olderThan !== undefined && now - mount.lastUsed < policy.olderThan) break;
    if (policy.keepStorage !== undefined && total <= policy.keepStorage) break;
    await mounts.remove(mount.key);
    total -= bytes;
    pruned.bytes += bytes;
    pruned.removed.push(mount);
  }
  return pruned;
}

/** Every cache mount with the bytes its directory holds, most recently used first. */
async function cacheMountSizes(mounts: CacheMountStore): Promise<{ mount: CacheMountInfo; bytes: number }[]> {
  const seen = new Set<string>();
  const sized: { mount: CacheMountInfo; bytes: number }[] = [];
  for (const mount of await mounts.list())
    sized.push({ mount, bytes: await directorySize(mounts.mountDir(mount.key), seen) });
  return sized;
}

/**
 * config.toml's `[gc]` over cache mounts, after the build cache was pruned by it: mounts unused
 * for longer than `keep-duration` go, then least recently used ones while the build cache and the
 * cache mounts together take more than `keep-storage`. Mounts used since `usedSince` (the build
 * that ends now) stay, and none goes while another tbuild process is alive.
 */
export async function applyGcPolicyToCacheMounts(
  store: Store,
  cache: CacheIndex,
  policy: GcPolicy & Pick<PrunePolicy, "keepImages">,
  usedSince: number,
  now = Date.now(),
): Promise<void> {
  if (policy.keepDuration === undefined && policy.keepStorage === undefined) return;
  if ((await new CacheMountStore(store.root).list()).length === 0) return;
  if (policy.keepDuration !== undefined)
    await pruneCacheMounts(store, { olderThan: policy.keepDuration, keepUsedSince: usedSince }, now);
  if (policy.keepStorage !== undefined) {
    const buildCache = (await storeUsage(store, cache, policy.keepImages)).buildCache;
    const keepStorage = Math.max(0, policy.keepStorage - buildCache);
    await pruneCacheMounts(store, { keepStorage, keepUsedSince: usedSince }, now);
  }
}

/** Bytes under a directory (files counted once per inode); 0 when it does not exist. */
export async function directorySize(dir: string, seen = new Set<string>()): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return 0;
  }
  let total = 0;
  for (const name of entries) {
    const file = path.join(dir, name);
    const info = await lstat(file).catch(() => undefined);
    if (!info) continue;
    if (info.isDirectory()) total += await directorySize(file, seen);
    else if (!seen.has(`${info.dev}:${info.ino}`)) {
      seen.add(`${info.dev}:${info.ino}`);
      total += info.size;
    }
  }
  return total;
}

/** What each part of a store takes, in bytes, as `tbuild du` shows it. */
export interface StoreDiskUsage {
  /** Blobs of named images (and of images kept containers were made from). */
  images: number;
  /** Blobs only build cache records reach. */
  buildCache: number;
  /** Build cache records. */
  records: number;
  /** Blobs nothing reaches: freed by the next prune. */
  unreferenced: number;
  cacheMounts: number;
  /** Unpacked layers. */
  snapshots: number;
  containers: number;
  /** The sum of the byte counts above. */
  total: number;
  /** Build contexts clients synced here (`--worker`), kept for their next build. */
  remoteContexts: number;
}

/** The bytes each part of the store takes. Snapshots hold subordinate ids' files: read them as root. */
export async function storeDiskUsage(store: Store, cache: CacheIndex): Promise<StoreDiskUsage> {
  const usage = await storeUsage(
    store,
    cache,
    (await containerImages(store.root)).map((c) => c.image),
  );
  const parts = {
    images: usage.images,
    buildCache: usage.buildCache,
    unreferenced: usage.unreferenced,
    cacheMounts: await directorySize(path.join(store.root, "cache-mounts")),
    snapshots: await directorySize(path.join(store.root, "snapshots")),
    containers: await directorySize(path.join(store.root, "containers")),
    remoteContexts: await directorySize(path.join(store.root, "remote-contexts")),
  };
  const total = Object.values(parts).reduce((sum, bytes) => sum + bytes, 0);
  return { ...parts, records: usage.records, total };
}
