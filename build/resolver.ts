/**
 * Base images for the frontend, from the local image store first and then the registry, as
 * DESIGN.md says: `tbuild pull` or `tbuild import` once, and builds work offline. `pull: "always"`
 * (`--pull`) asks the registry every time; `pull: "never"` stays local. An image read from the
 * store becomes the frontend's ResolvedImage here only (`resolvedImage`).
 */
import { TbuildError } from "../errors/index.js";
import type { ImageResolver, ResolvedImage } from "../frontend/resolver.js";
import { parseIndex, readImageForPlatform } from "../oci/image.js";
import { formatPlatform, type Platform, platformMatches, selectPlatform } from "../oci/platform.js";
import { formatReference, parseReference } from "../oci/reference.js";
import type { RegistryOptions } from "../oci/registry/index.js";
import type { Descriptor } from "../oci/spec.js";
import { ANNOTATION_PULLED_INDEX, type Store } from "../oci/store/index.js";

export interface StoreResolverOptions {
  pull: "missing" | "always" | "never";
  /** How the registry is reached when an image is pulled (registryOptions gives them). */
  registry?: Omit<RegistryOptions, "signal">;
}

export class ImageNotLocalError extends TbuildError {
  constructor(ref: string) {
    super(
      "E_IMAGE_NOT_LOCAL",
      `image ${ref} is not in the local store: run 'tbuild pull ${ref}' (or 'tbuild import') first`,
    );
  }
}

export function storeImageResolver(store: Store, options: StoreResolverOptions): ImageResolver {
  return {
    async resolveImage(text: string, platform: Platform, signal?: AbortSignal): Promise<ResolvedImage> {
      const ref = parseReference(text);
      const name = formatReference(ref);
      if (options.pull !== "always") {
        const record = await store.images.get(name);
        if (record) {
          // Pulled from an index for another platform (a build of several platforms pulls the
          // name once per platform): that platform's image of the same index, if the store holds
          // it; pulled when it does not.
          const sibling = await siblingFor(store, record.descriptor, platform);
          if (sibling === undefined || (sibling === "missing" && options.pull === "never")) {
            return resolveStoredImage(store, name, record.descriptor, platform);
          }
          if (sibling !== "missing") return resolveStoredImage(store, name, sibling, platform);
        } else if (options.pull === "never") throw new ImageNotLocalError(name);
      }
      // The registry client is loaded only when an image is pulled.
      const { pullImage } = await import("../oci/registry/index.js");
      const pulled = await pullImage(store, ref, {
        ...options.registry,
        platform,
        ...(signal ? { signal } : {}),
      });
      return resolveStoredImage(store, name, pulled.index ?? pulled.descriptor, platform);
    },
  };
}

/**
 * A resolver that never leaves the store and never fails for an image it lacks (`debug graph`,
 * which runs and fetches nothing): such an image is given by reference with the digest
 * "unresolved" and an empty config (no inherited ENV, USER or ONBUILD); `unresolved` collects
 * their names, so the caller can say how to resolve them.
 */
export function localImageResolver(store: Store, unresolved: Set<string>): ImageResolver {
  const local = storeImageResolver(store, { pull: "never" });
  return {
    async resolveImage(ref, platform): Promise<ResolvedImage> {
      try {
        return await local.resolveImage(ref, platform);
      } catch (err) {
        if (!(err instanceof ImageNotLocalError)) throw err;
      }
      const normalized = formatReference(parseReference(ref));
      unresolved.add(normalized);
      return {
        ref: normalized,
        digest: "unresolved",
        platform,
        config: {
          architecture: platform.architecture,
          os: platform.os,
          config: {},
          rootfs: { type: "layers", diff_ids: [] },
        },
      };
    },
  };
}

/**
 * For a name pulled from an index (its record says which) whose image is for another platform
 * than `platform`: the index's image for `platform`, or "missing" when the store lacks it.
 * Undefined when the record's own image is the one to take (or nothing says otherwise).
 */
async function siblingFor(
  store: Store,
  descriptor: Descriptor,
  platform: Platform,
): Promise<Descriptor | "missing" | undefined> {
  const indexDigest = descriptor.annotations?.[ANNOTATION_PULLED_INDEX];
  if (indexDigest === undefined || descriptor.platform === undefined) return undefined;
  if (platformMatches(platform, descriptor.platform)) return undefined;
  if (!(await store.content.has(indexDigest))) return "missing";
  const index = parseIndex(await store.content.readBytes(indexDigest), `index ${indexDigest}`);
  const chosen = selectPlatform(
    platform,
    index.manifests.filter((m) => m.platform !== undefined),
    (m) => m.platform,
  );
  if (chosen === undefined) return undefined;
  return (await store.content.has(chosen.digest)) ? chosen : "missing";
}

/** The image `descriptor` holds for `platform`, as the frontend takes a base image, named `name`. */
export async function resolveStoredImage(
  store: Store,
  name: string,
  descriptor: Parameters<typeof readImageForPlatform>[1],
  platform: Platform,
  what = `${name} for ${formatPlatform(platform)}`,
): Promise<ResolvedImage> {
  const image = await readImageForPlatform(store.content, descriptor, platform, what);
  const config = image.config;
  return {
    ref: name,
    digest: image.descriptor.digest,
    platform: {
      os: config.os,
      architecture: config.architecture,
      ...(config.variant ? { variant: config.variant } : {}),
    },
    config,
  };
}
