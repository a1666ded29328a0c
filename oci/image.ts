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
  MediaType,
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

/**
 * A manifest, config or index that is not one. `what` names the image (`image sha256:…`); `reason`
 * says what is wrong with it, for callers that name the image their own way (a pull names the
 * reference and the registry).
 */
export class InvalidImageError extends TbuildError {
  readonly reason: string;

  constructor(what: string, reason: string) {
    super("E_INVALID_IMAGE", `${what} is not a valid image: ${reason}`);
    this.reason = reason;
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

/** Configs are small JSON; a bigger one is not read into memory. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/**
 * The checks below are the shape an image's JSON documents must have before anything trusts a
 * field of them: whatever sent them (a registry, an archive, the store itself) may be hostile or
 * broken, and a `null` manifest must be an error naming the image, not a TypeError.
 */
function jsonObject(bytes: Buffer, what: string, kind: string): Record<string, unknown> {
  if (bytes.length === 0) throw new InvalidImageError(what, `its ${kind} is empty`);
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new InvalidImageError(what, `its ${kind} is not JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const shown = value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
    throw new InvalidImageError(what, `its ${kind} is ${shown}, not a JSON object`);
  }
  return value as Record<string, unknown>;
}

const DIGEST = /^(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$/;

/** What is wrong with a descriptor, if anything (`where`: "its config", "its layer 2"). */
function descriptorProblem(value: unknown, where: string): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    return `${where} is not a descriptor`;
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== "string") return `${where} has no mediaType`;
  if (typeof d.digest !== "string" || !DIGEST.test(d.digest)) {
    return `${where} has an invalid digest ${JSON.stringify(d.digest)}`;
  }
  if (typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0) {
    return `${where} has an invalid size ${JSON.stringify(d.size)}`;
  }
  return undefined;
}

/** A manifest's bytes, checked: schema 2, a config descriptor, a list of layer descriptors. */
export function parseManifest(bytes: Buffer, what: string): Manifest {
  const manifest = jsonObject(bytes, what, "manifest");
  if (manifest.schemaVersion !== 2) {
    throw new InvalidImageError(
      what,
      `its manifest has schemaVersion ${JSON.stringify(manifest.schemaVersion)}, not 2`,
    );
  }
  if (manifest.config === undefined) throw new InvalidImageError(what, "its manifest has no config");
  if (!Array.isArray(manifest.layers)) throw new InvalidImageError(what, "its manifest has no layers list");
  const problem =
    descriptorProblem(manifest.config, "its manifest's config") ??
    manifest.layers
      .map((layer, i) => descriptorProblem(layer, `its manifest's layer ${i + 1}`))
      .find(Boolean);
  if (problem) throw new InvalidImageError(what, problem);
  return manifest as unknown as Manifest;
}

/** An index's bytes, checked: a list of descriptors. */
export function parseIndex(bytes: Buffer, what: string): Index {
  const index = jsonObject(bytes, what, "index");
  if (!Array.isArray(index.manifests)) throw new InvalidImageError(what, "its index has no manifests list");
  const problem = index.manifests
    .map((entry, i) => descriptorProblem(entry, `its index's entry ${i + 1}`))
    .find(Boolean);
  if (problem) throw new InvalidImageError(what, problem);
  return index as unknown as Index;
}

/** A config's bytes, checked: platform strings, a diff_id per layer, and the fields a container reads. */
export function parseImageConfig(bytes: Buffer, what: string, layerCount: number): ImageConfig {
  const config = jsonObject(bytes, what, "config");
  for (const key of ["os", "architecture"] as const) {
    if (typeof config[key] !== "string") throw new InvalidImageError(what, `its config has no ${key}`);
  }
  const rootfs = config.rootfs as { diff_ids?: unknown } | null | undefined;
  const diffIds = typeof rootfs === "object" && rootfs !== null ? rootfs.diff_ids : undefined;
  if (!Array.isArray(diffIds)) throw new InvalidImageError(what, "its config has no rootfs.diff_ids list");
  const badDiffId = diffIds.find((id) => typeof id !== "string" || !DIGEST.test(id));
  if (badDiffId !== undefined) {
    throw new InvalidImageError(what, `its config has an invalid diff_id ${JSON.stringify(badDiffId)}`);
  }
  if (diffIds.length !== layerCount) {
    throw new InvalidImageError(
      what,
      `its manifest lists ${layerCount} layers but its config ${diffIds.length} diff_ids`,
    );
  }
  const container = config.config;
  if (container !== undefined && container !== null) {
    if (typeof container !== "object" || Array.isArray(container)) {
      throw new InvalidImageError(what, "its config's config is not an object");
    }
    for (const key of ["Env", "Cmd", "Entrypoint"]) {
      const value = (container as Record<string, unknown>)[key];
      if (value === undefined || value === null) continue;
      if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) {
        throw new InvalidImageError(what, `its config's ${key} is not a list of strings`);
      }
    }
  }
  // A config without `config` (allowed by the spec) reads as an empty one.
  return { ...config, config: (container ?? {}) as ImageConfig["config"] } as unknown as ImageConfig;
}

/** The image a manifest descriptor names, read from `source`. */
export async function readImage(source: BlobSource, descriptor: Descriptor): Promise<Image> {
  const what = `image ${descriptor.digest}`;
  if (!isManifestMediaType(descriptor.mediaType)) {
    throw new InvalidImageError(what, `media type ${descriptor.mediaType} is not an image manifest`);
  }
  const rawManifest = await source.readBytes(descriptor.digest);
  const manifest = parseManifest(rawManifest, what);
  if (manifest.config.size > MAX_CONFIG_BYTES) {
    throw new InvalidImageError(
      what,
      `its config is ${manifest.config.size} bytes, more than a config can be`,
    );
  }
  const rawConfig = await source.readBytes(manifest.config.digest);
  const config =
    manifest.config.mediaType === MediaType.ociEmpty
      ? artifactConfig(manifest)
      : parseImageConfig(rawConfig, what, manifest.layers.length);
  const diffIds = config.rootfs.diff_ids;
  const layers = manifest.layers.map(
    (layer, i): Layer => ({
      descriptor: layer,
      diffId: diffIds[i]!,
      open: () => source.open(layer.digest),
    }),
  );
  return { kind: "image", descriptor, rawManifest, manifest, rawConfig, config, layers };
}

/**
 * An OCI artifact (an attestation manifest: an empty config, blobs as its layers) reads as an
 * image of platform unknown/unknown whose layers are its blobs, as BuildKit's legacy form of it
 * says in its config: no container can be made of it, and copies and archives carry it whole.
 */
function artifactConfig(manifest: Manifest): ImageConfig {
  return {
    architecture: "unknown",
    os: "unknown",
    config: {},
    rootfs: { type: "layers", diff_ids: manifest.layers.map((layer) => layer.digest) },
  } as unknown as ImageConfig;
}

/** The index (or manifest list) a descriptor names, read from `source`. */
export async function readImageIndex(source: BlobSource, descriptor: Descriptor): Promise<ImageIndex> {
  const what = `image ${descriptor.digest}`;
  if (!isIndexMediaType(descriptor.mediaType)) {
    throw new InvalidImageError(what, `media type ${descriptor.mediaType} is not an image index`);
  }
  const rawIndex = await source.readBytes(descriptor.digest);
  const index = parseIndex(rawIndex, what);
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
  return readImageForPlatform(source, manifestForPlatform(candidates, platform, what), platform, what);
}

/**
 * Of an index's manifests at hand (each with a platform), the one for `platform` as selectPlatform
 * picks it; none is PlatformNotFoundError naming the platforms there are.
 */
export function manifestForPlatform(candidates: Descriptor[], platform: Platform, what: string): Descriptor {
  const chosen = selectPlatform(platform, candidates, (c) => c.platform);
  if (chosen === undefined) {
    throw new PlatformNotFoundError(
      what,
      platform,
      candidates.map((c) => c.platform!),
    );
  }
  return chosen;
}
