/**
 * Reading an archive into the content store: an OCI archive (an image layout as a tar) or a docker
 * archive (`docker save`, old and new style), told apart by what they hold. A tar is read once, in
 * order: every blob goes straight into the content store as it streams past, verified against the
 * digest its path names (OCI) or hashed for the manifest to name (docker); the few small JSON files
 * are kept in memory. Only once the end is reached are the images assembled and checked.
 */
import { open } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Parser, type ReadEntry } from "tar";
import { TbuildError } from "../../errors/index.js";
import { cleanRelativePath } from "../clean-path.js";
import { type Image, type ImageIndex, InvalidImageError, readImageOrIndex } from "../image.js";
import { DigestingStream, decompressor, LayerContentError, verifyLayer } from "../layer.js";
import { formatReference, parseReference } from "../reference.js";
import {
  ANNOTATION_REF_NAME,
  type Descriptor,
  type ImageConfig,
  type Index,
  type Manifest,
  MediaType,
} from "../spec.js";
import type { ContentStore } from "../store/content.js";
import type { DockerArchiveManifestEntry } from "./docker-archive.js";
import { ANNOTATION_CONTAINERD_NAME } from "./oci-archive.js";
import { detectCompression } from "./rootfs.js";

export interface LoadedImage {
  /** Full normalized references the archive gives the image (possibly none). */
  names: string[];
  descriptor: Descriptor;
}

export interface LoadedArchive {
  format: "oci" | "docker";
  images: LoadedImage[];
}

/** An archive that is not one tbuild can load, or is damaged. */
export class ArchiveError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_BAD_ARCHIVE", message, cause === undefined ? {} : { cause });
  }
}

/** JSON members bigger than this are not metadata; a hostile archive must not fill memory. */
const MAX_METADATA_BYTES = 32 * 1024 * 1024;
const BLOB_PATH = /^blobs\/(sha256|sha384|sha512)\/([a-f0-9]+)$/;

function isMetadata(name: string): boolean {
  return (
    name === "oci-layout" ||
    name === "index.json" ||
    name === "manifest.json" ||
    name === "repositories" ||
    (name.endsWith(".json") && !name.startsWith("blobs/"))
  );
}

async function collect(entry: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of entry) chunks.push(chunk);
  return Buffer.concat(chunks);
}

async function* iterate(entry: ReadEntry): AsyncGenerator<Buffer> {
  for await (const chunk of entry as unknown as AsyncIterable<Buffer>) yield chunk;
}

interface ArchiveContents {
  /** Small JSON members, by path. */
  metadata: Map<string, Buffer>;
  /** Every other regular file, stored: path → digest and size. */
  files: Map<string, { digest: string; size: number }>;
  /** Symbolic links: path → target path (resolved within the archive). */
  links: Map<string, string>;
}

/** Streams a tar through the parser, storing blobs as they pass. */
async function readArchive(
  input: AsyncIterable<Uint8Array>,
  content: ContentStore,
  what: string,
  signal?: AbortSignal,
): Promise<ArchiveContents> {
  const contents: ArchiveContents = { metadata: new Map(), files: new Map(), links: new Map() };
  let failure: unknown;
  let fail!: (err: unknown) => void;
  const failed = new Promise<never>((_, reject) => {
    fail = (err) => {
      failure ??= err;
      reject(failure);
    };
  });
  failed.catch(() => {});
  const pending: Promise<void>[] = [];
  const parser = new Parser({ strict: true });
  let sawEntry = false;

  async function handle(entry: ReadEntry): Promise<void> {
    const name = cleanRelativePath(entry.path);
    if (entry.type === "SymbolicLink" && entry.linkpath !== undefined) {
      contents.links.set(name, cleanRelativePath(path.posix.join(path.posix.dirname(name), entry.linkpath)));
      entry.resume();
      return;
    }
    if (entry.type !== "File" && entry.type !== "OldFile" && entry.type !== "ContiguousFile") {
      entry.resume();
      return;
    }
    const size = entry.size ?? 0;
    if (isMetadata(name) && size <= MAX_METADATA_BYTES) {
      contents.metadata.set(name, await collect(iterate(entry)));
      return;
    }
    const blob = BLOB_PATH.exec(name);
    const expected = blob ? { digest: `${blob[1]}:${blob[2]}`, size } : { size };
    const written = await content.write(iterate(entry), expected, signal);
    contents.files.set(name, written);
  }

  parser.on("entry", (entry: ReadEntry) => {
    sawEntry = true;
    if (failure !== undefined) {
      entry.resume();
      return;
    }
    pending.push(
      handle(entry).catch((err: unknown) => {
        entry.resume();
        fail(err);
      }),
    );
  });
  parser.on("error", (err: Error) =>
    fail(new ArchiveError(`${what} is not a valid tar archive: ${err.message}`, err)),
  );
  const ended = new Promise<void>((resolve) => parser.on("end", () => resolve()));

  for await (const chunk of input) {
    if (failure !== undefined) break;
    signal?.throwIfAborted();
    if (!parser.write(Buffer.from(chunk))) {
      await Promise.race([new Promise<void>((resolve) => parser.once("drain", () => resolve())), failed]);
    }
  }
  if (failure !== undefined) throw failure;
  parser.end();
  await Promise.race([ended, failed]);
  await Promise.all(pending);
  if (failure !== undefined) throw failure;
  if (!sawEntry) throw new ArchiveError(`${what} is empty or not a tar archive`);
  return contents;
}

/** Reads an OCI or docker archive into the content store; returns its images (not yet named). */
export async function loadArchive(
  input: AsyncIterable<Uint8Array>,
  content: ContentStore,
  options: { what: string; signal?: AbortSignal },
): Promise<LoadedArchive> {
  const contents = await readArchive(input, content, options.what, options.signal);
  if (contents.metadata.has("index.json") && contents.metadata.has("oci-layout")) {
    return { format: "oci", images: await ociImages(contents, content, options.what) };
  }
  if (contents.metadata.has("manifest.json")) {
    return { format: "docker", images: await dockerImages(contents, content, options.what) };
  }
  throw new ArchiveError(
    `${options.what} is neither an OCI archive (oci-layout and index.json) nor a docker archive (manifest.json)`,
  );
}

function parseJson<T>(bytes: Buffer | undefined, what: string): T {
  try {
    return JSON.parse((bytes ?? Buffer.alloc(0)).toString("utf8")) as T;
  } catch (err) {
    throw new ArchiveError(`${what} is not valid JSON (${(err as Error).message})`, err);
  }
}

/** A name from an archive, normalized; undefined (and skipped) when it is not a reference. */
function normalizedName(text: string | undefined): string | undefined {
  if (text === undefined || text === "") return undefined;
  try {
    return formatReference(parseReference(text));
  } catch {
    return undefined;
  }
}

/**
 * The images an OCI layout's index.json lists, one per digest, each with the names its annotations
 * give it (containerd's, else the OCI ref name), normalized. What `tbuild load` reads, and what a
 * remote build's client reads of a layout directory it serves in place (build/remote-layout.ts).
 */
export function layoutImages(indexJson: Buffer | undefined, what: string): LoadedImage[] {
  const index = parseJson<Index>(indexJson, `index.json of ${what}`);
  if (!Array.isArray(index.manifests)) throw new ArchiveError(`index.json of ${what} lists no manifests`);
  const byDigest = new Map<string, LoadedImage>();
  for (const entry of index.manifests) {
    const { annotations, ...descriptor } = entry;
    const name = normalizedName(
      annotations?.[ANNOTATION_CONTAINERD_NAME] ?? annotations?.[ANNOTATION_REF_NAME],
    );
    const image: LoadedImage = byDigest.get(entry.digest) ?? { names: [], descriptor };
    if (name !== undefined && !image.names.includes(name)) image.names.push(name);
    byDigest.set(entry.digest, image);
  }
  return [...byDigest.values()];
}

async function ociImages(
  contents: ArchiveContents,
  content: ContentStore,
  what: string,
): Promise<LoadedImage[]> {
  const images = layoutImages(contents.metadata.get("index.json"), what);
  for (const image of images) {
    if (!(await content.has(image.descriptor.digest))) {
      throw new ArchiveError(
        `${what} lists ${image.descriptor.digest} in its index.json but does not contain it`,
      );
    }
  }
  for (const image of images) {
    await checkImage(
      content,
      image.descriptor,
      `${what}: image ${image.names[0] ?? image.descriptor.digest}`,
    );
  }
  return images;
}

/**
 * An archive's image is checked as a pull checks a registry's: its manifest and config parse, and
 * each layer is what its media type and diff_id say, so that no image is named that cannot unpack.
 */
async function checkImage(content: ContentStore, descriptor: Descriptor, what: string): Promise<void> {
  try {
    const item = await readImageOrIndex(content, descriptor);
    const images = item.kind === "image" ? [item] : await imagesOf(item);
    for (const image of images) {
      for (const layer of image.layers) {
        if (layer.descriptor.mediaType === MediaType.dockerForeignLayerGzip) continue;
        if (!(await content.has(layer.descriptor.digest))) {
          throw new ArchiveError(
            `${what} needs layer ${layer.descriptor.digest}, which the archive does not contain`,
          );
        }
        // An attestation manifest's statements are JSON, not filesystems: present is all they need be.
        if (layer.descriptor.mediaType === MediaType.inToto) continue;
        await verifyLayer(
          content.open(layer.descriptor.digest) as AsyncIterable<Uint8Array>,
          { mediaType: layer.descriptor.mediaType, diffId: layer.diffId },
          `layer ${layer.descriptor.digest}`,
        );
      }
    }
  } catch (err) {
    if (err instanceof InvalidImageError)
      throw new ArchiveError(`${what} is not valid: ${err.reason}; nothing was loaded`, err);
    if (err instanceof LayerContentError)
      throw new ArchiveError(`${what}: ${err.message}; nothing was loaded`, err);
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new ArchiveError(`${what} needs a blob the archive does not contain; nothing was loaded`, err);
    }
    throw err;
  }
}

/** The images of an index that the store holds, through nested indexes. */
async function imagesOf(index: ImageIndex): Promise<Image[]> {
  const images: Image[] = [];
  for (const child of await index.children()) {
    if (child.kind === "image") images.push(child);
    else images.push(...(await imagesOf(child)));
  }
  return images;
}

function resolveLink(contents: ArchiveContents, name: string): string {
  let current = cleanRelativePath(name);
  for (let hops = 0; hops < 16 && contents.links.has(current); hops++) current = contents.links.get(current)!;
  return current;
}

async function dockerImages(
  contents: ArchiveContents,
  content: ContentStore,
  what: string,
): Promise<LoadedImage[]> {
  const entries = parseJson<DockerArchiveManifestEntry[]>(
    contents.metadata.get("manifest.json"),
    `manifest.json of ${what}`,
  );
  if (!Array.isArray(entries)) throw new ArchiveError(`manifest.json of ${what} is not a list of images`);
  const images: LoadedImage[] = [];
  for (const entry of entries) {
    const configPath = resolveLink(contents, entry.Config);
    const rawConfig =
      contents.metadata.get(configPath) ??
      (contents.files.has(configPath)
        ? await content.readBytes(contents.files.get(configPath)!.digest)
        : undefined);
    if (rawConfig === undefined)
      throw new ArchiveError(`${what} names the config ${entry.Config} but does not contain it`);
    const config = parseJson<ImageConfig>(rawConfig, `${entry.Config} of ${what}`);
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== entry.Layers.length) {
      throw new ArchiveError(
        `${entry.Config} of ${what} names ${diffIds.length} layers (diff_ids), manifest.json ${entry.Layers.length}`,
      );
    }
    const configBlob = await content.writeBytes(rawConfig);
    const layers: Descriptor[] = [];
    for (const [i, layerPath] of entry.Layers.entries()) {
      const file = contents.files.get(resolveLink(contents, layerPath));
      if (file === undefined)
        throw new ArchiveError(`${what} names the layer ${layerPath} but does not contain it`);
      layers.push(await dockerLayer(content, file, diffIds[i]!, `${layerPath} of ${what}`));
    }
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, ...configBlob },
      layers,
    };
    const manifestBlob = await content.writeBytes(Buffer.from(JSON.stringify(manifest)));
    const names = (entry.RepoTags ?? []).map(normalizedName).filter((n) => n !== undefined);
    images.push({ names, descriptor: { mediaType: MediaType.ociManifest, ...manifestBlob } });
  }
  return images;
}

/**
 * A docker archive's layer file as a layer descriptor. Docker writes plain tars (whose digest is
 * the diff_id); some tools write gzip or zstd ones, which are kept compressed and checked by
 * decompressing them once.
 */
async function dockerLayer(
  content: ContentStore,
  file: { digest: string; size: number },
  diffId: string,
  what: string,
): Promise<Descriptor> {
  const handle = await open(content.blobPath(file.digest), "r");
  const head = Buffer.alloc(6);
  try {
    await handle.read(head, 0, 6, 0);
  } finally {
    await handle.close();
  }
  const compression = detectCompression(head);
  if (compression === "uncompressed") {
    if (file.digest !== diffId) {
      throw new ArchiveError(`${what} has digest ${file.digest}, but its config's diff_id is ${diffId}`);
    }
    return { mediaType: MediaType.ociLayer, ...file };
  }
  if (compression !== "gzip" && compression !== "zstd") {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `${what} is compressed with ${compression}, which tbuild does not read yet`,
    );
  }
  const digesting = new DigestingStream();
  await pipeline(
    content.open(file.digest),
    decompressor(compression),
    digesting,
    async (source: AsyncIterable<Uint8Array>) => {
      for await (const _ of source) {
        // only hashed
      }
    },
  );
  const actual = digesting.digest();
  if (actual !== diffId) {
    throw new ArchiveError(`${what} uncompresses to ${actual}, but its config's diff_id is ${diffId}`);
  }
  return { mediaType: compression === "gzip" ? MediaType.ociLayerGzip : MediaType.ociLayerZstd, ...file };
}
