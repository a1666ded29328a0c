import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { ContainerStore } from "../../runtime/containers.js";
import { waitContainer } from "../../runtime/lifecycle.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { eachContainer } from "./stop.js";

/** `tbuild wait CONTAINER...`: prints each one's exit code once it has exited. */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0)
    throw new UsageError("tbuild wait takes one or more containers (names or IDs)");
  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  return eachContainer(args.positionals, ctx, async (text) =>
    String(await waitContainer(containers, await containers.find(text))),
  );
}
