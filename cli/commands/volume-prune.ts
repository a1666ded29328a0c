/**
 * `tbuild volume prune [-a]`: removes the anonymous volumes no container (running or stopped)
 * mounts, or with `-a` every unused volume, named ones too (docker 23's rule), and prints what
 * docker prints: the removed names and the space reclaimed.
 */
import { directorySize } from "../../build/gc.js";
import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/index.js";
import { ContainerStore } from "../../runtime/containers.js";
import { isAnonymous, VolumeStore, volumeUsers } from "../../runtime/volumes.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild volume prune takes no operands");
  // A volume holds files of the containers' ids: measuring and removing them needs the user namespace.
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;

  const root = defaultStoreRoot(ctx.env);
  const volumes = new VolumeStore(root);
  const users = volumeUsers(await new ContainerStore(root).list());
  const removed: string[] = [];
  let bytes = 0;
  for (const volume of await volumes.list()) {
    if (users.has(volume.Name) || (args.values.all !== true && !isAnonymous(volume))) continue;
    bytes += await directorySize(volume.Mountpoint);
    await volumes.remove(volume.Name);
    removed.push(volume.Name);
  }
  if (removed.length > 0) ctx.stdout.write(`Deleted Volumes:\n${removed.join("\n")}\n\n`);
  ctx.stdout.write(`Total reclaimed space: ${formatSize(bytes)}\n`);
  return 0;
}
