/**
 * Base images for the frontend, from the local image store first and then the registry, as
 * DESIGN.md says: `tbuild pull` or `tbuild import` once, and builds work offline. `pull: "always"`
 * (`--pull`) asks the registry every time; `pull: "never"` stays local.
 */
import { TbuildError } from "../errors/index.js";
import type { ImageResolver, ResolvedImage } from "../frontend/resolver.js";
import { readImageForPlatform } from "../oci/image.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import { formatReference, parseReference } from "../oci/reference.js";
import type { RegistryHostsConfig } from "../oci/registry/hosts.js";
import type { Store } from "../oci/store/index.js";

export interface StoreResolverOptions {
  pull: "missing" | "always" | "never";
  hosts?: RegistryHostsConfig;
  configPath?: string;
  env?: NodeJS.ProcessEnv;
  warn?: (message: string) => void;
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
        if (record) return fromStore(store, name, record.descriptor, platform);
        if (options.pull === "never") throw new ImageNotLocalError(name);
      }
      // The registry client is loaded only when an image is pulled.
      const { pullImage } = await import("../oci/registry/index.js");
      const pulled = await pullImage(store, ref, {
        platform,
        ...(options.hosts ? { hosts: options.hosts } : {}),
        ...(options.configPath ? { configPath: options.configPath } : {}),
        ...(options.env ? { env: options.env } : {}),
        ...(signal ? { signal } : {}),
        ...(options.warn ? { warn: options.warn } : {}),
      });
      return fromStore(store, name, pulled.index ?? pulled.descriptor, platform);
    },
  };
}

async function fromStore(
  store: Store,
  name: string,
  descriptor: Parameters<typeof readImageForPlatform>[1],
  platform: Platform,
) {
  const image = await readImageForPlatform(
    store.content,
    descriptor,
    platform,
    `${name} for ${formatPlatform(platform)}`,
  );
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
