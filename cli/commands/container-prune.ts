/**
 * `tbuild container prune`: removes every stopped container (exited, or created and never run) as
 * `tbuild rm` does, their volumes kept, and prints what docker prints: the removed IDs and the
 * space their writable layers and records took. Running containers are not touched.
 */
import { directorySize } from "../../build/gc.js";
import { isTbuildError, UsageError } from "../../errors/index.js";
import { ContainerStore, currentState } from "../../runtime/containers.js";
import { Snapshotter } from "../../worker/snapshot/index.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild container prune takes no operands");
  // A writable layer holds files of the image's ids: removing them needs the user namespace.
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;

  const store = await openCommandStore(ctx);
  const containers = new ContainerStore(store.root);
  const snapshotter = new Snapshotter(store.root, store.content);
  const { removeContainer } = await import("../../runtime/container.js");
  const removed: string[] = [];
  let bytes = 0;
  let failed = false;
  for (const record of await containers.list()) {
    if (currentState(record).status === "running") continue;
    const size =
      (await directorySize(snapshotter.writableDir(record.id))) +
      (await directorySize(containers.containerDir(record.id)));
    try {
      await removeContainer(store, record, { force: false });
    } catch (err) {
      // One that started meanwhile is refused; the others still go, as docker does.
      if (!isTbuildError(err)) throw err;
      ctx.stderr.write(`ERROR: ${err.message}\n`);
      failed = true;
      continue;
    }
    removed.push(record.id);
    bytes += size;
  }
  if (removed.length > 0) ctx.stdout.write(`Deleted Containers:\n${removed.join("\n")}\n\n`);
  ctx.stdout.write(`Total reclaimed space: ${formatSize(bytes)}\n`);
  return failed ? 1 : 0;
}
