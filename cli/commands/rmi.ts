import { TbuildError, UsageError } from "../../errors/index.js";
import { normalizeImageName } from "../../oci/store/index.js";
import { CacheIndex } from "../../solver/cache.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { findLocalImages, formatSize, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0)
    throw new UsageError("tbuild rmi takes one or more images (names or IDs)");
  const store = await openCommandStore(ctx);
  // Every operand is checked before anything is removed, so a typo in the third leaves the first two.
  const names: string[] = [];
  for (const text of args.positionals) {
    const records = await findLocalImages(store, text);
    // An ID names an image, not a name; with several names, removing them all must be asked for, as docker does.
    const byName = records.some((r) => r.name === normalizedOrUndefined(text));
    if (!byName && records.length > 1 && args.values.force !== true) {
      throw new TbuildError(
        "E_IMAGE_IN_USE",
        `image ${text} has several names (${records.map((r) => r.name).join(", ")}): remove them by name, or all of them with --force`,
      );
    }
    for (const record of records) {
      if (!names.includes(record.name)) names.push(record.name);
    }
  }
  for (const name of names) {
    if (await store.images.remove(name)) ctx.stdout.write(`Untagged: ${name}\n`);
  }
  if (args.values["no-prune"] !== true) {
    // The build cache keeps its layers: removing an image does not empty the cache (prune does).
    const cache = CacheIndex.forStore(store.root);
    const freed = await store.images
      .collectGarbage({ keep: () => cache.blobs() })
      .finally(() => cache.close());
    if (freed.removed > 0) {
      ctx.stdout.write(
        `Deleted: ${freed.removed} blob${freed.removed === 1 ? "" : "s"}, ${formatSize(freed.bytes)} freed\n`,
      );
    }
  }
  return 0;
}

function normalizedOrUndefined(text: string): string | undefined {
  try {
    return normalizeImageName(text);
  } catch {
    return undefined;
  }
}
