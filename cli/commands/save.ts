import path from "node:path";
import { UsageError } from "../../errors/index.js";
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
  // Where exports land (exporters/destination.ts): a file replaced only when complete, standard
  // output, or a device or pipe written in place (`-o /dev/stdout`).
  const { writeBytesTo } = await import("../../exporters/destination.js");
  const dest = output === undefined || output === "-" ? "-" : path.resolve(ctx.cwd, output);
  await writeBytesTo(archive, dest, "tbuild save", {
    signal: ctx.signal,
    stdout: ctx.stdout,
    fileOption: "-o FILE",
  });
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
