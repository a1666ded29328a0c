/**
 * The library's `pull()` and `push()`: an image between a registry and the store, with
 * config.toml's registry settings and docker's credentials, as `tbuild pull` and `tbuild push`.
 */
import { loadConfig, registryOptions } from "../build/config.js";
import { hostPlatform, parsePlatform } from "../oci/platform.js";
import { parseReference } from "../oci/reference.js";
import { defaultStoreRoot, openStore } from "../oci/store/index.js";
import type { Store } from "./store.js";

export interface RegistryCallOptions {
  signal?: AbortSignal;
  /** The environment: the store, config.toml, credentials; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
  store?: Store;
  /** One line each: a mirror that failed, a platform that does not match. */
  onWarning?: (message: string) => void;
}

export interface PullResult {
  /** The name the image is stored under: `127.0.0.1:5000/app:1`. */
  name: string;
  /** The manifest digest stored for the platform. */
  digest: string;
  /** The host the manifest came from (a mirror's, or the registry's). */
  source: string;
  /** Blobs fetched, their bytes, and those already in the store. */
  fetched: number;
  bytesFetched: number;
  present: number;
}

export interface PushResult {
  name: string;
  /** The manifest (or index) digest pushed, and its size. */
  digest: string;
  size: number;
  uploaded: number;
  mounted: number;
  present: number;
}

async function open(options: RegistryCallOptions) {
  const env = options.env ?? process.env;
  const [config, store] = await Promise.all([
    loadConfig(env),
    openStore(options.store?.root ?? defaultStoreRoot(env)),
  ]);
  const registry = registryOptions(config, {
    env,
    ...(options.onWarning ? { warn: options.onWarning } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return { store, registry };
}

/** Fetches `ref` for `platform` (this machine's by default) into the store. */
export async function pull(
  ref: string,
  options: RegistryCallOptions & { platform?: string } = {},
): Promise<PullResult> {
  const { pullImage } = await import("../oci/registry/index.js");
  const { store, registry } = await open(options);
  const platform = options.platform ? parsePlatform(options.platform) : hostPlatform();
  const result = await pullImage(store, parseReference(ref), { ...registry, platform });
  return {
    name: result.name,
    digest: result.descriptor.digest,
    source: result.source,
    fetched: result.fetched,
    bytesFetched: result.bytesFetched,
    present: result.present,
  };
}

/** Sends the stored image `ref` to its registry. */
export async function push(ref: string, options: RegistryCallOptions = {}): Promise<PushResult> {
  const { pushImage } = await import("../oci/registry/index.js");
  const { store, registry } = await open(options);
  const result = await pushImage(store, parseReference(ref), registry);
  return {
    name: result.name,
    digest: result.descriptor.digest,
    size: result.descriptor.size,
    uploaded: result.uploaded,
    mounted: result.mounted,
    present: result.present,
  };
}
