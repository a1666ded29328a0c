import { isTbuildError, UsageError } from "../../errors/index.js";
import { type Image, type ImageIndex, readImageOrIndex } from "../../oci/image.js";
import { familiarReference, parseReference } from "../../oci/reference.js";
import type { Store } from "../../oci/store/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize, openCommandStore, shortId, timeAgo } from "../store.js";

/** One row of `tbuild images`, and one element of `--format json`. */
export interface ImageSummary {
  name: string;
  repository: string;
  tag: string;
  /** The manifest's or index's digest; `id` is its first 12 hex digits. */
  digest: string;
  id: string;
  mediaType: string;
  /** The image config's `created` (of the first platform held, for an index). */
  created?: string;
  /** Bytes in the store: manifests, configs and (compressed) layers of every platform held. */
  size: number;
  platforms: string[];
}

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild images takes no arguments");
  const format = (args.values.format as string | undefined) ?? "table";
  if (format !== "table" && format !== "json")
    throw new UsageError(`--format must be table or json, not "${format}"`);
  const store = await openCommandStore(ctx);
  const summaries: ImageSummary[] = [];
  for (const record of await store.images.list()) {
    let ref: ReturnType<typeof parseReference>;
    let facts: Awaited<ReturnType<typeof describe>>;
    try {
      ref = parseReference(record.name);
      facts = await describe(store, await readImageOrIndex(store.content, record.descriptor));
    } catch (err) {
      // One bad entry (a damaged blob, a name written by something else) must not hide the rest.
      const reason = isTbuildError(err)
        ? err.message
        : `${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
      ctx.warn(
        `${record.name} is not listed: it cannot be read (${reason}); 'tbuild rmi ${record.name}' removes it`,
      );
      continue;
    }
    summaries.push({
      name: record.name,
      repository: familiarReference({ domain: ref.domain, path: ref.path }),
      tag: ref.tag ?? "<none>",
      digest: record.descriptor.digest,
      id: shortId(record.descriptor.digest),
      mediaType: record.descriptor.mediaType,
      ...(facts.created !== undefined ? { created: facts.created } : {}),
      size: facts.size,
      platforms: facts.platforms,
    });
  }
  if (format === "json") {
    ctx.stdout.write(`${JSON.stringify(summaries, null, 2)}\n`);
    return 0;
  }
  const rows = [
    ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "PLATFORMS"],
    ...summaries.map((s) => [
      s.repository,
      s.tag,
      s.id,
      s.created ? timeAgo(s.created) : "N/A",
      formatSize(s.size),
      // An index of several platforms (a multi-platform build, a pull of several) shows them all.
      [...new Set(s.platforms)].join(",") || "-",
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const row of rows) {
    ctx.stdout.write(
      `${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]! + 3))).join("")}\n`,
    );
  }
  return 0;
}

async function describe(
  store: Store,
  item: Image | ImageIndex,
): Promise<{ created?: string; size: number; platforms: string[] }> {
  if (item.kind === "image") {
    const { config } = item;
    const size =
      item.descriptor.size +
      item.manifest.config.size +
      item.layers.reduce((sum, l) => sum + l.descriptor.size, 0);
    const platform = [config.os, config.architecture, config.variant].filter(Boolean).join("/");
    return { ...(config.created ? { created: config.created } : {}), size, platforms: [platform] };
  }
  let size = item.descriptor.size;
  let created: string | undefined;
  const platforms: string[] = [];
  const seen = new Set<string>();
  for (const child of await item.children()) {
    const facts = await describe(store, child);
    // Layers shared between platforms are stored once; counted once.
    size += facts.size - (child.kind === "image" ? sharedLayerBytes(child, seen) : 0);
    created ??= facts.created;
    // An attestation manifest (platform unknown/unknown) is about an image, not one to run.
    platforms.push(...facts.platforms.filter((p) => p !== "unknown/unknown"));
  }
  return { ...(created !== undefined ? { created } : {}), size, platforms };
}

function sharedLayerBytes(image: Image, seen: Set<string>): number {
  let shared = 0;
  for (const layer of image.layers) {
    if (seen.has(layer.descriptor.digest)) shared += layer.descriptor.size;
    seen.add(layer.descriptor.digest);
  }
  return shared;
}
