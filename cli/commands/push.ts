import { UsageError } from "../../errors/index.js";
import { push } from "../../index.js";
import { parseReference } from "../../oci/reference.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...extra] = args.positionals;
  if (text === undefined || extra.length > 0)
    throw new UsageError("tbuild push takes exactly one image reference");
  const ref = parseReference(text);
  const result = await push(text, { env: ctx.env, signal: ctx.signal, onWarning: ctx.warn });
  ctx.stderr.write(
    `uploaded ${result.uploaded}, mounted ${result.mounted}, already there ${result.present} blob(s)\n`,
  );
  ctx.stdout.write(`${ref.tag ?? ref.digest}: digest: ${result.digest} size: ${result.size}\n`);
  return 0;
}
