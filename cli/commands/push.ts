import { loadConfig, registryOptions } from "../../build/config.js";
import { UsageError } from "../../errors/index.js";
import { parseReference } from "../../oci/reference.js";
import { pushImage } from "../../oci/registry/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (text === undefined || extra.length > 0)
    throw new UsageError("tbuild push takes exactly one image reference");
  const ref = parseReference(text);
  const config = await loadConfig(ctx.env);
  const store = await openCommandStore(ctx);
  const result = await pushImage(store, ref, {
    ...registryOptions(config, ctx),
  });
  ctx.stderr.write(
    `uploaded ${result.uploaded}, mounted ${result.mounted}, already there ${result.present} blob(s)\n`,
  );
  ctx.stdout.write(
    `${ref.tag ?? ref.digest}: digest: ${result.descriptor.digest} size: ${result.descriptor.size}\n`,
  );
  return 0;
}
