/**
 * An image is an interface; where it lives is an adapter (go-containerregistry's shape). `Image`
 * and `ImageIndex` are read-only views over a `BlobSource`: the content store, an archive being
 * read, a registry. Sources give images (`readImage`, `readImageIndex`); destinations take them
 * (`oci/archive`: OCI and docker archives; the store itself). Manifests and configs are small and
 * held parsed; layers are opened as streams, never read whole.
 */
import { TbuildError } from "../errors/index.js";
import { formatPlatform, type Platform, platformMatches, selectPlatform } from "./platform.js";
import {
  type Descriptor,
  type ImageConfig,
  type Index,
  isIndexMediaType,
  isManifestMediaType,
  type Manifest,
} from "./spec.js";

/** Where an image's blobs are read from. The content store is one. */
export interface BlobSource {
  /** A streaming read of one blob. */
  open(digest: string): NodeJS.ReadableStream;
  /** A whole small blob (manifest, index, config). */
  readBytes(digest: string): Promise<Buffer>;
  /** Whether the source holds the blob. */
  has(digest: string): Promise<boolean>;
}

/** A filesystem layer: its blob as stored (often compressed) and the digest of its uncompressed tar. */
export interface Layer {
  readonly descriptor: Descriptor;
  /** `rootfs.diff_ids[i]` of the config: sha256 of the uncompressed tar. */
  readonly diffId: string;
  /** The blob's bytes, compressed as `descriptor.mediaType` says. */
  open(): NodeJS.ReadableStream;
}

/** One platform's image: its manifest, its config, its layers. */
export interface Image {
  readonly kind: "image";
  readonly descriptor: Descriptor;
  readonly rawManifest: Buffer;
  readonly manifest: Manifest;
  readonly rawConfig: Buffer;
  readonly config: ImageConfig;
  readonly layers: readonly Layer[];
}

/** A multi-platform image: an OCI index or a Docker manifest list. */
export interface ImageIndex {
  readonly kind: "index";
  readonly descriptor: Descriptor;
  readonly rawIndex: Buffer;
  readonly index: Index;
  /** Whether every manifest (and nested index) it lists is in its source. */
  complete(): Promise<boolean>;
  /** The manifests and nested indexes it lists that its source holds, in order. */
  children(): Promise<(Image | ImageIndex)[]>;
}

/** A manifest, config or index that does not parse as one. */
export class InvalidImageError extends TbuildError {
  constructor(digest: string, reason: string) {
    super("E_INVALID_IMAGE", `image ${digest} is not a valid image: ${reason}`);
  }
}

/** No manifest of an index matches the wanted platform. */
export class PlatformNotFoundError extends TbuildError {
  constructor(what: string, wanted: Platform, available: Platform[]) {
    const list = available.length > 0 ? available.map(formatPlatform).join(", ") : "none stored locally";
    super(
      "E_PLATFORM_NOT_FOUND",
      `${what} has no image for ${formatPlatform(wanted)} (platforms: ${list}); pick one with --platform`,
    );
  }
}

function parseJson<T>(bytes: Buffer, digest: string, what: string): T {
  try {
    return JSON.parse(bytes.toString("utf8")) as T;
  } catch (err) {
    throw new InvalidImageError(digest, `its ${what} is not JSON (${(err as Error).message})`);
  }
}

/** The image a manifest descriptor names, read from `source`. */
export async function readImage(source: BlobSource, descriptor: Descriptor): Promise<Image> {
  if (!isManifestMediaType(descriptor.mediaType)) {
    throw new InvalidImageError(
      descriptor.digest,
      `media type ${descriptor.mediaType} is not an image manifest`,
    );
  }
  const rawManifest = await source.readBytes(descriptor.digest);
  const manifest = parseJson<Manifest>(rawManifest, descriptor.digest, "manifest");
  if (manifest.config === undefined || !Array.isArray(manifest.layers)) {
    throw new InvalidImageError(descriptor.digest, "its manifest has no config or no layers list");
  }
  const rawConfig = await source.readBytes(manifest.config.digest);
  const config = parseJson<ImageConfig>(rawConfig, descriptor.digest, "config");
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new InvalidImageError(
      descriptor.digest,
      `its manifest lists ${manifest.layers.length} layers but its config ${diffIds.length} diff_ids`,
    );
  }
  const layers = manifest.layers.map(
    (layer, i): Layer => ({
      descriptor: layer,
      diffId: diffIds[i]!,
      open: () => source.open(layer.digest),
    }),
  );
  return { kind: "image", descriptor, rawManifest, manifest, rawConfig, config, layers };
}

/** The index (or manifest list) a descriptor names, read from `source`. */
export async function readImageIndex(source: BlobSource, descriptor: Descriptor): Promise<ImageIndex> {
  if (!isIndexMediaType(descriptor.mediaType)) {
    throw new InvalidImageError(
      descriptor.digest,
      `media type ${descriptor.mediaType} is not an image index`,
    );
  }
  const rawIndex = await source.readBytes(descriptor.digest);
  const index = parseJson<Index>(rawIndex, descriptor.digest, "index");
  if (!Array.isArray(index.manifests))
    throw new InvalidImageError(descriptor.digest, "its index has no manifests");
  const imageChildren = index.manifests.filter(
    (m) => isManifestMediaType(m.mediaType) || isIndexMediaType(m.mediaType),
  );
  return {
    kind: "index",
    descriptor,
    rawIndex,
    index,
    async complete() {
      for (const child of imageChildren) {
        if (!(await source.has(child.digest))) return false;
        if (isIndexMediaType(child.mediaType) && !(await (await readImageIndex(source, child)).complete())) {
          return false;
        }
      }
      return true;
    },
    async children() {
      const out: (Image | ImageIndex)[] = [];
      for (const child of imageChildren) {
        if (!(await source.has(child.digest))) continue;
        out.push(await readImageOrIndex(source, child));
      }
      return out;
    },
  };
}

/** An image or an index, by the descriptor's media type. */
export async function readImageOrIndex(
  source: BlobSource,
  descriptor: Descriptor,
): Promise<Image | ImageIndex> {
  return isIndexMediaType(descriptor.mediaType)
    ? readImageIndex(source, descriptor)
    : readImage(source, descriptor);
}

/**
 * The image for `platform`: the descriptor's own image when it is a manifest (its config must
 * match the platform), else the best match among the index's manifests that `source` holds.
 */
export async function readImageForPlatform(
  source: BlobSource,
  descriptor: Descriptor,
  platform: Platform,
  what: string,
): Promise<Image> {
  if (!isIndexMediaType(descriptor.mediaType)) {
    const image = await readImage(source, descriptor);
    const own: Platform = {
      os: image.config.os,
      architecture: image.config.architecture,
      ...(image.config.variant ? { variant: image.config.variant } : {}),
    };
    if (!platformMatches(platform, own)) throw new PlatformNotFoundError(what, platform, [own]);
    return image;
  }
  const index = await readImageIndex(source, descriptor);
  const candidates: Descriptor[] = [];
  for (const child of index.index.manifests) {
    if (child.platform !== undefined && (await source.has(child.digest))) candidates.push(child);
  }
  const chosen = selectPlatform(platform, candidates, (c) => c.platform);
  if (chosen === undefined) {
    throw new PlatformNotFoundError(
      what,
      platform,
      candidates.map((c) => c.platform!),
    );
  }
  return readImageForPlatform(source, chosen, platform, what);
}
