import { UsageError } from "../../errors/index.js";
import { pull } from "../../index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (text === undefined || extra.length > 0)
    throw new UsageError("tbuild pull takes exactly one image reference");
  const platform = args.values.platform as string | undefined;
  const result = await pull(text, {
    ...(platform ? { platform } : {}),
    env: ctx.env,
    signal: ctx.signal,
    onWarning: ctx.warn,
  });
  ctx.stderr.write(
    `fetched ${result.fetched} blob${result.fetched === 1 ? "" : "s"} (${formatSize(result.bytesFetched)}) from ${result.source}, ${result.present} already present\n`,
  );
  ctx.stdout.write(`Digest: ${result.digest}\n${result.name}\n`);
  return 0;
}
