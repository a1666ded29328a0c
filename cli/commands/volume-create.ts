/**
 * `tbuild volume create [NAME] [--label K=V]...`: a volume in the store, as `docker volume create`
 * makes one (a random 64-hex name when none is given; one of that name already there is kept).
 * Prints its name.
 */
import { randomBytes } from "node:crypto";
import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/index.js";
import { VolumeStore } from "../../runtime/volumes.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 1) throw new UsageError("tbuild volume create takes at most one NAME");
  const labels: Record<string, string> = {};
  for (const label of (args.values.label as string[] | undefined) ?? []) {
    const eq = label.indexOf("=");
    if (eq === 0) throw new UsageError(`--label "${label}": the key before "=" is empty`);
    if (eq < 0) labels[label] = "";
    else labels[label.slice(0, eq)] = label.slice(eq + 1);
  }
  const name = args.positionals[0] ?? randomBytes(32).toString("hex");
  // An empty directory and a small file the user owns (root of the user namespace, rootless).
  await new VolumeStore(defaultStoreRoot(ctx.env)).create(name, labels);
  ctx.stdout.write(`${name}\n`);
  return 0;
}
