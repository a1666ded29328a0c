/**
 * Docker archives, the format of `docker save` that `docker load` and `podman load` read:
 * `manifest.json` (per image: its config file, its names, its layer files in order),
 * `repositories` (the legacy name → top layer map), `<config hex>.json`, and each layer as an
 * uncompressed tar at `<diff_id hex>/layer.tar`. Layers are decompressed on the way out; since a
 * tar header states its size first, a compressed layer is read twice: once to learn its size (and
 * check its diff_id), once to write it. Nothing is held in memory but manifests and configs.
 */
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../../errors/index.js";
import type { Image, Layer } from "../image.js";
import { DigestingStream, decompressor, layerCompression } from "../layer.js";
import { parseReference, repositoryName } from "../reference.js";
import { parseDigest } from "../store/content.js";
import { TAR_END, type TarEntry, tarEntry } from "./tar.js";

/** One entry of `manifest.json`. */
export interface DockerArchiveManifestEntry {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[];
}

export interface DockerArchiveImage {
  /** Full references; only those with a tag can be named in a docker archive. */
  names: string[];
  image: Image;
}

const EPOCH = new Date(0);

function fileEntry(path: string, size: number): TarEntry {
  return { path, type: "File", mode: 0o644, uid: 0, gid: 0, size, mtime: EPOCH };
}

function directoryEntry(path: string): TarEntry {
  return { path, type: "Directory", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: EPOCH };
}

/** A layer's bytes as an uncompressed tar. */
function uncompressed(layer: Layer): AsyncIterable<Uint8Array> {
  const decompress = decompressor(layerCompression(layer.descriptor.mediaType));
  pipeline(layer.open(), decompress).catch(() => {});
  return decompress;
}

/** The uncompressed size of a layer, checking on the way that it hashes to its diff_id. */
async function uncompressedSize(layer: Layer): Promise<number> {
  const digesting = new DigestingStream();
  await pipeline(uncompressed(layer), digesting, async (source: AsyncIterable<Uint8Array>) => {
    for await (const _ of source) {
      // only counted and hashed
    }
  });
  const diffId = digesting.digest();
  if (diffId !== layer.diffId) {
    throw new TbuildError(
      "E_DIGEST_MISMATCH",
      `layer ${layer.descriptor.digest} uncompresses to ${diffId}, not to the diff_id ${layer.diffId} its image's config names; the store is damaged: pull or import the image again`,
    );
  }
  return digesting.size;
}

/**
 * The repository and tag an image is named by in `manifest.json`; undefined without a tag. Full
 * names (`docker.io/library/busybox`), not docker's familiar ones: docker reads both alike, while
 * podman takes a familiar `busybox` for `localhost/busybox`.
 */
function repoTag(name: string): { repository: string; tag: string } | undefined {
  const ref = parseReference(name);
  if (ref.tag === undefined) return undefined;
  return { repository: repositoryName(ref), tag: ref.tag };
}

/** The docker archive of `images`, as tar bytes. */
export async function* dockerArchive(images: DockerArchiveImage[]): AsyncGenerator<Buffer> {
  const manifest: DockerArchiveManifestEntry[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  const writtenLayers = new Set<string>();
  const writtenConfigs = new Set<string>();

  for (const { names, image } of images) {
    const layerPaths: string[] = [];
    for (const layer of image.layers) {
      const id = parseDigest(layer.diffId).hex;
      layerPaths.push(`${id}/layer.tar`);
      if (writtenLayers.has(id)) continue;
      writtenLayers.add(id);
      const compression = layerCompression(layer.descriptor.mediaType);
      const size = compression === "uncompressed" ? layer.descriptor.size : await uncompressedSize(layer);
      yield* tarEntry(directoryEntry(`${id}/`));
      yield* tarEntry(fileEntry(`${id}/layer.tar`, size), uncompressed(layer));
    }
    const configFile = `${parseDigest(image.manifest.config.digest).hex}.json`;
    if (!writtenConfigs.has(configFile)) {
      writtenConfigs.add(configFile);
      yield* tarEntry(fileEntry(configFile, image.rawConfig.length), image.rawConfig);
    }
    const tags = names.map(repoTag).filter((t) => t !== undefined);
    manifest.push({
      Config: configFile,
      RepoTags: tags.map((t) => `${t.repository}:${t.tag}`),
      Layers: layerPaths,
    });
    const top = layerPaths.at(-1)?.split("/")[0];
    if (top !== undefined) {
      for (const { repository, tag } of tags) {
        repositories[repository] ??= {};
        repositories[repository][tag] = top;
      }
    }
  }
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  yield* tarEntry(fileEntry("manifest.json", manifestBytes.length), manifestBytes);
  const repositoriesBytes = Buffer.from(JSON.stringify(repositories));
  yield* tarEntry(fileEntry("repositories", repositoriesBytes.length), repositoriesBytes);
  yield TAR_END;
}
