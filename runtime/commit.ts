/**
 * `docker commit`: a container's writable layer, diffed into a layer tar, stacked on the layers of
 * the image it ran, with the container's config (the image's plus the run flags, plus `--change`
 * instructions) and a history entry naming the command. The image keeps its manifest's media type
 * family (OCI or Docker schema 2), so the new manifest reads like the old one.
 */

import { TbuildError } from "../errors/index.js";
import { applyConfigChanges } from "../frontend/lower/config-changes.js";
import { type Image, readImage } from "../oci/image.js";
import { writeLayer } from "../oci/layer.js";
import { type Descriptor, type ImageConfig, type Manifest, MediaType } from "../oci/spec.js";
import { BlobNotFoundError, type Store } from "../oci/store/index.js";
import { Snapshotter } from "../worker/snapshot/index.js";
import type { ContainerRecord } from "./containers.js";

/** The diff_id of a tar with no entries (two zero blocks): docker's "empty layer". */
export const EMPTY_LAYER_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

export interface CommitOptions {
  /** `--change` instructions (`CMD ["x"]`, `ENV A=1`), applied over the container's config as a Dockerfile applies them. */
  changes?: readonly string[];
  comment?: string;
  author?: string;
  /** RFC 3339: the image's and the history entry's `created`. */
  created: string;
  /** Clamp the layer's timestamps to SOURCE_DATE_EPOCH. */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
}

export interface CommittedImage {
  descriptor: Descriptor;
  manifest: Manifest;
  config: ImageConfig;
  /** False when the container changed nothing: no layer was added (history says `empty_layer`). */
  addedLayer: boolean;
}

/** Makes the image; the caller names it in the image store. */
export async function commitContainer(
  store: Store,
  record: ContainerRecord,
  options: CommitOptions,
): Promise<CommittedImage> {
  const base = await readImage(store.content, record.image.descriptor).catch((err: unknown) => {
    if (!(err instanceof BlobNotFoundError)) throw err;
    throw new TbuildError(
      "E_CONTAINER_IMAGE_GONE",
      `the image container ${record.name} was made from (${record.image.name}, ${record.image.descriptor.digest}) is no longer in the store (removed with 'tbuild rmi'?): pull or import it again, then commit`,
      { cause: err },
    );
  });
  const snapshotter = new Snapshotter(store.root, store.content);
  const lowers = await snapshotter.prepareImage(base, options.signal);
  const writable = await snapshotter.openWritable(record.id, lowers);
  let layer: Awaited<ReturnType<typeof writeLayer>>;
  try {
    layer = await writeLayer(
      store.content,
      writable.diff(
        options.sourceDateEpoch !== undefined ? { sourceDateEpoch: options.sourceDateEpoch } : {},
      ),
      { compression: "gzip", ...(options.signal ? { signal: options.signal } : {}) },
    );
  } finally {
    await writable.release();
  }
  const addedLayer = layer.diffId !== EMPTY_LAYER_DIFF_ID;
  const config = committedConfig(base, record, options, addedLayer ? layer.diffId : undefined);
  const docker =
    base.manifest.mediaType === MediaType.dockerManifest ||
    base.descriptor.mediaType === MediaType.dockerManifest;
  const layerDescriptor: Descriptor = {
    ...layer.descriptor,
    ...(docker ? { mediaType: MediaType.dockerLayerGzip } : {}),
  };
  const configBlob = await store.content.writeBytes(Buffer.from(JSON.stringify(config)));
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
    config: { mediaType: base.manifest.config.mediaType, ...configBlob },
    layers: [...base.manifest.layers, ...(addedLayer ? [layerDescriptor] : [])],
  };
  const manifestBlob = await store.content.writeBytes(Buffer.from(JSON.stringify(manifest)));
  return {
    descriptor: { mediaType: manifest.mediaType!, ...manifestBlob },
    manifest,
    config,
    addedLayer,
  };
}

function committedConfig(
  base: Image,
  record: ContainerRecord,
  options: CommitOptions,
  diffId: string | undefined,
): ImageConfig {
  const container = applyConfigChanges(record.config, options.changes ?? []);
  const history = {
    created: options.created,
    // Docker names the step by the container's Cmd, joined with spaces.
    created_by: (record.config.Cmd ?? []).join(" "),
    ...(options.author !== undefined ? { author: options.author } : {}),
    ...(options.comment !== undefined ? { comment: options.comment } : {}),
    ...(diffId === undefined ? { empty_layer: true } : {}),
  };
  const { author: _author, ...rest } = base.config;
  return {
    ...rest,
    created: options.created,
    ...(options.author !== undefined ? { author: options.author } : {}),
    config: container,
    rootfs: { type: "layers", diff_ids: [...base.config.rootfs.diff_ids, ...(diffId ? [diffId] : [])] },
    history: [...(base.config.history ?? []), history],
  };
}
