/**
 * `tbuild __container-monitor STORE ID` (not in help): the monitor of a detached container,
 * started by `run -d` and `start` (runtime/monitor.ts). It handles its own signals: SIGTERM stops
 * the container as `tbuild stop` does, rather than cancelling a command.
 */
import { UsageError } from "../../errors/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [storeRoot, id] = args.positionals;
  if (storeRoot === undefined || id === undefined) {
    throw new UsageError(
      "tbuild __container-monitor is tbuild's own (runtime/monitor.ts), not a command to type",
    );
  }
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.removeAllListeners(signal);
  const { runMonitor } = await import("../../runtime/monitor.js");
  return runMonitor(storeRoot, id, ctx.env);
}
