/**
 * Image assembly: a build's result (a stack of layers already in the content store) and the image
 * config the frontend computed become an image — config and manifest blobs in the content store —
 * as BuildKit's image writer makes one. Nothing here reads a layer: assembly is a few small JSON
 * writes, however large the image.
 */
import { TbuildError } from "../errors/index.js";
import { byBytes } from "../oci/archive/byte-order.js";
import { creationTime } from "../oci/source-date-epoch.js";
import type { Descriptor, History, ImageConfig, Manifest } from "../oci/spec.js";
import type { ContentStore } from "../oci/store/content.js";
import type { FsResult } from "../solver/worker.js";
import { type MediaTypes, manifestFor } from "./media-types.js";

export interface AssembledImage {
  manifestDescriptor: Descriptor;
  manifest: Manifest;
  configDescriptor: Descriptor;
  config: ImageConfig;
}

export interface AssembleOptions {
  /** `SOURCE_DATE_EPOCH` in seconds: the config's and the history's `created`, instead of now. */
  sourceDateEpoch?: number;
  /** The manifest's media types; OCI unless asked otherwise. */
  mediaTypes?: MediaTypes;
  /** The clock, for tests. */
  now?: Date;
  /** Hears of history that had to be repaired to match the layers. */
  warn?(message: string): void;
}

/** What a history entry added for a layer the build's history did not account for says it is. */
const UNACCOUNTED_LAYER_COMMENT = "tbuild.exporter.image.v0";

/**
 * The container config with its maps' keys in order (Labels, ExposedPorts, Volumes), as BuildKit's
 * Go encoder writes every map: the same config whichever order a Dockerfile set them in.
 */
function mapsSorted(container: ImageConfig["config"]): ImageConfig["config"] {
  if (container === undefined) return container;
  const sorted = { ...container };
  for (const key of ["Labels", "ExposedPorts", "Volumes"] as const) {
    const map = container[key] as Record<string, unknown> | undefined;
    if (map !== undefined) {
      (sorted as Record<string, unknown>)[key] = Object.fromEntries(
        Object.keys(map)
          .sort(byBytes)
          .map((k) => [k, map[k]]),
      );
    }
  }
  return sorted;
}

/**
 * Writes the final image's config and manifest to the content store:
 * - `rootfs.diff_ids` lists every layer of the result;
 * - the history is aligned so that its non-empty entries are exactly the layers;
 * - `created` (and every history entry's without one) is now, or `SOURCE_DATE_EPOCH`, which also
 *   clamps later history times, so the same inputs give the same digests;
 * - `labels` (`--label`) are merged over the config's.
 */
export async function assembleImage(
  content: ContentStore,
  build: { result: FsResult; config: ImageConfig; labels?: Record<string, string> },
  options: AssembleOptions = {},
): Promise<AssembledImage> {
  const created = creationTime(options.sourceDateEpoch, options.now);
  const clamp = options.sourceDateEpoch !== undefined;
  const {
    created: _created,
    rootfs: _rootfs,
    history: baseHistory,
    config: container,
    ...rest
  } = build.config;
  const labels = build.labels ?? {};
  const config: ImageConfig = {
    created,
    ...rest,
    config: mapsSorted(
      Object.keys(labels).length > 0
        ? { ...container, Labels: { ...container.Labels, ...labels } }
        : container,
    ),
    rootfs: { type: "layers", diff_ids: build.result.layers.map((layer) => layer.diffId) },
    history: alignHistory(baseHistory ?? [], build.result.layers.length, created, clamp, options.warn),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configBlob = await content.writeBytes(configBytes);
  const written = manifestFor(
    { digest: configBlob.digest, size: configBlob.size },
    build.result.layers.map((layer) => layer.descriptor),
    options.mediaTypes ?? "oci",
    options.warn,
  );
  const manifestBytes = Buffer.from(JSON.stringify(written.manifest));
  const manifestBlob = await content.writeBytes(manifestBytes);
  return {
    manifestDescriptor: { mediaType: written.manifest.mediaType!, ...manifestBlob },
    manifest: written.manifest,
    configDescriptor: written.manifest.config,
    config,
  };
}

/**
 * The history made to match the layers, as BuildKit's normalizeLayersAndHistory does: non-empty
 * entries beyond the layers become empty, layers beyond the non-empty entries get an entry each.
 * Either means the frontend and the solver disagree, which a warning says.
 */
function alignHistory(
  history: History[],
  layers: number,
  created: string,
  clamp: boolean,
  warn?: (message: string) => void,
): History[] {
  const nonEmpty = history.filter((h) => h.empty_layer !== true).length;
  let aligned = history.map((h) => ({ ...h }));
  if (nonEmpty > layers) {
    warn?.(
      `the image history names ${nonEmpty} layers but the build made ${layers}: the last ${nonEmpty - layers} entries are marked empty`,
    );
    let counted = 0;
    aligned = aligned.map((h) => {
      if (h.empty_layer === true) return h;
      counted++;
      return counted > layers ? { ...h, empty_layer: true } : h;
    });
  } else if (layers > nonEmpty) {
    warn?.(
      `the build made ${layers} layers but the image history names ${nonEmpty}: ${layers - nonEmpty} entries are added for them`,
    );
    for (let i = nonEmpty; i < layers; i++) aligned.push({ comment: UNACCOUNTED_LAYER_COMMENT });
  }
  return aligned.map((entry) => {
    // What this build added has no time yet; with SOURCE_DATE_EPOCH nothing may be later than it.
    const keep = entry.created !== undefined && !(clamp && isLater(entry.created, created));
    return keep ? entry : withCreatedFirst(entry, created);
  });
}

function isLater(time: string, than: string): boolean {
  const a = Date.parse(time);
  // A time that does not parse cannot be compared: replaced, so the result is reproducible.
  return Number.isNaN(a) || a > Date.parse(than);
}

/** `created` first, as Docker and BuildKit write history entries. */
function withCreatedFirst(entry: History, created: string): History {
  const { created: _created, ...rest } = entry;
  return { created, ...rest };
}

/**
 * An image already in the content store (a remote worker's, brought back) as the exporters take
 * an assembled one: its manifest and config as stored, and its layers paired with their diff_ids.
 * A client assembles the index of a build whose platforms were built on other workers from these.
 */
export async function storedImage(
  content: ContentStore,
  manifestDescriptor: Descriptor,
): Promise<{ assembled: AssembledImage; result: FsResult }> {
  const manifest = await content.readJson<Manifest>(manifestDescriptor.digest);
  const config = await content.readJson<ImageConfig>(manifest.config.digest);
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new TbuildError(
      "E_INVALID_IMAGE",
      `image ${manifestDescriptor.digest} lists ${manifest.layers.length} layers and ${diffIds.length} diff_ids`,
    );
  }
  return {
    assembled: { manifestDescriptor, manifest, configDescriptor: manifest.config, config },
    result: { layers: manifest.layers.map((descriptor, i) => ({ descriptor, diffId: diffIds[i]! })) },
  };
}
