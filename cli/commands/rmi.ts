import { containerImages } from "../../build/gc.js";
import { TbuildError, UsageError } from "../../errors/index.js";
import { type Descriptor, type Index, isIndexMediaType } from "../../oci/spec.js";
import { type ImageRecord, normalizeImageName, type Store } from "../../oci/store/index.js";
import type { ContainerRecord } from "../../runtime/containers.js";
import { CacheIndex } from "../../solver/cache.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { findLocalImages, formatSize, openCommandStore, shortId } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0)
    throw new UsageError("tbuild rmi takes one or more images (names or IDs)");
  const force = args.values.force === true;
  const store = await openCommandStore(ctx);
  // Every operand is checked before anything is removed, so a typo in the third leaves the first two.
  const names: string[] = [];
  const removed: { text: string; record: ImageRecord }[] = [];
  for (const text of args.positionals) {
    const records = await findLocalImages(store, text);
    // An ID names an image, not a name; with several names, removing them all must be asked for, as docker does.
    const byName = records.some((r) => r.name === normalizedOrUndefined(text));
    if (!byName && records.length > 1 && !force) {
      throw new TbuildError(
        "E_IMAGE_IN_USE",
        `image ${text} has several names (${records.map((r) => r.name).join(", ")}): remove them by name, or all of them with --force`,
      );
    }
    for (const record of records) {
      if (!names.includes(record.name)) {
        names.push(record.name);
        removed.push({ text, record });
      }
    }
  }
  const kept = await containerImages(store.root);
  if (!force) await refuseImagesContainersUse(store, removed, kept);
  for (const name of names) {
    if (await store.images.remove(name)) ctx.stdout.write(`Untagged: ${name}\n`);
  }
  if (args.values["no-prune"] !== true) {
    // The build cache keeps its layers: removing an image does not empty the cache (prune does).
    // A kept container's image stays whole (-f untags it only), so `commit` can still save it.
    const cache = CacheIndex.forStore(store.root);
    const freed = await store.images
      .collectGarbage({ keep: () => cache.blobs(), keepImages: kept.map((c) => c.image) })
      .finally(() => cache.close());
    if (freed.removed > 0) {
      ctx.stdout.write(
        `Deleted: ${freed.removed} blob${freed.removed === 1 ? "" : "s"}, ${formatSize(freed.bytes)} freed\n`,
      );
    }
  }
  return 0;
}

/**
 * Docker's rule: the last name of an image a container was made from is not removed without -f
 * (with it, the name goes and the image stays for the container). Another name of the same image
 * left in the store keeps it named, and may be removed freely.
 */
async function refuseImagesContainersUse(
  store: Store,
  removed: { text: string; record: ImageRecord }[],
  kept: { container: ContainerRecord; image: Descriptor }[],
): Promise<void> {
  if (kept.length === 0) return;
  const leaving = new Set(removed.map((r) => r.record.name));
  const remaining = (await store.images.list()).filter((r) => !leaving.has(r.name));
  const stillNamed = new Set<string>();
  for (const record of remaining)
    for (const digest of await manifestsOf(store, record.descriptor)) stillNamed.add(digest);
  for (const { text, record } of removed) {
    const manifests = await manifestsOf(store, record.descriptor);
    const user = kept.find((c) => manifests.has(c.image.digest) && !stillNamed.has(c.image.digest));
    if (user === undefined) continue;
    const { container } = user;
    const what =
      normalizedOrUndefined(text) === record.name
        ? `unable to remove repository reference "${text}" (must force) - container ${container.id.slice(0, 12)} (${container.name}) is using its referenced image ${shortId(record.descriptor.digest)}`
        : `unable to delete ${text} (must be forced) - image is being used by container ${container.id.slice(0, 12)} (${container.name})`;
    throw new TbuildError(
      "E_IMAGE_IN_USE",
      `conflict: ${what}: remove the container first (tbuild rm ${container.name}), or untag it with -f (the image stays for the container)`,
    );
  }
}

/** The manifests an image name reaches: its own, or those of its index (a multi-platform image). */
async function manifestsOf(store: Store, descriptor: Descriptor): Promise<Set<string>> {
  const digests = new Set([descriptor.digest]);
  if (!isIndexMediaType(descriptor.mediaType)) return digests;
  if (!(await store.content.has(descriptor.digest))) return digests;
  const index = await store.content.readJson<Partial<Index>>(descriptor.digest);
  for (const child of index.manifests ?? []) digests.add(child.digest);
  return digests;
}

function normalizedOrUndefined(text: string): string | undefined {
  try {
    return normalizeImageName(text);
  } catch {
    return undefined;
  }
}
