/**
 * `--cache-from` and `--cache-to` as a build uses them: the specs parsed (buildx's syntax), the
 * imported caches gathered into one ImportedCache, and after the solve the records collected and
 * written where `--cache-to` says. A type=local directory is reached through CacheDirectories:
 * this machine's file system, or, for a build on a remote worker, the client's (served over the
 * worker connection by build/remote-cache.ts).
 */
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import type { RegistryOptions } from "../oci/registry/index.js";
import type { ContentStore } from "../oci/store/content.js";
import type { CacheIndex } from "./cache.js";
import { type CacheDescription, type CacheMode, describeCache } from "./cache-description.js";
import {
  type CachePlatform,
  type CacheSource,
  exportCacheToDir,
  exportCacheToRegistry,
  ImportedCache,
  loadCacheFromDir,
  loadCacheFromRegistry,
  type MountExportReport,
} from "./cache-transfer.js";
import { checkCacheRef, mergeCacheDescriptions, partWriter, storeCacheWriter } from "./cache-writers.js";
import type { VertexDigest } from "./graph.js";
import type { FsResult } from "./worker.js";

export type CacheExportSpec =
  | {
      type: "registry";
      ref: string;
      mode: CacheMode;
      ignoreError?: boolean;
      /**
       * This build is one part (a platform) of a build made by several at once (remote workers):
       * it writes as a writer of its own, so that the parts' caches merge at the ref rather than
       * replace each other when two parts share a store (cache-writers.ts partWriter).
       */
      part?: string;
      /** `mounts=true`: the cache mounts the build used travel with the cache (build/cache-mount-transport.ts). */
      mounts?: boolean;
    }
  | { type: "local"; dest: string; mode: CacheMode; tag?: string; ignoreError?: boolean; mounts?: boolean }
  | { type: "inline" };

export type CacheImportSpec =
  | { type: "registry"; ref: string; mounts?: boolean }
  | { type: "local"; src: string; tag?: string; digest?: string; mounts?: boolean };

/**
 * Where type=local cache directories are. On this machine by default (`localCacheDirectories`);
 * a remote worker's build reaches the client's instead, as the client names them in its request.
 */
export interface CacheDirectories {
  /** The cache a `--cache-from type=local` names: its description now, its blobs on demand. */
  load(spec: Extract<CacheImportSpec, { type: "local" }>): Promise<CacheSource>;
  /** Writes a `--cache-to type=local`: the blobs there lacks (read from `content`), then its index. */
  write(
    spec: Extract<CacheExportSpec, { type: "local" }>,
    description: CacheDescription,
    content: ContentStore,
    onMount?: MountExportReport,
  ): Promise<void>;
}

/** The directories of this machine. */
export const localCacheDirectories: CacheDirectories = {
  load: (spec) => loadCacheFromDir(spec.src, spec),
  write: async (spec, description, content, onMount) => {
    await exportCacheToDir(content, description, spec.dest, spec.tag, onMount);
  },
};

/**
 * What tbuild does with an attribute buildx documents for a cache backend: acts on it (`used`),
 * accepts it knowing it changes nothing here (`no effect`), or does what some of its values ask
 * and nothing else (`only`: other values are refused as not supported yet). Anything else is a
 * usage error listing these.
 */
type AttributeRule = "used" | "no effect" | { only: string[] };

const TRUE = ["1", "t", "T", "true", "TRUE", "True"];
const FALSE = ["0", "f", "F", "false", "FALSE", "False"];

const EXPORT_ATTRIBUTES: Record<string, AttributeRule> = {
  mode: "used",
  "ignore-error": "used",
  // tbuild's own: the build's cache mounts travel with its cache.
  mounts: "used",
  // tbuild's cache is always an OCI image manifest with OCI media types: buildx's defaults.
  "oci-mediatypes": { only: TRUE },
  "image-manifest": { only: TRUE },
  // Layers are exported as the build compressed them (gzip, at its level), as BuildKit exports
  // already compressed layers unless told to force a recompression.
  compression: { only: ["gzip"] },
  "compression-level": "no effect",
  "force-compression": { only: FALSE },
};

const CACHE_TO: Record<string, Record<string, AttributeRule>> = {
  registry: { ref: "used", ...EXPORT_ATTRIBUTES },
  local: { dest: "used", tag: "used", ...EXPORT_ATTRIBUTES },
  // Read so that mounts=true gets its own message: an image config cannot carry a mount.
  inline: { mode: "used", mounts: "used" },
};

const CACHE_FROM: Record<string, Record<string, AttributeRule>> = {
  registry: { ref: "used", mounts: "used" },
  local: { src: "used", tag: "used", digest: "used", mounts: "used" },
};

/** The spec's `key=value` fields (keys lowercased, as buildx reads them), each checked against the type's attributes. */
function fieldsOf(
  spec: string,
  flag: "--cache-to" | "--cache-from",
  types: Record<string, Record<string, AttributeRule>>,
): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) throw new UsageError(`${flag} "${spec}": "${part}" is not KEY=VALUE`);
    const key = part.slice(0, eq).trim().toLowerCase();
    if (key in fields) throw new UsageError(`${flag} "${spec}": ${key} is given twice`);
    fields[key] = part.slice(eq + 1).trim();
  }
  const type = fields.type;
  const attributes = type !== undefined ? types[type] : undefined;
  if (attributes === undefined) {
    const known = Object.keys(types).join(", ");
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `${flag} "${spec}": type must be ${known} (others are not supported yet)`,
    );
  }
  for (const [key, value] of Object.entries(fields)) {
    if (key === "type") continue;
    const rule = attributes[key];
    if (rule === undefined) {
      const known = Object.keys(attributes).map((a) => `${a}=`);
      throw new UsageError(
        `${flag} "${spec}": type=${type} takes no ${key}= (${known.length > 0 ? `it takes ${known.join(", ")}` : "it takes no attributes"})`,
      );
    }
    if (typeof rule === "object" && !rule.only.includes(value)) {
      throw new TbuildError("E_NOT_SUPPORTED", `${flag} ${key}=${value} is not supported yet`);
    }
  }
  return fields;
}

function modeOf(fields: Record<string, string>, spec: string): CacheMode {
  const mode = fields.mode ?? "min";
  if (mode !== "min" && mode !== "max") throw new UsageError(`--cache-to "${spec}": mode must be min or max`);
  return mode;
}

/** Go's strconv.ParseBool, as buildx reads `ignore-error`. */
function booleanOf(
  fields: Record<string, string>,
  key: string,
  spec: string,
  flag: "--cache-to" | "--cache-from" = "--cache-to",
): boolean | undefined {
  const value = fields[key];
  if (value === undefined) return undefined;
  if (TRUE.includes(value)) return true;
  if (FALSE.includes(value)) return false;
  throw new UsageError(`${flag} "${spec}": ${key} must be true or false, not "${value}"`);
}

/** `mounts=`, kept in a spec only when true. */
function mountsOf(
  fields: Record<string, string>,
  spec: string,
  flag: "--cache-to" | "--cache-from",
): { mounts?: true } {
  return booleanOf(fields, "mounts", spec, flag) === true ? { mounts: true } : {};
}

/**
 * `type=registry,ref=R[,mode=min|max]`, `type=local,dest=DIR[,mode=…][,tag=T]`, `type=inline`,
 * with buildx's other attributes as `CACHE_TO` says; `ignore-error=true` makes a failed export a
 * warning; `mounts=true` (registry, local) exports the build's cache mounts with its cache.
 */
export function parseCacheExportSpec(spec: string, cwd: string): CacheExportSpec {
  const fields = fieldsOf(spec, "--cache-to", CACHE_TO);
  const ignoreError = booleanOf(fields, "ignore-error", spec);
  const options = {
    ...(ignoreError !== undefined ? { ignoreError } : {}),
    ...mountsOf(fields, spec, "--cache-to"),
  };
  switch (fields.type) {
    case "registry":
      if (!fields.ref) throw new UsageError(`--cache-to "${spec}": type=registry needs ref=`);
      checkCacheRef(fields.ref, `"${spec}"`);
      return { type: "registry", ref: fields.ref, mode: modeOf(fields, spec), ...options };
    case "local":
      if (!fields.dest) throw new UsageError(`--cache-to "${spec}": type=local needs dest=`);
      return {
        type: "local",
        dest: path.resolve(cwd, fields.dest),
        mode: modeOf(fields, spec),
        ...(fields.tag ? { tag: fields.tag } : {}),
        ...options,
      };
    default:
      if (options.mounts) {
        throw new UsageError(
          `--cache-to "${spec}": inline cache rides in the image config and cannot carry cache mounts; use type=registry or type=local with mounts=true`,
        );
      }
      if (fields.mode === "max") {
        throw new UsageError(
          `--cache-to "${spec}": inline cache holds only the image's own layers (mode=min)`,
        );
      }
      return { type: "inline" };
  }
}

/**
 * `type=registry,ref=R`, `type=local,src=DIR[,tag=T|digest=D]`, or a bare image reference (registry,
 * cache or inline); `mounts=true` seeds the build's cache mounts from those the cache carries.
 */
export function parseCacheImportSpec(spec: string, cwd: string): CacheImportSpec {
  if (!spec.includes("=")) return { type: "registry", ref: spec };
  const fields = fieldsOf(spec, "--cache-from", CACHE_FROM);
  const mounts = mountsOf(fields, spec, "--cache-from");
  if (fields.type === "registry") {
    if (!fields.ref) throw new UsageError(`--cache-from "${spec}": type=registry needs ref=`);
    return { type: "registry", ref: fields.ref, ...mounts };
  }
  if (!fields.src) throw new UsageError(`--cache-from "${spec}": type=local needs src=`);
  return {
    type: "local",
    src: path.resolve(cwd, fields.src),
    ...(fields.tag ? { tag: fields.tag } : {}),
    ...(fields.digest ? { digest: fields.digest } : {}),
    ...mounts,
  };
}

/**
 * Reads every `--cache-from`'s description (never a layer); undefined when none was given. One
 * import serves every platform a build makes: a record's key names its platform, so a step of one
 * platform never finds another's; an image index's inline caches are read for each of `platforms`.
 */
export async function importBuildCache(
  specs: CacheImportSpec[],
  content: ContentStore,
  registry: RegistryOptions & { platforms: CachePlatform[] },
  directories: CacheDirectories = localCacheDirectories,
): Promise<ImportedCache | undefined> {
  if (specs.length === 0) return undefined;
  const sources: CacheSource[] = [];
  for (const spec of specs) {
    const source =
      spec.type === "local" ? await directories.load(spec) : await loadCacheFromRegistry(spec.ref, registry);
    if (!source) continue;
    // A cache's mounts seed this build's only when its --cache-from asks (mounts=true).
    if (spec.mounts === true) sources.push(source);
    else sources.push({ ...source, description: { records: source.description.records } });
  }
  return new ImportedCache(content, sources);
}

/**
 * The records to export from a finished solve: each vertex's result as the solve produced it, or,
 * for steps below a cache hit, as the local cache records it, or as the imported cache does when
 * its layers are local. Records whose layers are not all in the content store are left out: an
 * export never refers to a blob it cannot send.
 */
export async function collectBuildCache(
  solved: { keys: Map<VertexDigest, string>; results: Map<VertexDigest, FsResult>; result: FsResult },
  cache: CacheIndex,
  imported: ImportedCache | undefined,
  content: ContentStore,
  mode: CacheMode,
): Promise<CacheDescription> {
  const local = new Map(cache.all().map((record) => [record.key, record]));
  const present = new Map<string, boolean>();
  const candidates = new Map<VertexDigest, FsResult>();
  for (const [digest, key] of solved.keys) {
    const result =
      solved.results.get(digest) ??
      local.get(key)?.result ??
      (imported?.record(key) ? { layers: imported.record(key)!.layers } : undefined);
    if (!result) continue;
    let complete = true;
    for (const layer of result.layers) {
      let known = present.get(layer.descriptor.digest);
      if (known === undefined) {
        known = await content.has(layer.descriptor.digest);
        present.set(layer.descriptor.digest, known);
      }
      complete &&= known;
    }
    if (complete) candidates.set(digest, result);
  }
  return describeCache(
    solved.keys,
    (digest) => candidates.get(digest),
    (_digest, key) => {
      const record = local.get(key);
      if (record) return { name: record.name, material: record.material, created: record.created };
      const fromImport = imported?.record(key);
      if (fromImport) {
        const { name, material, created } = fromImport;
        return { name, material, ...(created !== undefined ? { created } : {}) };
      }
      return undefined;
    },
    solved.result.layers,
    mode,
  );
}

/**
 * The one cache a build of several platforms exports, as BuildKit writes one cache manifest for
 * it: every platform's records, a step the platforms share (one key) once.
 */
export function combinePlatformCaches(descriptions: CacheDescription[]): CacheDescription {
  return mergeCacheDescriptions(descriptions);
}

/**
 * Writes a collected description where a registry or local `--cache-to` says; a registry cache
 * goes under the store's own writer tag (or its part's) and is merged at the ref (cache-writers.ts).
 */
export async function writeBuildCache(
  spec: Exclude<CacheExportSpec, { type: "inline" }>,
  description: CacheDescription,
  store: { root: string; content: ContentStore },
  registry: RegistryOptions,
  directories: CacheDirectories = localCacheDirectories,
  onMount?: MountExportReport,
): Promise<void> {
  if (spec.type === "registry") {
    const writer = await storeCacheWriter(store.root);
    const own = spec.part !== undefined ? partWriter(writer, spec.part) : writer;
    await exportCacheToRegistry(store.content, description, spec.ref, own, registry, onMount);
  } else await directories.write(spec, description, store.content, onMount);
}
