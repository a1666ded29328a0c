import { isTbuildError, UsageError } from "../../errors/index.js";
import { defaultStoreRoot, openStore } from "../../oci/store/index.js";
import { ContainerStore } from "../../runtime/containers.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0)
    throw new UsageError("tbuild rm takes one or more containers (names or IDs)");
  // A writable layer holds files of the image's ids: removing them needs the user namespace.
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;

  const store = await openStore(defaultStoreRoot(ctx.env));
  const containers = new ContainerStore(store.root);
  const { removeContainer } = await import("../../runtime/container.js");
  // As docker does: each operand on its own, the others still removed when one fails.
  let failed = false;
  for (const text of args.positionals) {
    try {
      const record = await containers.find(text);
      await removeContainer(store, record, {
        force: args.values.force === true,
        volumes: args.values.volumes === true,
      });
      ctx.stdout.write(`${text}\n`);
    } catch (err) {
      if (!isTbuildError(err)) throw err;
      ctx.stderr.write(`ERROR: ${err.message}\n`);
      failed = true;
    }
  }
  return failed ? 1 : 0;
}
