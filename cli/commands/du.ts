import { storeDiskUsage } from "../../build/gc.js";
import { CacheIndex } from "../../solver/cache.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  // Snapshots and cache mounts hold subuid-owned files: read them inside the user namespace.
  const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (reexec !== undefined) return reexec;
  const store = await openCommandStore(ctx);
  const cache = CacheIndex.forStore(store.root);
  try {
    const usage = await storeDiskUsage(store, cache);
    const rows: [string, number, string][] = [
      ["images", usage.images, "layers and configs of named images"],
      ["build cache", usage.buildCache, `${usage.records} record(s)`],
      ["unreferenced", usage.unreferenced, "freed by the next prune"],
      ["cache mounts", usage.cacheMounts, "RUN --mount=type=cache"],
      ["snapshots", usage.snapshots, "unpacked layers"],
      ["containers", usage.containers, "tbuild run"],
      ["remote contexts", usage.remoteContexts, "contexts synced here by --worker clients"],
    ];
    const { total } = usage;
    if (args.values.format === "json") {
      const json = Object.fromEntries(rows.map(([name, bytes]) => [name.replace(" ", "-"), bytes]));
      ctx.stdout.write(`${JSON.stringify({ ...json, records: usage.records, total })}\n`);
      return 0;
    }
    ctx.stdout.write(`${"TYPE".padEnd(14)}${"SIZE".padEnd(10)}NOTE\n`);
    for (const [name, bytes, note] of rows)
      ctx.stdout.write(`${name.padEnd(14)}${formatSize(bytes).padEnd(10)}${note}\n`);
    ctx.stdout.write(`${"total".padEnd(14)}${formatSize(total)}\n`);
    return 0;
  } finally {
    cache.close();
  }
}
