/**
 * `tbuild volume rm [-f] VOLUME...`: removes volumes no container mounts. One any container
 * (running or stopped) uses is refused, naming the containers, as docker refuses it; `-f` only
 * says nothing of names not in the store. Each operand on its own: the others still go.
 */
import { isTbuildError, UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/index.js";
import { ContainerStore } from "../../runtime/containers.js";
import {
  InvalidVolumeNameError,
  isVolumeName,
  VolumeInUseError,
  VolumeNotFoundError,
  VolumeStore,
  volumeUsers,
} from "../../runtime/volumes.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0) throw new UsageError("tbuild volume rm takes one or more volumes");
  // Checked before a rootless re-exec: a bad name is the user's to fix at once.
  for (const name of args.positionals) if (!isVolumeName(name)) throw new InvalidVolumeNameError(name);
  // A volume holds files of the containers' ids: removing them needs the user namespace.
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;

  const root = defaultStoreRoot(ctx.env);
  const volumes = new VolumeStore(root);
  const users = volumeUsers(await new ContainerStore(root).list());
  let failed = false;
  for (const name of args.positionals) {
    try {
      if ((await volumes.inspect(name)) === undefined) {
        if (args.values.force === true) continue;
        throw new VolumeNotFoundError(name);
      }
      const using = users.get(name);
      if (using !== undefined) throw new VolumeInUseError(name, using);
      await volumes.remove(name);
      ctx.stdout.write(`${name}\n`);
    } catch (err) {
      if (!isTbuildError(err)) throw err;
      ctx.stderr.write(`ERROR: ${err.message}\n`);
      failed = true;
    }
  }
  return failed ? 1 : 0;
}
