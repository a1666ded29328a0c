import type { Platform } from "../oci/platform.js";
import type { ImageConfig } from "../oci/spec.js";

/** A base image as the lowering needs it: pinned by digest, with its configuration. */
export interface ResolvedImage {
  /** Normalized reference with its tag, e.g. `docker.io/library/busybox:latest`. */
  ref: string;
  /** Manifest digest for `platform`. */
  digest: string;
  platform: Platform;
  config: ImageConfig;
}

/**
 * Reference + platform → digest + config. Injected, so the frontend never touches a registry or
 * the store: the CLI passes one backed by the local image store and the registry client, tests a
 * fixture one. Throws a TbuildError the user can act on when the image cannot be found.
 */
export interface ImageResolver {
  resolveImage(ref: string, platform: Platform, signal?: AbortSignal): Promise<ResolvedImage>;
}
