import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { startOrRestart } from "./start.js";

/** `tbuild restart [-t SECONDS] CONTAINER...`: stop (when running), then start. */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  return startOrRestart(args, ctx, true);
}
