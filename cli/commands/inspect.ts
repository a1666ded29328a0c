import { UsageError } from "../../errors/index.js";
import { readImage, readImageForPlatform, readImageIndex } from "../../oci/image.js";
import { hostPlatform, parsePlatform } from "../../oci/platform.js";
import { isIndexMediaType } from "../../oci/spec.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { findLocalImage, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (text === undefined || extra.length > 0)
    throw new UsageError("tbuild inspect takes one image (name or ID)");
  const platformText = args.values.platform as string | undefined;
  const platform = platformText ? parsePlatform(platformText) : hostPlatform();
  const store = await openCommandStore(ctx);
  const record = await findLocalImage(store, text);
  const multiPlatform = isIndexMediaType(record.descriptor.mediaType);
  const index = multiPlatform ? (await readImageIndex(store.content, record.descriptor)).index : undefined;
  // A multi-platform image shows its index, then the manifest and config of the platform asked for.
  const image = multiPlatform
    ? await readImageForPlatform(store.content, record.descriptor, platform, record.name)
    : await readImage(store.content, record.descriptor);
  const result = {
    name: record.name,
    descriptor: record.descriptor,
    ...(index !== undefined ? { index, platformDescriptor: image.descriptor } : {}),
    manifest: image.manifest,
    config: image.config,
  };
  ctx.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  return 0;
}
