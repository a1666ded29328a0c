import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import { applyConfigChanges } from "../../frontend/lower/config-changes.js";
import { importRootfs, type RootfsSource } from "../../oci/archive/index.js";
import { hostPlatform, parsePlatform } from "../../oci/platform.js";
import { creationTime, parseSourceDateEpoch } from "../../oci/source-date-epoch.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { openCommandStore } from "../store.js";
import { parseImageTag } from "../values.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [sourceArg, refArg, ...extra] = args.positionals;
  if (sourceArg === undefined || refArg === undefined || extra.length > 0) {
    throw new UsageError(
      "tbuild import takes a root filesystem (FILE, DIR or - for standard input) and a REF",
    );
  }
  const name = parseImageTag(refArg, "tbuild import");
  const platformText = args.values.platform as string | undefined;
  const platform = platformText ? parsePlatform(platformText) : hostPlatform();
  const config = applyConfigChanges({}, (args.values.change as string[] | undefined) ?? []);
  // SOURCE_DATE_EPOCH, as BuildKit honours it, makes an import reproducible; else now.
  const created = creationTime(parseSourceDateEpoch(ctx.env.SOURCE_DATE_EPOCH));
  const source = await rootfsSource(sourceArg, ctx);
  const message = (args.values.message as string | undefined) ?? `Imported from ${sourceArg}`;

  const store = await openCommandStore(ctx);
  const imported = await importRootfs(store.content, source, {
    platform,
    config,
    created,
    comment: message,
    signal: ctx.signal,
    onSkip: (relative, reason) => ctx.warn(`skipped ${relative}: ${reason}`),
  });
  await store.images.put(name, imported.descriptor);
  ctx.stdout.write(`${imported.descriptor.digest}\n`);
  return 0;
}

async function rootfsSource(text: string, ctx: CommandContext): Promise<RootfsSource> {
  if (text === "-") {
    return { kind: "archive", stream: process.stdin, name: "standard input" };
  }
  const file = path.resolve(ctx.cwd, text);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(file);
  } catch (err) {
    throw new TbuildError(
      "E_NO_SUCH_FILE",
      `cannot import ${text}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file or directory" : (err as Error).message}`,
    );
  }
  if (info.isDirectory()) return { kind: "directory", path: file };
  return { kind: "archive", stream: createReadStream(file, { highWaterMark: 1 << 20 }), name: text };
}
