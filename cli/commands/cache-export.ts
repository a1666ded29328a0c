/**
 * `tbuild cache export (--id ID... | --all) -o DIR|FILE.tar[.zst|.gz]|-`: cache mounts out of the
 * store, with owners and modes (worker/cache-mounts/bundle.ts), for `tbuild cache import` in
 * another store: a CI job's cache between runs. Run inside tbuild's user namespace when rootless,
 * so owners are the container's.
 */

import { stat } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { exportCacheMounts } from "../../worker/cache-mounts/bundle.js";
import { CacheMountStore } from "../../worker/cache-mounts/store.js";
import { inUserNamespace, reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0)
    throw new UsageError("tbuild cache export takes no operands: name mounts with --id");
  const ids = (args.values.id as string[] | undefined) ?? [];
  const all = args.values.all === true;
  const given = args.values.output as string | undefined;
  const output = given === undefined || given === "-" ? given : path.resolve(ctx.cwd, given);
  if (!output) throw new UsageError("tbuild cache export needs -o DIR, -o FILE.tar[.zst|.gz] or -o -");
  if (all === ids.length > 0)
    throw new UsageError(
      "tbuild cache export takes --all or --id ID (one or more), not both and not neither",
    );
  if (output === "-" && (ctx.stdout as { isTTY?: boolean }).isTTY === true)
    throw new UsageError(
      "tbuild cache export -o - writes a tar archive: send it to a file or a pipe, not a terminal",
    );
  const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (reexec !== undefined) return reexec;
  const store = new CacheMountStore(defaultStoreRoot(ctx.env));
  const known = await store.list();
  const filled = async (m: (typeof known)[number]) =>
    (await stat(m.data).catch(() => undefined))?.isDirectory() === true;
  let chosen = known;
  if (!all) {
    chosen = [];
    for (const id of ids) {
      const matches = known.filter((m) => m.id === id || (id.length >= 6 && m.key.startsWith(id)));
      if (matches.length === 0) {
        throw new TbuildError(
          "E_NO_SUCH_CACHE_MOUNT",
          `no cache mount with id ${JSON.stringify(id)} in the store (tbuild cache mounts lists them, with their ids and keys)`,
        );
      }
      for (const m of matches) if (!chosen.includes(m)) chosen.push(m);
    }
  }
  const mounts = [];
  for (const m of chosen) if (await filled(m)) mounts.push(m);
  const moved = await exportCacheMounts(mounts, output, {
    rootless: inUserNamespace(),
    signal: ctx.signal,
    stdout: ctx.stdout,
  });
  const total = moved.reduce((sum, m) => sum + m.bytes, 0);
  ctx.stderr.write(
    `exported ${moved.length} cache mount(s), ${formatSize(total)}, to ${output === "-" ? "stdout" : output}${moved.length > 0 ? `: ${moved.map((m) => m.record.id).join(", ")}` : ""}\n`,
  );
  return 0;
}
