/**
 * `tbuild cache import -i DIR|FILE`: seeds the store's cache mounts from what `tbuild cache export`
 * wrote (worker/cache-mounts/bundle.ts); a mount the store already has keeps its own content. The
 * input is untrusted: nothing of it is written outside the store's cache mounts. Rootless, it runs
 * inside tbuild's user namespace, so the container's owners are kept.
 */
import path from "node:path";
import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { importCacheMounts } from "../../worker/cache-mounts/bundle.js";
import { inUserNamespace, reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0)
    throw new UsageError("tbuild cache import takes no operands: name the input with -i");
  const given = args.values.input as string | undefined;
  const input = given === undefined || given === "-" ? given : path.resolve(ctx.cwd, given);
  if (!input)
    throw new UsageError(
      "tbuild cache import needs -i DIR, -i FILE or -i - (what tbuild cache export wrote)",
    );
  const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (reexec !== undefined) return reexec;
  const moved = await importCacheMounts(defaultStoreRoot(ctx.env), input, {
    rootless: inUserNamespace(),
    warn: ctx.warn,
    signal: ctx.signal,
    stdin: process.stdin,
  });
  const seeded = moved.filter((m) => !m.kept);
  const kept = moved.filter((m) => m.kept);
  ctx.stderr.write(
    `imported ${seeded.length} cache mount(s), ${formatSize(seeded.reduce((s, m) => s + m.bytes, 0))}${seeded.length > 0 ? `: ${seeded.map((m) => m.record.id).join(", ")}` : ""}\n`,
  );
  if (kept.length > 0) {
    ctx.stderr.write(
      `kept ${kept.length} the store already had (its own content): ${kept.map((m) => m.record.id).join(", ")}\n`,
    );
  }
  return 0;
}
