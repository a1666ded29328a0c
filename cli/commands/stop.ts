import { isTbuildError, UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { ContainerStore } from "../../runtime/containers.js";
import { stopContainer } from "../../runtime/lifecycle.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

/** `tbuild stop [-t SECONDS] CONTAINER...`: through each container's control socket, no privileges needed. */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0)
    throw new UsageError("tbuild stop takes one or more containers (names or IDs)");
  const timeout = parseSeconds(args.values.time as string | undefined, "-t");
  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  return eachContainer(args.positionals, ctx, async (text) => {
    await stopContainer(containers, await containers.find(text), timeout);
    return undefined;
  });
}

/** A whole number of seconds from a flag, or undefined when it is absent. */
export function parseSeconds(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${flag} ${text}: a whole number of seconds`);
  return Number(text);
}

/**
 * As docker does: each operand on its own, its name printed when done, the others still done when
 * one fails; 1 when any failed.
 */
export async function eachContainer(
  operands: string[],
  ctx: CommandContext,
  act: (text: string) => Promise<string | undefined>,
): Promise<number> {
  let failed = false;
  for (const text of operands) {
    try {
      const shown = await act(text);
      ctx.stdout.write(`${shown ?? text}\n`);
    } catch (err) {
      if (!isTbuildError(err)) throw err;
      ctx.stderr.write(`ERROR: ${err.message}\n`);
      failed = true;
    }
  }
  return failed ? 1 : 0;
}
