/**
 * tbuild's config.toml (`$TBUILD_CONFIG`, else `$XDG_CONFIG_HOME/tbuild/config.toml`, else
 * `~/.config/tbuild/config.toml`), read with smol-toml into plain data. Only the tables tbuild knows
 * are checked key by key; other top-level tables are kept as they are for the features that will
 * read them (workers, GC policy). A missing file is an empty config; a bad one is an error naming
 * the file and the key.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { parse, TomlError } from "smol-toml";
import { TbuildError } from "../errors/index.js";
import type { RegistryHostConfig, RegistryHostsConfig, RegistryOptions } from "../oci/registry/index.js";
import { type GcPolicy, parseDuration, parseSize } from "../solver/gc.js";

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
/** Every table config.toml may have, with its keys (docs/config.md describes each). */
export const CONFIG_TABLES = {
  registry: REGISTRY_KEYS,
  gc: GC_KEYS,
  build: BUILD_KEYS,
  worker: WORKER_KEYS,
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
    if (name !== "snapshotter") {
      throw new ConfigError(config.path, `unknown key worker.${name} (known: ${WORKER_KEYS.join(", ")})`);
    }
    if (typeof value !== "string" || !(SNAPSHOTTERS as readonly string[]).includes(value)) {
      throw new ConfigError(config.path, `worker.snapshotter must be one of "${SNAPSHOTTERS.join('", "')}"`);
    }
    settings.snapshotter = value as SnapshotterChoice;
  }
  return settings;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}
