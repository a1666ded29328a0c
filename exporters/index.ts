/**
 * Exporters: a build's result written where the user asked. `assembleImage` makes the image (config
 * and manifest) from the result and the frontend's config; `exportImage` writes it to one
 * destination, chosen from a table of exporters, one file each:
 *
 * | type     | file        | writes                                                        |
 * | -------- | ----------- | ------------------------------------------------------------- |
 * | `image`  | `store.ts`  | the local store under each name; `push=true` to the registry  |
 * | `oci`    | `oci.ts`    | an OCI layout tar (`tar=false`: a directory)                  |
 * | `docker` | `docker.ts` | a `docker save` archive                                       |
 * | `local`  | `local.ts`  | the final filesystem into a directory                         |
 * | `tar`    | `tar.ts`    | the final filesystem as one tar                               |
 *
 * `parseOutputSpec` reads `-o` as buildx does; `writeIidFile` and `writeMetadataFile` write what
 * `--iidfile` and `--metadata-file` ask for.
 */
import path from "node:path";
import type { Attestation } from "../attest/attestation.js";
import { TbuildError, UsageError } from "../errors/index.js";
import { ociArchive } from "../oci/archive/oci-archive.js";
import { readImage, readImageIndex } from "../oci/image.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import { type Descriptor, type Index, MediaType } from "../oci/spec.js";
import { normalizeImageName, type Store } from "../oci/store/index.js";
import type { FsResult } from "../solver/worker.js";
import { withAttestationFiles, writeAttestationManifest } from "./attestations.js";
import { writeBytesTo } from "./destination.js";
import { dockerExporter } from "./docker.js";
import type { ExportedImage, Exporter, ExportJob, ExportOptions } from "./exporter.js";
import { type FsEntry, flattenLayers as flattenFilesystem } from "./filesystem.js";
import type { AssembledImage } from "./image.js";
import { compressLayers } from "./layers.js";
import { localExporter } from "./local.js";
import { manifestFor } from "./media-types.js";
import type { ExportOutcome } from "./metadata.js";
import { ociExporter, writeLayoutDirectory } from "./oci.js";
import type { ExportRequest, ExportType } from "./request.js";
import { imageExporter } from "./store.js";
import { filesystemTar, tarExporter } from "./tar.js";

export type { ExportedImage, ExportOptions } from "./exporter.js";
export { type FsEntry, flattenLayers, LayerApplyError } from "./filesystem.js";
export { type AssembledImage, type AssembleOptions, assembleImage, storedImage } from "./image.js";
export { compressLayers, type LayerCompressionRequest } from "./layers.js";
export { writeFilesystem } from "./local.js";
export type { MediaTypes } from "./media-types.js";
export { type ExportOutcome, writeIidFile, writeMetadataFile } from "./metadata.js";
export { type ExportRequest, type ExportType, parseOutputSpec } from "./request.js";

const EXPORTERS: Record<ExportType, Exporter> = {
  image: imageExporter,
  oci: ociExporter,
  docker: dockerExporter,
  local: localExporter,
  tar: tarExporter,
};

/**
 * Writes the assembled image of `result` where `request` says. Gives what `--iidfile` and
 * `--metadata-file` need: the digest of the manifest as written (layers compressed as asked can
 * make it differ from the assembled one), the config digest, the names.
 */
export async function exportImage(
  store: Store,
  image: AssembledImage,
  result: FsResult,
  request: ExportRequest,
  options: ExportOptions = {},
  attestations: readonly Attestation[] = [],
): Promise<ExportOutcome> {
  checkResultMatches(image, result);
  if (attestations.length > 0 && (request.type === "image" || request.type === "oci")) {
    // An image with attestations is an index, also for one platform (BuildKit's attestation storage).
    const { os, architecture, variant } = image.config;
    const platform = { os, architecture, ...(variant ? { variant } : {}) };
    const outcome = await exportPlatforms(
      store,
      [{ platform, assembled: image, result, attestations }],
      request,
      options,
    );
    return { ...outcome!, configDigest: image.configDescriptor.digest };
  }
  if (attestations.length > 0 && request.type === "docker") {
    options.warn?.(
      `type=docker holds one image and no index: its attestations (${attestations.map((a) => a.kind).join(", ")}) are left out; use type=oci or push to keep them`,
    );
    attestations = [];
  }
  const names = [...new Set((request.names ?? []).map(normalizeImageName))];
  const job = exportJob(store, image, result, request, names, options, attestations);
  const exported = await EXPORTERS[request.type](job);
  const descriptor = exported?.descriptor ?? image.manifestDescriptor;
  return {
    digest: descriptor.digest,
    configDigest: image.configDescriptor.digest,
    descriptor,
    names,
  };
}

/** The layers given to export must be those the image was assembled from. */
function checkResultMatches(image: AssembledImage, result: FsResult): void {
  const diffIds = image.config.rootfs.diff_ids;
  const same =
    diffIds.length === result.layers.length && result.layers.every((layer, i) => layer.diffId === diffIds[i]);
  if (!same) {
    throw new TbuildError(
      "E_EXPORT_MISMATCH",
      `the image to export (${image.manifestDescriptor.digest}) was not assembled from these layers`,
    );
  }
}

function exportJob(
  store: Store,
  assembled: AssembledImage,
  result: FsResult,
  request: ExportRequest,
  names: string[],
  options: ExportOptions,
  attestations: readonly Attestation[] = [],
): ExportJob {
  const warn = (message: string) => options.warn?.(message);
  const signalOption = options.signal ? { signal: options.signal } : {};
  return {
    store,
    assembled,
    result,
    request,
    names,
    options,
    attestations,
    warn,
    image: async ({ mediaTypes, compressLayers: compress }) => {
      const wanted =
        request.ociMediaTypes === undefined ? mediaTypes : request.ociMediaTypes ? "oci" : "docker";
      const layers = compress
        ? await compressLayers(store, result.layers, {
            compression: request.compression ?? "gzip",
            ...(request.compressionLevel !== undefined ? { level: request.compressionLevel } : {}),
            ...(request.forceCompression !== undefined ? { force: request.forceCompression } : {}),
            ...signalOption,
          })
        : [...result.layers];
      const { manifest } = manifestFor(
        assembled.configDescriptor,
        layers.map((layer) => layer.descriptor),
        wanted,
        warn,
      );
      const written = await store.content.writeBytes(Buffer.from(JSON.stringify(manifest)));
      const descriptor = { mediaType: manifest.mediaType!, ...written };
      const exported: ExportedImage = {
        descriptor,
        manifest,
        configDescriptor: manifest.config,
        layers,
        image: await readImage(store.content, descriptor),
      };
      return exported;
    },
    flattenOptions: () => ({ ...signalOption, warn }),
    destinationOptions: () => ({ ...signalOption, ...(options.stdout ? { stdout: options.stdout } : {}) }),
  };
}

/** One platform's image of a build of several (`--platform linux/amd64,linux/arm64`). */
export interface PlatformImage {
  platform: Platform;
  assembled: AssembledImage;
  result: FsResult;
  /** Its attestations: beside it in the index, or files in its directory of a filesystem output. */
  attestations?: readonly Attestation[];
}

/**
 * How BuildKit names a platform's directory in a filesystem output of several platforms:
 * `linux_amd64`, `linux_arm_v7`.
 */
export function platformDirectory(platform: Platform): string {
  return formatPlatform(platform).replaceAll("/", "_");
}

/** Refuses, before anything is built, an output that cannot take several platforms: a docker archive holds one image. */
export function checkPlatformsOutput(request: ExportRequest, platforms: readonly Platform[]): void {
  const named = platforms.map(formatPlatform).join(", ");
  if (request.type === "docker") {
    throw new UsageError(
      `type=docker holds one image, and this build makes one per platform (${named}): build one platform (--platform), or write them all as one index with type=oci`,
    );
  }
}

/**
 * Writes the images of a build of several platforms where `request` says, as buildx does: an
 * image index with one manifest per platform (the store, a push, an OCI archive), or each
 * platform's filesystem in a directory of its own (`type=local`: `DEST/linux_amd64/...`;
 * `type=tar`: one tar of those directories). A docker archive holds one image: refused. Gives the
 * index's outcome, or nothing for a filesystem output.
 */
export async function exportPlatforms(
  store: Store,
  images: readonly PlatformImage[],
  request: ExportRequest,
  options: ExportOptions = {},
): Promise<ExportOutcome | undefined> {
  for (const { assembled, result } of images) checkResultMatches(assembled, result);
  const names = [...new Set((request.names ?? []).map(normalizeImageName))];
  const jobOf = (image: PlatformImage, forRequest: ExportRequest = request) =>
    exportJob(store, image.assembled, image.result, forRequest, names, options, image.attestations ?? []);
  checkPlatformsOutput(
    request,
    images.map((i) => i.platform),
  );
  switch (request.type) {
    case "local": {
      const dest = request.dest;
      if (dest === undefined || dest === "-")
        throw new UsageError("type=local writes a directory: give dest=DIRECTORY");
      for (const image of images) {
        await localExporter(
          jobOf(image, { ...request, dest: path.join(dest, platformDirectory(image.platform)) }),
        );
      }
      return undefined;
    }
    case "tar": {
      async function* entries(): AsyncGenerator<FsEntry> {
        for (const image of images) {
          const dir = platformDirectory(image.platform);
          const job = jobOf(image);
          yield {
            path: dir,
            type: "Directory",
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: new Date(0),
            xattrs: new Map(),
          };
          for await (const entry of withAttestationFiles(
            flattenFilesystem(store.content, image.result.layers, job.flattenOptions()),
            job.attestations,
            job.warn,
          )) {
            yield {
              ...entry,
              path: `${dir}/${entry.path}`,
              // A hard link names a path of the archive: inside the same platform's directory.
              ...(entry.type === "Link" && entry.linkpath !== undefined
                ? { linkpath: `${dir}/${entry.linkpath}` }
                : {}),
            };
          }
        }
      }
      const job = jobOf(images[0]!);
      await writeBytesTo(filesystemTar(entries()), request.dest ?? "-", "type=tar", job.destinationOptions());
      return undefined;
    }
    case "image":
      if (request.push === true && names.length === 0) {
        throw new UsageError("push needs a name to push to: give -t NAME, or name=NAME in --output");
      }
      break;
  }
  // An index of the platforms' manifests, each stored as the request wants it.
  const manifests: Descriptor[] = [];
  /** Every blob of the index: each image's layers, config and manifest. */
  const blobs: Descriptor[] = [];
  for (const image of images) {
    const exported = await jobOf(image).image({ mediaTypes: "oci", compressLayers: true });
    blobs.push(...exported.layers.map((l) => l.descriptor), exported.configDescriptor, exported.descriptor);
    const { os, architecture, variant } = image.platform;
    manifests.push({
      ...exported.descriptor,
      platform: { architecture, os, ...(variant !== undefined ? { variant } : {}) },
    });
  }
  // Each platform's attestation manifest, after every image manifest (BuildKit's attestation storage).
  for (const [i, image] of images.entries()) {
    if ((image.attestations ?? []).length === 0) continue;
    const written = await writeAttestationManifest(
      store.content,
      { descriptor: manifests[i]!, platform: image.platform, attestations: image.attestations! },
      names,
      request.ociArtifact !== false,
    );
    manifests.push(written.entry);
    blobs.push(...written.blobs);
  }
  const index: Index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests };
  const written = await store.content.writeBytes(Buffer.from(JSON.stringify(index)));
  const descriptor: Descriptor = { mediaType: MediaType.ociIndex, ...written };
  options.signal?.throwIfAborted();
  if (request.type === "oci") {
    const top = { names, image: await readImageIndex(store.content, descriptor) };
    const job = jobOf(images[0]!);
    if (request.tar === false) {
      const dest = request.dest;
      if (dest === undefined || dest === "-")
        throw new UsageError("type=oci,tar=false writes a directory: give dest=DIRECTORY");
      await writeLayoutDirectory(job, [...blobs, descriptor], top, dest);
    } else {
      await writeBytesTo(ociArchive([top]), request.dest ?? "-", "type=oci", job.destinationOptions());
    }
  } else {
    for (const name of names) await store.images.put(name, descriptor);
    if (request.push === true) {
      const { pushImage } = await import("../oci/registry/push.js");
      for (const name of names) {
        await pushImage(store, name, {
          ...(options.warn ? { warn: options.warn } : {}),
          ...options.registry,
          ...(options.signal ? { signal: options.signal } : {}),
        });
      }
    }
  }
  return { digest: descriptor.digest, descriptor, names };
}
