/**
 * tbuild's config.toml (`$TBUILD_CONFIG`, else `$XDG_CONFIG_HOME/tbuild/config.toml`, else
 * `~/.config/tbuild/config.toml`), read with smol-toml into plain data. Only the tables tbuild knows
 * are checked key by key; other top-level tables are kept as they are for the features that will
 * read them (workers, GC policy). A missing file is an empty config; a bad one is an error naming
 * the file and the key.
 *
 * `[worker]` holds two things, as buildkitd.toml's `[worker.oci]` beside its own keys: the local
 * worker's keys (`snapshotter`) and one `[worker.NAME]` table per remote worker; `[pool.NAME]`
 * groups remote workers. Each reader checks only its own part, so a build that stays local is
 * never refused for a remote worker's typo (and `tbuild worker ls` or `--worker` always are).
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { parse, TomlError } from "smol-toml";
import { TbuildError } from "../errors/index.js";
import { formatPlatform, parsePlatform } from "../oci/platform.js";
import type { RegistryHostConfig, RegistryHostsConfig, RegistryOptions } from "../oci/registry/index.js";
import { type GcPolicy, parseDuration, parseSize } from "../solver/gc.js";
import { parseWorkerUrl } from "../worker/remote/transport.js";

export interface TbuildConfig {
  /** The file read (or that would have been read), for messages. */
  path: string;
  /** `[registry."host"]` tables, keyed by registry name. */
  registries: RegistryHostsConfig;
  /** Top-level tables this version does not interpret, kept for later readers. */
  other: Record<string, unknown>;
}

export class ConfigError extends TbuildError {
  constructor(file: string, message: string, options: { cause?: unknown } = {}) {
    super("E_CONFIG", `${file}: ${message}`, options);
  }
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TBUILD_CONFIG) return path.resolve(env.TBUILD_CONFIG);
  const configHome = env.XDG_CONFIG_HOME || path.join(env.HOME || homedir(), ".config");
  return path.join(configHome, "tbuild", "config.toml");
}

export async function loadConfig(env: NodeJS.ProcessEnv = process.env): Promise<TbuildConfig> {
  const file = configPath(env);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Only an explicitly named file must exist; the default location is optional.
    if (code === "ENOENT" && !env.TBUILD_CONFIG) return { path: file, registries: {}, other: {} };
    throw new ConfigError(file, `cannot read the config file (${code ?? String(err)})`, { cause: err });
  }
  return parseConfig(text, file);
}

export function parseConfig(text: string, file: string): TbuildConfig {
  let data: Record<string, unknown>;
  try {
    data = parse(text) as Record<string, unknown>;
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : "";
    const first = ((err as Error).message ?? String(err)).split("\n")[0];
    throw new ConfigError(file, `invalid TOML${where}: ${first}`, { cause: err });
  }
  const { registry, ...other } = data;
  // A misspelt table would otherwise be ignored without a word, its settings never applied.
  for (const name of Object.keys(data)) {
    if (Object.hasOwn(CONFIG_TABLES, name)) continue;
    const known = Object.keys(CONFIG_TABLES)
      .map((table) => `[${table}]`)
      .join(", ");
    throw new ConfigError(
      file,
      isTable(data[name])
        ? `unknown table [${name}] (known: ${known})`
        : `unknown key ${name} (known tables: ${known})`,
    );
  }
  return { path: file, registries: readRegistries(registry, file), other };
}

/**
 * How a command reaches registries: config.toml's `[registry."host"]` tables (and its path, for
 * messages that name a key to set), the environment credentials are read from, where warnings go.
 * Every pull, push, login, cache import or export and base-image lookup gets them from here.
 */
export function registryOptions(
  config: TbuildConfig,
  context: { env: NodeJS.ProcessEnv; warn?: (message: string) => void; signal?: AbortSignal },
): RegistryOptions {
  return {
    hosts: config.registries,
    configPath: config.path,
    env: context.env,
    ...(context.warn ? { warn: context.warn } : {}),
    ...(context.signal ? { signal: context.signal } : {}),
  };
}

/** The keys of a `[registry."host"]` table. */
export const REGISTRY_KEYS = ["mirrors", "http", "insecure", "ca", "timeout"] as const;
/** The keys of `[gc]`. */
export const GC_KEYS = ["keep-storage", "keep-duration"] as const;
/** The keys of `[build]`: defaults of `tbuild build` flags. */
export const BUILD_KEYS = ["jobs"] as const;
/** The keys of `[worker]`: how the local worker runs a build's steps. */
export const WORKER_KEYS = ["snapshotter"] as const;
/** The keys of a `[worker.NAME]` table: a remote worker (docs/workers.md). */
export const REMOTE_WORKER_KEYS = [
  "url",
  "identity",
  "known-hosts",
  "command",
  "store",
  "platforms",
  "max-builds",
  "timeout",
] as const;
/** The keys of a `[pool.NAME]` table. */
export const POOL_KEYS = ["workers"] as const;
/** Every table config.toml may have, with its keys (docs/config.md describes each). */
export const CONFIG_TABLES = {
  registry: REGISTRY_KEYS,
  gc: GC_KEYS,
  build: BUILD_KEYS,
  worker: WORKER_KEYS,
  pool: POOL_KEYS,
} as const;

function readRegistries(value: unknown, file: string): RegistryHostsConfig {
  if (value === undefined) return {};
  if (!isTable(value)) throw new ConfigError(file, 'registry must be a table of [registry."host"] tables');
  const registries: RegistryHostsConfig = {};
  for (const [host, entry] of Object.entries(value)) {
    const key = `registry."${host}"`;
    if (!isTable(entry)) throw new ConfigError(file, `${key} must be a table`);
    const config: RegistryHostConfig = {};
    for (const [name, field] of Object.entries(entry)) {
      const fieldKey = `${key}.${name}`;
      if (!(REGISTRY_KEYS as readonly string[]).includes(name)) {
        throw new ConfigError(file, `unknown key ${fieldKey} (known: ${REGISTRY_KEYS.join(", ")})`);
      }
      if (name === "http" || name === "insecure") {
        if (typeof field !== "boolean") throw new ConfigError(file, `${fieldKey} must be true or false`);
        config[name] = field;
      } else if (name === "timeout") {
        const ms = typeof field === "string" ? parseDuration(field) : undefined;
        if (ms === undefined || ms <= 0) {
          throw new ConfigError(file, `${fieldKey} must be a duration such as "30s", "10m" or "1h"`);
        }
        config.timeout = ms;
      } else {
        if (!Array.isArray(field) || !field.every((item) => typeof item === "string" && item !== "")) {
          throw new ConfigError(file, `${fieldKey} must be an array of non-empty strings`);
        }
        const items = field as string[];
        // CA paths are relative to the config file, so a config dir can be moved whole.
        config[name as "mirrors" | "ca"] =
          name === "ca" ? items.map((p) => path.resolve(path.dirname(file), p)) : [...items];
      }
    }
    registries[host] = config;
  }
  return registries;
}

/**
 * `[gc]`: `keep-storage = "10GB"` (the build cache's own bytes) and `keep-duration = "168h"`
 * (records unused longer go), enforced at the end of each build. Undefined when the table is absent.
 */
export function readGcPolicy(config: TbuildConfig): GcPolicy | undefined {
  const table = config.other.gc;
  if (table === undefined) return undefined;
  if (!isTable(table)) throw new ConfigError(config.path, "gc must be a table");
  const policy: GcPolicy = {};
  for (const [name, value] of Object.entries(table)) {
    if (name === "keep-storage") {
      const bytes =
        typeof value === "number" ? value : typeof value === "string" ? parseSize(value) : undefined;
      if (bytes === undefined)
        throw new ConfigError(config.path, 'gc.keep-storage must be a size such as "10GB"');
      policy.keepStorage = bytes;
    } else if (name === "keep-duration") {
      const ms = typeof value === "string" ? parseDuration(value) : undefined;
      if (ms === undefined)
        throw new ConfigError(config.path, 'gc.keep-duration must be a duration such as "168h"');
      policy.keepDuration = ms;
    } else {
      throw new ConfigError(config.path, `unknown key gc.${name} (known: ${GC_KEYS.join(", ")})`);
    }
  }
  return policy;
}

/** `[build]`: `jobs = N`, the default of `tbuild build --jobs`. */
export function readBuildDefaults(config: TbuildConfig): { jobs?: number } {
  const table = config.other.build;
  if (table === undefined) return {};
  if (!isTable(table)) throw new ConfigError(config.path, "build must be a table");
  const defaults: { jobs?: number } = {};
  for (const [name, value] of Object.entries(table)) {
    if (name !== "jobs") {
      throw new ConfigError(config.path, `unknown key build.${name} (known: ${BUILD_KEYS.join(", ")})`);
    }
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
      throw new ConfigError(config.path, "build.jobs must be a whole number of at least 1");
    }
    defaults.jobs = value;
  }
  return defaults;
}

/** How a step's writable root filesystem is made: see SnapshotterOptions.mode. */
export type SnapshotterChoice = "auto" | "overlay" | "copy";
const SNAPSHOTTERS: readonly SnapshotterChoice[] = ["auto", "overlay", "copy"];

/**
 * `[worker]`: `snapshotter = "auto" | "overlay" | "copy"`, how build steps get their root
 * filesystem ("copy" is the fallback "auto" takes where overlayfs cannot be mounted).
 */
export function readWorkerSettings(config: TbuildConfig): { snapshotter?: SnapshotterChoice } {
  const table = config.other.worker;
  if (table === undefined) return {};
  if (!isTable(table)) throw new ConfigError(config.path, "worker must be a table");
  const settings: { snapshotter?: SnapshotterChoice } = {};
  for (const [name, value] of Object.entries(table)) {
    // A sub-table is a remote worker: readRemoteWorkers' to check.
    if (isTable(value) && name !== "snapshotter") continue;
    if (name !== "snapshotter") {
      throw new ConfigError(
        config.path,
        `unknown key worker.${name} (known: ${WORKER_KEYS.join(", ")}; a remote worker is a [worker.NAME] table)`,
      );
    }
    if (typeof value !== "string" || !(SNAPSHOTTERS as readonly string[]).includes(value)) {
      throw new ConfigError(config.path, `worker.snapshotter must be one of "${SNAPSHOTTERS.join('", "')}"`);
    }
    settings.snapshotter = value as SnapshotterChoice;
  }
  return settings;
}

/** A `[worker.NAME]` table: a remote worker, as `--worker NAME` and pools name it. */
export interface RemoteWorkerConfig {
  name: string;
  /** `ssh://[user@]host[:port]` or `cmd://COMMAND`. */
  url: string;
  /** The one private key to offer (absolute); absent: the ssh-agent and `~/.ssh/id_*`, as `ssh`. */
  identity?: string;
  /** The known_hosts file the host's key must be in (absolute). */
  knownHosts?: string;
  /** What the host runs (ssh://); absent: `tbuild worker --stdio`. */
  command?: string;
  /** The store the worker builds in, a path on its host; absent: its user's default store. */
  store?: string;
  /** The platforms it builds natively, normalized; absent: those it reports itself. */
  platforms?: string[];
  /** Builds it takes at once before a pool prefers another worker. */
  maxBuilds?: number;
  /** Milliseconds to reach it and hear its answer (SSH handshake, protocol handshake, `info`). */
  timeout?: number;
}

/** A `[pool.NAME]` table: workers a build may go to, in the order of preference among equals. */
export interface PoolConfig {
  name: string;
  workers: string[];
}

/** The name of a worker or pool, as written after `--worker` or `pool:`. */
const WORKER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * `[worker.NAME]` and `[pool.NAME]`: the remote workers and pools config.toml defines, checked
 * key by key (a pool naming an undefined worker is an error too).
 */
export function readRemoteWorkers(config: TbuildConfig): {
  workers: Record<string, RemoteWorkerConfig>;
  pools: Record<string, PoolConfig>;
} {
  const file = config.path;
  const workers: Record<string, RemoteWorkerConfig> = {};
  const workerTable = config.other.worker;
  if (workerTable !== undefined && !isTable(workerTable))
    throw new ConfigError(file, "worker must be a table");
  for (const [name, table] of Object.entries(workerTable ?? {})) {
    if (!isTable(table)) continue; // [worker]'s own keys: readWorkerSettings'.
    if (name === "snapshotter") {
      throw new ConfigError(
        file,
        "[worker.snapshotter] cannot name a worker: snapshotter is a key of [worker]",
      );
    }
    workers[name] = readRemoteWorker(name, table, file);
  }
  const pools: Record<string, PoolConfig> = {};
  const poolTable = config.other.pool;
  if (poolTable !== undefined && !isTable(poolTable))
    throw new ConfigError(file, "pool must be a table of [pool.NAME] tables");
  for (const [name, table] of Object.entries(poolTable ?? {})) {
    const key = `pool.${name}`;
    if (!isTable(table))
      throw new ConfigError(file, `${key} must be a table: [pool.${name}] workers = ["a", "b"]`);
    checkWorkerName(name, key, file);
    for (const field of Object.keys(table)) {
      if (field !== "workers")
        throw new ConfigError(file, `unknown key ${key}.${field} (known: ${POOL_KEYS.join(", ")})`);
    }
    const members = table.workers;
    if (
      !Array.isArray(members) ||
      members.length === 0 ||
      !members.every((m) => typeof m === "string" && m !== "")
    ) {
      throw new ConfigError(file, `${key}.workers must be a non-empty array of worker names`);
    }
    for (const member of members as string[]) {
      if (!Object.hasOwn(workers, member)) {
        throw new ConfigError(
          file,
          `${key}.workers names "${member}", which no [worker.${member}] table defines`,
        );
      }
    }
    pools[name] = { name, workers: [...new Set(members as string[])] };
  }
  return { workers, pools };
}

function checkWorkerName(name: string, key: string, file: string): void {
  if (!WORKER_NAME.test(name)) {
    throw new ConfigError(
      file,
      `[${key}]: a name is letters, digits, ".", "_" and "-", starting with a letter or digit`,
    );
  }
}

function readRemoteWorker(name: string, table: Record<string, unknown>, file: string): RemoteWorkerConfig {
  const key = `worker.${name}`;
  checkWorkerName(name, key, file);
  const worker: RemoteWorkerConfig = { name, url: "" };
  const text = (field: string, value: unknown): string => {
    if (typeof value !== "string" || value.trim() === "")
      throw new ConfigError(file, `${key}.${field} must be a non-empty string`);
    return value;
  };
  // Key files as ssh_config takes them: `~/` is the home directory, else relative to config.toml.
  const localPath = (value: string) =>
    value.startsWith("~/") ? path.join(homedir(), value.slice(2)) : path.resolve(path.dirname(file), value);
  for (const [field, value] of Object.entries(table)) {
    switch (field) {
      case "url": {
        const url = text(field, value);
        try {
          parseWorkerUrl(url);
        } catch (err) {
          throw new ConfigError(file, `${key}.url: ${(err as Error).message}`);
        }
        worker.url = url;
        break;
      }
      case "identity":
        worker.identity = localPath(text(field, value));
        break;
      case "known-hosts":
        worker.knownHosts = localPath(text(field, value));
        break;
      case "command":
        worker.command = text(field, value);
        break;
      case "store": {
        const store = text(field, value);
        if (!store.startsWith("/"))
          throw new ConfigError(file, `${key}.store must be an absolute path on the worker's host`);
        worker.store = store;
        break;
      }
      case "platforms": {
        if (!Array.isArray(value) || value.length === 0 || !value.every((p) => typeof p === "string"))
          throw new ConfigError(file, `${key}.platforms must be a non-empty array such as ["linux/amd64"]`);
        worker.platforms = (value as string[]).map((p) => {
          try {
            return formatPlatform(parsePlatform(p));
          } catch (err) {
            throw new ConfigError(file, `${key}.platforms: ${(err as Error).message}`);
          }
        });
        break;
      }
      case "max-builds":
        if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1)
          throw new ConfigError(file, `${key}.max-builds must be a whole number of at least 1`);
        worker.maxBuilds = value;
        break;
      case "timeout": {
        const ms = typeof value === "string" ? parseDuration(value) : undefined;
        if (ms === undefined || ms <= 0)
          throw new ConfigError(file, `${key}.timeout must be a duration such as "10s" or "1m"`);
        worker.timeout = ms;
        break;
      }
      default:
        throw new ConfigError(file, `unknown key ${key}.${field} (known: ${REMOTE_WORKER_KEYS.join(", ")})`);
    }
  }
  if (worker.url === "") throw new ConfigError(file, `${key} has no url: set url = "ssh://user@host"`);
  return worker;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}
