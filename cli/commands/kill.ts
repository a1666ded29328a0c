import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { ContainerStore } from "../../runtime/containers.js";
import { killContainer } from "../../runtime/lifecycle.js";
import { parseSignal } from "../../runtime/signals.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { eachContainer } from "./stop.js";

/** `tbuild kill [-s SIGNAL] CONTAINER...`: SIGKILL unless told otherwise, as docker's. */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0)
    throw new UsageError("tbuild kill takes one or more containers (names or IDs)");
  const signal = parseSignal((args.values.signal as string | undefined) ?? "SIGKILL");
  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  return eachContainer(args.positionals, ctx, async (text) => {
    await killContainer(containers, await containers.find(text), signal);
    return undefined;
  });
}
