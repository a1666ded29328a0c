/**
 * The store as commands use it: opened from the environment (`$TBUILD_ROOT`, `$XDG_DATA_HOME`,
 * `~/.local/share`), and images found by what a user types: a name (`busybox`, normalized), or an
 * image ID as `tbuild images` shows it (a digest, or a unique prefix of its hex).
 */
import { TbuildError } from "../errors/index.js";
import { InvalidReferenceError, parseReference, repositoryName } from "../oci/reference.js";
import type { Descriptor } from "../oci/spec.js";
import {
  defaultStoreRoot,
  ImageNotFoundError,
  type ImageRecord,
  normalizeImageName,
  openStore,
  type Store,
} from "../oci/store/index.js";
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

/** Opens (creating on first use) the store this command's environment names. */
export function openCommandStore(ctx: { env: NodeJS.ProcessEnv }): Promise<Store> {
  return openStore(defaultStoreRoot(ctx.env));
}

const ID_PREFIX = /^(?:sha256:)?([a-f0-9]{4,64})$/;

/** The 12 hex digits of a digest, as `tbuild images` shows an image ID. */
export function shortId(digest: string): string {
  return digest.slice(digest.indexOf(":") + 1, digest.indexOf(":") + 13);
}

/**
 * The images `text` names: the one image of that name, or every name of the image whose ID
 * (descriptor digest) `text` is or begins with. Throws ImageNotFoundError, or
 * InvalidReferenceError when `text` is neither a valid name nor an ID.
 */
export async function findLocalImages(store: Store, text: string): Promise<ImageRecord[]> {
  let nameError: InvalidReferenceError | undefined;
  try {
    const record = await store.images.get(text);
    if (record !== undefined) {
      const stored = await store.images.list();
      if (stored.some((r) => r.name === record.name)) return [record];
      // `name@digest` found by digest: the names it is stored under, in that repository.
      const repository = repositoryName(parseReference(record.name));
      return stored.filter(
        (r) =>
          r.descriptor.digest === record.descriptor.digest &&
          repositoryName(parseReference(r.name)) === repository,
      );
    }
  } catch (err) {
    if (!(err instanceof InvalidReferenceError)) throw err;
    nameError = err;
  }
  const id = ID_PREFIX.exec(text)?.[1];
  if (id !== undefined) {
    const records = await store.images.list();
    const matches = records.filter((r) => r.descriptor.digest.startsWith(`sha256:${id}`));
    const digests = new Set(matches.map((r) => r.descriptor.digest));
    if (digests.size > 1) {
      throw new TbuildError(
        "E_AMBIGUOUS_ID",
        `image ID ${text} is the start of several images' IDs (${[...digests].map(shortId).join(", ")}): give more of it`,
      );
    }
    if (matches.length > 0) return matches;
  }
  if (nameError !== undefined) throw nameError;
  throw new ImageNotFoundError(normalizeImageName(text));
}

/** The one image `text` names; an ID shared by several names gives the first (they are one image). */
export async function findLocalImage(store: Store, text: string): Promise<ImageRecord> {
  return (await findLocalImages(store, text))[0]!;
}

/** Sizes as docker prints them: powers of 1000, three significant digits (`4.26MB`). */
export function formatSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const shown = unit === 0 ? String(value) : String(Number(value.toPrecision(3)));
  return `${shown}${units[unit]}`;
}
