/**
 * `tbuild volume inspect VOLUME...`: a JSON array of the volumes, in docker's fields (Name,
 * Driver, Mountpoint, CreatedAt, Labels, Scope, Options). A name not in the store is an error
 * after the others are printed, as docker does.
 */
import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { type VolumeInfo, VolumeNotFoundError, VolumeStore } from "../../runtime/volumes.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0) throw new UsageError("tbuild volume inspect takes one or more volumes");
  const volumes = new VolumeStore(defaultStoreRoot(ctx.env));
  const found: VolumeInfo[] = [];
  const errors: string[] = [];
  for (const name of args.positionals) {
    const volume = await volumes.inspect(name);
    if (volume === undefined) errors.push(new VolumeNotFoundError(name).message);
    else found.push(volume);
  }
  ctx.stdout.write(`${JSON.stringify(found, null, 4)}\n`);
  for (const message of errors) ctx.stderr.write(`ERROR: ${message}\n`);
  return errors.length > 0 ? 1 : 0;
}
