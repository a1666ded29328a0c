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
import { TbuildError } from "../errors/index.js";
import { readImage } from "../oci/image.js";
import { normalizeImageName, type Store } from "../oci/store/index.js";
import type { FsResult } from "../solver/worker.js";
import { dockerExporter } from "./docker.js";
import type { ExportedImage, Exporter, ExportJob, ExportOptions } from "./exporter.js";
import type { AssembledImage } from "./image.js";
import { compressLayers } from "./layers.js";
import { localExporter } from "./local.js";
import { manifestFor } from "./media-types.js";
import type { ExportOutcome } from "./metadata.js";
import { ociExporter } from "./oci.js";
import type { ExportRequest, ExportType } from "./request.js";
import { imageExporter } from "./store.js";
import { tarExporter } from "./tar.js";

export type { ExportedImage, ExportOptions } from "./exporter.js";
export { type FsEntry, flattenLayers, LayerApplyError } from "./filesystem.js";
export { type AssembledImage, type AssembleOptions, assembleImage } from "./image.js";
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
): Promise<ExportOutcome> {
  checkResultMatches(image, result);
  const names = [...new Set((request.names ?? []).map(normalizeImageName))];
  const job = exportJob(store, image, result, request, names, options);
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
