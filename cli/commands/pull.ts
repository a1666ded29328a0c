import { loadConfig, registryOptions } from "../../build/config.js";
import { UsageError } from "../../errors/index.js";
import { hostPlatform, parsePlatform } from "../../oci/platform.js";
import { parseReference } from "../../oci/reference.js";
import { pullImage } from "../../oci/registry/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (text === undefined || extra.length > 0)
    throw new UsageError("tbuild pull takes exactly one image reference");
  const ref = parseReference(text);
  const platformText = args.values.platform as string | undefined;
  const platform = platformText ? parsePlatform(platformText) : hostPlatform();
  const config = await loadConfig(ctx.env);
  const store = await openCommandStore(ctx);
  const result = await pullImage(store, ref, {
    platform,
    ...registryOptions(config, ctx),
  });
  ctx.stderr.write(
    `fetched ${result.fetched} blob${result.fetched === 1 ? "" : "s"} (${formatSize(result.bytesFetched)}) from ${result.source}, ${result.present} already present\n`,
  );
  ctx.stdout.write(`Digest: ${result.descriptor.digest}\n${result.name}\n`);
  return 0;
}
