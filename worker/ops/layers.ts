/**
 * A filesystem result (a stack of layer blobs in the content store) as unpacked layer
 * directories, ready for `Snapshotter.mountWritable`. The snapshotter unpacks images; a build
 * step's result is handed to it as the image those layers make, so that layers shared with a
 * base image (or an earlier build) are unpacked once, by chain ID.
 */
import type { Image, Layer } from "../../oci/image.js";
import { type ImageConfig, type Manifest, MediaType } from "../../oci/spec.js";
import { digestOf } from "../../oci/store/content.js";
import type { LayerRef } from "../../solver/worker.js";
import { chainIds, type WritableMount } from "../snapshot/index.js";
import type { OpContext } from "./context.js";

/** The unpacked directories of `layers`, lowest first (none for the empty filesystem). */
export async function prepareLayers(
  ctx: Pick<OpContext, "store" | "snapshotter" | "signal">,
  layers: readonly LayerRef[],
): Promise<string[]> {
  if (layers.length === 0) return [];
  return ctx.snapshotter.prepareImage(imageOfLayers(ctx, layers), ctx.signal);
}

/** An in-memory image whose filesystem is `layers`: what the snapshotter reads (layers and their diff_ids). */
function imageOfLayers(ctx: Pick<OpContext, "store">, layers: readonly LayerRef[]): Image {
  const config: ImageConfig = {
    architecture: "",
    os: "",
    config: {},
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
  };
  const rawConfig = Buffer.from(JSON.stringify(config));
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: digestOf(rawConfig), size: rawConfig.length },
    layers: layers.map((l) => l.descriptor),
  };
  const rawManifest = Buffer.from(JSON.stringify(manifest));
  const imageLayers: Layer[] = layers.map((l) => ({
    descriptor: l.descriptor,
    diffId: l.diffId,
    open: () => ctx.store.content.open(l.descriptor.digest),
  }));
  return {
    kind: "image",
    descriptor: { mediaType: MediaType.ociManifest, digest: digestOf(rawManifest), size: rawManifest.length },
    rawManifest,
    manifest,
    rawConfig,
    config,
    layers: imageLayers,
  };
}

/**
 * After `mount`'s changes became the top layer of `layers`: its upper directory is kept as that
 * layer unpacked, so the step that builds on this result mounts it at once instead of unpacking
 * the layer it was just diffed into. The chain ID it was kept as, if it was.
 */
export async function keepUnpacked(
  mount: WritableMount,
  layers: readonly LayerRef[],
): Promise<string | undefined> {
  const chainId = chainIds(layers.map((l) => l.diffId)).at(-1);
  if (chainId !== undefined && (await mount.keepAsLayer(chainId))) return chainId;
  return undefined;
}
