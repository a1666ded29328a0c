import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot, openStore } from "../../oci/store/index.js";
import { ContainerStore } from "../../runtime/containers.js";
import { startContainer, stopContainer } from "../../runtime/lifecycle.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { eachContainer, parseSeconds } from "./stop.js";

/**
 * `tbuild start CONTAINER...` and `tbuild restart [-t SECONDS] CONTAINER...`: a kept container runs
 * again, detached, from its writable layer and volumes as it left them.
 */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  return startOrRestart(args, ctx, false);
}

export async function startOrRestart(
  args: ParsedCommandLine,
  ctx: CommandContext,
  restart: boolean,
): Promise<number> {
  const command = restart ? "restart" : "start";
  if (args.positionals.length === 0) {
    throw new UsageError(`tbuild ${command} takes one or more containers (names or IDs)`);
  }
  const timeout = restart ? parseSeconds(args.values.time as string | undefined, "-t") : undefined;
  // Starting touches snapshots: an unprivileged user re-runs this command in the user namespace.
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;
  const store = await openStore(defaultStoreRoot(ctx.env));
  const containers = new ContainerStore(store.root);
  return eachContainer(args.positionals, ctx, async (text) => {
    let record = await containers.find(text);
    if (restart) {
      await stopContainer(containers, record, timeout);
      record = (await containers.read(record.id)) ?? record;
    }
    await startContainer(store, record, { env: ctx.env });
    return undefined;
  });
}
