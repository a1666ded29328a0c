import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import { containerImages } from "../../build/gc.js";
import { CacheIndex } from "../../solver/cache.js";
import { storeUsage } from "../../solver/gc.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize, openCommandStore } from "../store.js";

/** Bytes under a directory (files counted once per inode); 0 when it does not exist. */
export async function directorySize(dir: string, seen = new Set<string>()): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return 0;
  }
  let total = 0;
  for (const name of entries) {
    const file = path.join(dir, name);
    const info = await lstat(file).catch(() => undefined);
    if (!info) continue;
    if (info.isDirectory()) total += await directorySize(file, seen);
    else if (!seen.has(`${info.dev}:${info.ino}`)) {
      seen.add(`${info.dev}:${info.ino}`);
      total += info.size;
    }
  }
  return total;
}

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  // Snapshots and cache mounts hold subuid-owned files: read them inside the user namespace.
  const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (reexec !== undefined) return reexec;
  const store = await openCommandStore(ctx);
  const cache = CacheIndex.forStore(store.root);
  try {
    const usage = await storeUsage(
      store,
      cache,
      (await containerImages(store.root)).map((c) => c.image),
    );
    const rows: [string, number, string][] = [
      ["images", usage.images, "layers and configs of named images"],
      ["build cache", usage.buildCache, `${usage.records} record(s)`],
      ["unreferenced", usage.unreferenced, "freed by the next prune"],
      ["cache mounts", await directorySize(path.join(store.root, "cache-mounts")), "RUN --mount=type=cache"],
      ["snapshots", await directorySize(path.join(store.root, "snapshots")), "unpacked layers"],
      ["containers", await directorySize(path.join(store.root, "containers")), "tbuild run"],
    ];
    const total = rows.reduce((sum, [, bytes]) => sum + bytes, 0);
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
