import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rename, unlink } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError, UsageError } from "../../errors/index.js";
import {
  type ArchiveImage,
  type DockerArchiveImage,
  dockerArchive,
  ociArchive,
} from "../../oci/archive/index.js";
import {
  type Image,
  type ImageIndex,
  readImage,
  readImageForPlatform,
  readImageIndex,
} from "../../oci/image.js";
import { hostPlatform, type Platform, parsePlatform } from "../../oci/platform.js";
import { isIndexMediaType } from "../../oci/spec.js";
import { type ImageRecord, normalizeImageName, type Store } from "../../oci/store/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { findLocalImages, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length === 0)
    throw new UsageError("tbuild save takes one or more images (names or IDs)");
  const format = (args.values.format as string | undefined) ?? "oci";
  if (format !== "oci" && format !== "docker")
    throw new UsageError(`--format must be oci or docker, not "${format}"`);
  const output = args.values.output as string | undefined;
  if ((output === undefined || output === "-") && (ctx.stdout as { isTTY?: boolean }).isTTY) {
    throw new UsageError(
      "tbuild save writes a tar archive: name a file with -o FILE, or redirect standard output",
    );
  }
  const platformText = args.values.platform as string | undefined;
  const platform = platformText ? parsePlatform(platformText) : undefined;
  const store = await openCommandStore(ctx);

  const selected: { names: string[]; record: ImageRecord }[] = [];
  for (const text of args.positionals) {
    const records = await findLocalImages(store, text);
    // By name: saved under that name. By ID: saved unnamed, as `docker save ID` does.
    const byName = records.some((r) => r.name === tryNormalize(text));
    const entry = selected.find((s) => s.record.descriptor.digest === records[0]!.descriptor.digest);
    const names = byName ? [records[0]!.name] : [];
    if (entry) entry.names.push(...names.filter((n) => !entry.names.includes(n)));
    else selected.push({ names, record: records[0]! });
  }

  const archive =
    format === "oci"
      ? ociArchive(
          await Promise.all(
            selected.map(
              async (s): Promise<ArchiveImage> => ({
                names: s.names,
                image: await ociItem(store, s.record, platform),
              }),
            ),
          ),
        )
      : dockerArchive(
          await Promise.all(
            selected.map(
              async (s): Promise<DockerArchiveImage> => ({
                names: s.names,
                image: await platformImage(store, s.record, platform ?? hostPlatform()),
              }),
            ),
          ),
        );
  await writeArchive(Readable.from(archive, { objectMode: false }), output, ctx);
  return 0;
}

function tryNormalize(text: string): string | undefined {
  try {
    return normalizeImageName(text);
  } catch {
    return undefined;
  }
}

/** What an OCI archive holds: a whole index when the store has all of it and no platform was asked for. */
async function ociItem(
  store: Store,
  record: ImageRecord,
  platform: Platform | undefined,
): Promise<Image | ImageIndex> {
  if (!isIndexMediaType(record.descriptor.mediaType)) return readImage(store.content, record.descriptor);
  if (platform === undefined) {
    const index = await readImageIndex(store.content, record.descriptor);
    if (await index.complete()) return index;
  }
  return platformImage(store, record, platform ?? hostPlatform());
}

async function platformImage(store: Store, record: ImageRecord, platform: Platform): Promise<Image> {
  if (!isIndexMediaType(record.descriptor.mediaType)) return readImage(store.content, record.descriptor);
  return readImageForPlatform(store.content, record.descriptor, platform, record.name);
}

/**
 * Writes to standard output, or to FILE through a temp file beside it renamed at the end: a failed
 * or interrupted save never leaves a truncated archive under the name asked for.
 */
async function writeArchive(
  archive: Readable,
  output: string | undefined,
  ctx: CommandContext,
): Promise<void> {
  if (output === undefined || output === "-") {
    await pipeline(archive, ctx.stdout, { signal: ctx.signal });
    return;
  }
  const target = path.resolve(ctx.cwd, output);
  const temp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.${process.pid}-${randomBytes(6).toString("hex")}.tmp`,
  );
  try {
    await pipeline(archive, createWriteStream(temp, { flags: "wx", flush: true }), { signal: ctx.signal });
    await rename(temp, target);
  } catch (err) {
    await unlink(temp).catch(() => {});
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") {
      throw new TbuildError(
        "E_DISK_FULL",
        `no space left on the device of ${path.dirname(target)} to write ${output}: the partial archive was removed; free some space and run again`,
        { cause: err },
      );
    }
    if (code === "ENOENT" || code === "EACCES" || code === "EROFS" || code === "ENOTDIR") {
      throw new TbuildError("E_CANNOT_WRITE", `cannot write ${output} (${code})`, { cause: err });
    }
    throw err;
  }
}
