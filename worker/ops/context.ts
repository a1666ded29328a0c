/**
 * What every op implementation gets: the store, the snapshotter, the build's sources and secrets,
 * and the cancellation signal. Each op takes its inputs' results (filesystems as layer stacks) and
 * returns its own: the inputs' layers plus the layer it added, or a new stack.
 */

import type { RegistryOptions } from "../../oci/registry/index.js";
import type { Store } from "../../oci/store/index.js";
import type { VertexDigest } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import type { CacheMountRecord, CacheMountStore } from "../cache-mounts/store.js";
import type { Snapshotter } from "../snapshot/index.js";
import type { ContextEntry } from "./context-walk.js";

export interface SecretSource {
  /** Read from this file... */
  file?: string;
  /** ...or from this environment variable of the tbuild process... */
  env?: string;
  /** ...or asked for when a step mounts it (a remote build's client serves it). */
  fetch?: () => Promise<Uint8Array>;
}

export interface OpContext {
  store: Store;
  snapshotter: Snapshotter;
  signal: AbortSignal;
  log(stream: 1 | 2, chunk: Uint8Array): void;
  warn(message: string): void;
  /** Local sources by name: `context` is the build context directory; others come from `--build-context NAME=DIR`. */
  localSources: Record<string, string>;
  /** `--secret id=ID,src=PATH|env=VAR`, by id. */
  secrets: Record<string, SecretSource>;
  /**
   * `K=V` of the proxy build args (`--build-arg http_proxy=...`), for every RUN step whose own
   * env does not set that name: outside the graph, so never part of a cache key, as in BuildKit.
   */
  proxyEnv?: string[];
  /** `--no-cache` and `--no-cache-filter`: whether the solver runs a vertex ignoring the cache. */
  ignoreCache?: (digest: VertexDigest) => boolean;
  /** Set for each run: the vertex runs ignoring the cache, so its based cache mounts start fresh. */
  ignoringCache?: boolean;
  /**
   * Cache mounts that travel with the build cache (`--cache-from`/`--cache-to ...,mounts=true`):
   * `seed` fills a mount the store lacks from an imported cache before a step first uses it;
   * `used` hears of every mount a step used, for the export.
   */
  cacheMounts?: {
    seed(record: CacheMountRecord, mounts: CacheMountStore): Promise<void>;
    used(record: Omit<CacheMountRecord, "lastUsed">): void;
  };
  /** `--ssh ID=SOCKET|KEY`, by id (`default` for `--ssh default`). */
  ssh: Record<string, string>;
  /** How new layers are compressed. */
  compression: "gzip" | "zstd" | "uncompressed";
  /** SOURCE_DATE_EPOCH: new layers' timestamps are clamped to it. */
  sourceDateEpoch?: number;
  /** How base images missing from the store are pulled: config.toml's registries, credentials. */
  registry?: Omit<RegistryOptions, "signal" | "warn">;
  /** `--step-timeout`: a RUN step's process still running after this many milliseconds is killed. */
  stepTimeoutMs?: number;
  /** Scratch space for sandbox state, bundles and downloads; removed by the caller after the build. */
  stateDir: string;
  /** Where a step's secret files are made: a directory in memory (tmpfs), never on a disk; the state directory when there is none. */
  secretsDir?: string;
  /**
   * A local op's selected entries, as its cache key read them, for its run moments later in the
   * same build (one walk of the context instead of two).
   */
  contextSelections?: WeakMap<
    object,
    { entries: readonly ContextEntry[]; hashes: ReadonlyMap<string, string> }
  >;
  /** Walks and checksums of local sources made in this build, by source and selection (see local.ts). */
  localSelections?: Map<
    string,
    Promise<{ checksum: string; entries: readonly ContextEntry[]; hashes: ReadonlyMap<string, string> }>
  >;
  /** The sha256 of build results' files read for cache keys in this build, by inode and stat (result-selection.ts). */
  resultFileHashes?: Map<string, Promise<string>>;
}

export type OpResult = Promise<FsResult>;
