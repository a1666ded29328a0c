/**
 * `tbuild worker --stdio`: the far end of `--worker ssh://HOST` (or `cmd://COMMAND`), started per
 * connection, no daemon: it speaks the worker protocol on its standard input and output
 * (worker/remote/server.ts) until the client closes them. Nothing else may write to standard
 * output: messages go to standard error. As an unprivileged user it first re-runs itself inside
 * tbuild's user namespace, as `tbuild build` does, so that it builds rootless.
 */
import { Duplex } from "node:stream";
import { UsageError } from "../../errors/index.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.values.stdio !== true || args.positionals.length > 0) {
    throw new UsageError(
      "tbuild worker serves one client on its standard input and output: run it as `tbuild worker --stdio` (what --worker ssh://HOST starts on HOST)",
    );
  }
  // The worker reads snapshots and runs steps as the namespace's root when its user is not root.
  const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (reexec !== undefined) return reexec;
  // Loaded only here: a rootless worker's outer process, which only waits for the re-run, would
  // spend most of its start-up loading them for nothing.
  const [{ remoteBuildHandlers }, { serveWorker }] = await Promise.all([
    import("../../build/remote-serve.js"),
    import("../../worker/remote/server.js"),
  ]);
  // The process's own stdio: the protocol is the whole of standard output (ctx.stdout is that too).
  const stream = Duplex.from({ readable: process.stdin, writable: process.stdout });
  await serveWorker(stream, {
    env: ctx.env,
    signal: ctx.signal,
    measureStore,
    handlers: remoteBuildHandlers(ctx.env),
  });
  return 0;
}

/** The store's bytes, all parts of it, as `tbuild du` totals them. */
async function measureStore(root: string): Promise<number> {
  const [{ storeDiskUsage }, { openStore }, { CacheIndex }] = await Promise.all([
    import("../../build/gc.js"),
    import("../../oci/store/index.js"),
    import("../../solver/cache.js"),
  ]);
  const store = await openStore(root);
  const cache = CacheIndex.forStore(root);
  try {
    return (await storeDiskUsage(store, cache)).total;
  } finally {
    cache.close();
  }
}
