import { UsageError } from "../../errors/index.js";
import { eraseCredentials, normalizeRegistryName } from "../../oci/registry/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

/** `tbuild logout [REGISTRY]`: forgets the credentials in docker's config.json or its helper. */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (extra.length > 0) throw new UsageError("tbuild logout takes at most one REGISTRY");
  const registry = normalizeRegistryName(text);
  if (await eraseCredentials(registry, ctx.env)) {
    ctx.stdout.write(`Removed login credentials for ${registry}\n`);
  } else {
    ctx.stdout.write(`Not logged in to ${registry}\n`);
  }
  return 0;
}
