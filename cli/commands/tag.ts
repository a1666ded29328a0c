import { UsageError } from "../../errors/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { findLocalImage, openCommandStore } from "../store.js";
import { parseImageTag } from "../values.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [source, target, ...extra] = args.positionals;
  if (source === undefined || target === undefined || extra.length > 0) {
    throw new UsageError("tbuild tag takes a SOURCE image (name or ID) and a TARGET name");
  }
  const name = parseImageTag(target, "tbuild tag");
  const store = await openCommandStore(ctx);
  const record = await findLocalImage(store, source);
  await store.images.put(name, record.descriptor);
  return 0;
}
