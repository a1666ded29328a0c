/**
 * OCI or Docker schema2 media types for a manifest, its config and its layers. The bytes of a
 * layer are the same under either name; only the manifest changes (and so its digest).
 */
import { type LayerCompression, layerCompression } from "../oci/layer.js";
import { type Descriptor, type Manifest, MediaType } from "../oci/spec.js";

export type MediaTypes = "oci" | "docker";

/** Docker's name for an uncompressed layer (oci/spec.ts lists only the compressed one). */
const DOCKER_LAYER_UNCOMPRESSED = "application/vnd.docker.image.rootfs.diff.tar";

const LAYER_TYPES: Record<MediaTypes, Partial<Record<LayerCompression, string>>> = {
  oci: { gzip: MediaType.ociLayerGzip, zstd: MediaType.ociLayerZstd, uncompressed: MediaType.ociLayer },
  // Docker's schema2 has no zstd layer type.
  docker: { gzip: MediaType.dockerLayerGzip, uncompressed: DOCKER_LAYER_UNCOMPRESSED },
};

/** The media type of a layer blob compressed with `compression`, in the given family. */
export function layerMediaType(compression: LayerCompression, mediaTypes: MediaTypes): string {
  return LAYER_TYPES[mediaTypes][compression] ?? LAYER_TYPES.oci[compression]!;
}

/**
 * The manifest of a config and layers in the asked family. Docker's types cannot name a zstd
 * layer: then the whole manifest is OCI, as BuildKit does, and `warn` says so.
 */
export function manifestFor(
  config: { digest: string; size: number },
  layers: Descriptor[],
  wanted: MediaTypes,
  warn?: (message: string) => void,
): { manifest: Manifest; mediaTypes: MediaTypes } {
  let mediaTypes = wanted;
  const compressions = layers.map((layer) =>
    layer.mediaType === MediaType.dockerForeignLayerGzip ? undefined : layerCompression(layer.mediaType),
  );
  if (mediaTypes === "docker" && compressions.includes("zstd")) {
    warn?.("zstd layers need OCI media types: the image is written with OCI media types");
    mediaTypes = "oci";
  }
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: mediaTypes === "oci" ? MediaType.ociManifest : MediaType.dockerManifest,
    config: {
      mediaType: mediaTypes === "oci" ? MediaType.ociConfig : MediaType.dockerConfig,
      digest: config.digest,
      size: config.size,
    },
    layers: layers.map((layer, i) => {
      const compression = compressions[i];
      return {
        // A foreign layer keeps its own type: it is fetched from its URLs, never rewritten.
        mediaType: compression === undefined ? layer.mediaType : layerMediaType(compression, mediaTypes),
        digest: layer.digest,
        size: layer.size,
        ...(layer.urls !== undefined ? { urls: layer.urls } : {}),
      };
    }),
  };
  return { manifest, mediaTypes };
}
