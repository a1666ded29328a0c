/**
 * `tbuild volume ls [-q] [--filter dangling=true|false] [--format table|json]`: the volumes in
 * the store, as docker lists them; a volume is dangling when no container (running or stopped)
 * mounts it. Reads metadata and container records only: no user namespace needed.
 */
import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { ContainerStore } from "../../runtime/containers.js";
import { VolumeStore, volumeUsers } from "../../runtime/volumes.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild volume ls takes no operands");
  const format = (args.values.format as string | undefined) ?? "table";
  if (format !== "table" && format !== "json")
    throw new UsageError(`--format must be table or json, not "${format}"`);
  let dangling: boolean | undefined;
  for (const filter of (args.values.filter as string[] | undefined) ?? []) {
    const match = /^dangling=(true|false|1|0)$/.exec(filter);
    if (!match) throw new UsageError(`--filter takes dangling=true or dangling=false, not "${filter}"`);
    dangling = match[1] === "true" || match[1] === "1";
  }
  const root = defaultStoreRoot(ctx.env);
  const users = volumeUsers(await new ContainerStore(root).list());
  const volumes = (await new VolumeStore(root).list()).filter(
    (v) => dangling === undefined || dangling === !users.has(v.Name),
  );
  if (args.values.quiet === true) {
    for (const volume of volumes) ctx.stdout.write(`${volume.Name}\n`);
  } else if (format === "json") {
    ctx.stdout.write(`${JSON.stringify(volumes, null, 2)}\n`);
  } else {
    ctx.stdout.write("DRIVER    VOLUME NAME\n");
    for (const volume of volumes) ctx.stdout.write(`${volume.Driver.padEnd(10)}${volume.Name}\n`);
  }
  return 0;
}
