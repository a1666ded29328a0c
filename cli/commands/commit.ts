import { TbuildError, UsageError } from "../../errors/index.js";
import { applyConfigChanges } from "../../frontend/lower/config-changes.js";
import { parseSourceDateEpoch } from "../../oci/source-date-epoch.js";
import { defaultStoreRoot, openStore } from "../../oci/store/index.js";
import { ContainerStore, currentState } from "../../runtime/containers.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { parseImageTag } from "../values.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [containerText, imageText, ...extra] = args.positionals;
  if (containerText === undefined || imageText === undefined || extra.length > 0) {
    throw new UsageError("tbuild commit takes a CONTAINER (name or ID) and an IMAGE name");
  }
  const name = parseImageTag(imageText, "tbuild commit");
  // Checked before the re-exec, so mistakes are reported without entering a namespace.
  const changes = (args.values.change as string[] | undefined) ?? [];
  applyConfigChanges({}, changes);
  const epoch = parseSourceDateEpoch(ctx.env.SOURCE_DATE_EPOCH);
  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  const record = await containers.find(containerText);
  if (currentState(record).status === "running") {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `container ${containerText} is running: committing a running container is not supported yet; commit it once it has exited`,
    );
  }

  // The writable layer holds files of the image's ids: reading them all needs the user namespace.
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;

  const store = await openStore(defaultStoreRoot(ctx.env));
  const { commitContainer } = await import("../../runtime/commit.js");
  const created =
    epoch === undefined
      ? new Date().toISOString()
      : new Date(epoch * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  const committed = await commitContainer(store, record, {
    changes,
    created,
    ...(args.values.message !== undefined ? { comment: args.values.message as string } : {}),
    ...(args.values.author !== undefined ? { author: args.values.author as string } : {}),
    ...(epoch !== undefined ? { sourceDateEpoch: epoch } : {}),
    signal: ctx.signal,
  });
  await store.images.put(name, committed.descriptor);
  ctx.stdout.write(`${committed.descriptor.digest}\n`);
  return 0;
}
