/**
 * The store's upkeep around builds: the unpacked layers nothing needs any more, and the images
 * kept containers were made from (which no collection may take). Shared by a build's `[gc]` policy
 * and `tbuild prune`, `du` and `rmi`.
 */

import type { Descriptor } from "../oci/spec.js";
import type { Store } from "../oci/store/index.js";
import type { ContainerRecord } from "../runtime/containers.js";
import type { CacheIndex } from "../solver/cache.js";
import { liveLayerStacks } from "../solver/gc.js";
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
