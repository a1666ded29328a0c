/**
 * `tbuild cache mounts [-q] [--format table|json]`: the store's cache mounts (`RUN
 * --mount=type=cache`), most recently used first: id, key, size, when last used, sharing. Their
 * content is owned by subordinate ids when rootless: read inside tbuild's user namespace.
 */

import { directorySize } from "../../build/gc.js";
import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { CacheMountStore } from "../../worker/cache-mounts/store.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize, timeAgo } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild cache mounts takes no operands");
  const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (reexec !== undefined) return reexec;
  const mounts = await new CacheMountStore(defaultStoreRoot(ctx.env)).list();
  if (args.values.quiet === true) {
    for (const mount of mounts) ctx.stdout.write(`${mount.key}\n`);
    return 0;
  }
  const rows = await Promise.all(
    mounts.map(async (m) => ({
      id: m.id,
      key: m.key,
      size: await directorySize(m.data),
      lastUsed: m.lastUsed,
      sharing: m.sharing,
      target: m.target,
      ...(m.base ? { base: m.base } : {}),
    })),
  );
  if (args.values.format === "json") {
    ctx.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    return 0;
  }
  const table = [
    ["ID", "KEY", "SIZE", "LAST USED", "SHARING"],
    ...rows.map((r) => [
      r.id || "(unknown)",
      r.key.slice(0, 12),
      formatSize(r.size),
      r.lastUsed > 0 ? timeAgo(r.lastUsed) : "unknown",
      r.sharing,
    ]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)) + 3);
  for (const row of table)
    ctx.stdout.write(
      `${row.map((cell, i) => (i < row.length - 1 ? cell.padEnd(widths[i]!) : cell)).join("")}\n`,
    );
  return 0;
}
