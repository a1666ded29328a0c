/**
 * `tbuild __library-call` (not in help): the library's build() or run() for an unprivileged
 * caller, which starts this command inside tbuild's user namespace and speaks with it over a
 * socket (api/rootless.ts, api/rootless-child.ts).
 */
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(_args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const { serveLibraryCall } = await import("../../api/rootless-child.js");
  return serveLibraryCall({ signal: ctx.signal });
}
