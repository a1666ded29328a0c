/**
 * The seam every destination plugs into: an exporter is "write this build to X", one function per
 * file (go-containerregistry's shape), so adding a destination adds a file and one line in the
 * table of `index.ts`. An exporter gets a job: the build, the request, and what it may need made
 * from them: the image as the request wants it (layers compressed, manifest media types), or the
 * options to walk the final filesystem.
 */
import type { Attestation } from "../attest/attestation.js";
import type { Image } from "../oci/image.js";
import type { PushOptions } from "../oci/registry/push.js";
import type { Descriptor, Manifest } from "../oci/spec.js";
import type { Store } from "../oci/store/index.js";
import type { FsResult, LayerRef } from "../solver/worker.js";
import type { DestinationOptions } from "./destination.js";
import type { FlattenOptions } from "./filesystem.js";
import type { AssembledImage } from "./image.js";
import type { MediaTypes } from "./media-types.js";
import type { ExportRequest } from "./request.js";

export interface ExportOptions {
  signal?: AbortSignal;
  /** Registries (config.toml, credentials) for `push`. */
  registry?: PushOptions;
  /** One line each: what was left out or changed, and why. */
  warn?(message: string): void;
  /** Where `dest=-` writes; the process's standard output when absent. */
  stdout?: NodeJS.WritableStream;
}

/** The image as an exporter writes it: its layers as the request wants them, its manifest stored. */
export interface ExportedImage {
  descriptor: Descriptor;
  manifest: Manifest;
  configDescriptor: Descriptor;
  layers: LayerRef[];
  /** The same, readable as an Image (for the archive writers). */
  image: Image;
}

export interface ExportJob {
  store: Store;
  assembled: AssembledImage;
  result: FsResult;
  request: ExportRequest;
  /** The request's names, normalized (`busybox` → `docker.io/library/busybox:latest`). */
  names: string[];
  options: ExportOptions;
  /** The image's attestations (provenance): beside it in an index, or files in a filesystem output. */
  attestations: readonly Attestation[];
  warn(message: string): void;
  /**
   * The image for this request, in the content store: layers compressed as asked (unless
   * `compressLayers` is false: the destination writes them its own way), media types as asked or
   * else the exporter's default.
   */
  image(defaults: { mediaTypes: MediaTypes; compressLayers: boolean }): Promise<ExportedImage>;
  flattenOptions(): FlattenOptions;
  destinationOptions(): DestinationOptions;
}

/** Writes the job's build to its destination; gives the image it wrote, if it wrote one. */
export type Exporter = (job: ExportJob) => Promise<ExportedImage | undefined>;
