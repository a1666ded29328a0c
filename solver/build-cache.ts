/**
 * `--cache-from` and `--cache-to` as a build uses them: the specs parsed (buildx's syntax), the
 * imported caches gathered into one ImportedCache, and after the solve the records collected and
 * written where `--cache-to` says.
 */
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import type { RegistryOptions } from "../oci/registry/index.js";
import type { ContentStore } from "../oci/store/content.js";
import type { CacheIndex } from "./cache.js";
import { type CacheDescription, type CacheMode, describeCache } from "./cache-description.js";
import {
  type CacheSource,
  exportCacheToDir,
  exportCacheToRegistry,
  ImportedCache,
  loadCacheFromDir,
  loadCacheFromRegistry,
} from "./cache-transfer.js";
import type { VertexDigest } from "./graph.js";
import type { FsResult } from "./worker.js";

export type CacheExportSpec =
  | { type: "registry"; ref: string; mode: CacheMode }
  | { type: "local"; dest: string; mode: CacheMode }
  | { type: "inline" };

export type CacheImportSpec = { type: "registry"; ref: string } | { type: "local"; src: string };

function fieldsOf(spec: string, flag: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const part of spec.split(",")) {
    const eq = part.indexOf("=");
    if (eq < 0) throw new UsageError(`${flag} "${spec}": "${part}" is not KEY=VALUE`);
    fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return fields;
}

function modeOf(fields: Record<string, string>, spec: string): CacheMode {
  const mode = fields.mode ?? "min";
  if (mode !== "min" && mode !== "max") throw new UsageError(`--cache-to "${spec}": mode must be min or max`);
  return mode;
}

/** `type=registry,ref=R[,mode=min|max]`, `type=local,dest=DIR[,mode=…]`, `type=inline`. */
export function parseCacheExportSpec(spec: string, cwd: string): CacheExportSpec {
  const fields = fieldsOf(spec, "--cache-to");
  switch (fields.type) {
    case "registry":
      if (!fields.ref) throw new UsageError(`--cache-to "${spec}": type=registry needs ref=`);
      return { type: "registry", ref: fields.ref, mode: modeOf(fields, spec) };
    case "local":
      if (!fields.dest) throw new UsageError(`--cache-to "${spec}": type=local needs dest=`);
      return { type: "local", dest: path.resolve(cwd, fields.dest), mode: modeOf(fields, spec) };
    case "inline":
      if (fields.mode === "max") {
        throw new UsageError(
          `--cache-to "${spec}": inline cache holds only the image's own layers (mode=min)`,
        );
      }
      return { type: "inline" };
    default:
      throw new TbuildError(
        "E_NOT_SUPPORTED",
        `--cache-to "${spec}": type must be registry, local or inline (others are not supported yet)`,
      );
  }
}

/** `type=registry,ref=R`, `type=local,src=DIR`, or a bare image reference (registry, cache or inline). */
export function parseCacheImportSpec(spec: string, cwd: string): CacheImportSpec {
  if (!spec.includes("=")) return { type: "registry", ref: spec };
  const fields = fieldsOf(spec, "--cache-from");
  switch (fields.type) {
    case "registry":
      if (!fields.ref) throw new UsageError(`--cache-from "${spec}": type=registry needs ref=`);
      return { type: "registry", ref: fields.ref };
    case "local":
      if (!fields.src) throw new UsageError(`--cache-from "${spec}": type=local needs src=`);
      return { type: "local", src: path.resolve(cwd, fields.src) };
    default:
      throw new TbuildError(
        "E_NOT_SUPPORTED",
        `--cache-from "${spec}": type must be registry or local (others are not supported yet)`,
      );
  }
}

/** Reads every `--cache-from`'s description (never a layer); undefined when none was given. */
export async function importBuildCache(
  specs: CacheImportSpec[],
  content: ContentStore,
  registry: RegistryOptions & { platform?: { os: string; architecture: string } },
): Promise<ImportedCache | undefined> {
  if (specs.length === 0) return undefined;
  const sources: CacheSource[] = [];
  for (const spec of specs) {
    const source =
      spec.type === "local"
        ? await loadCacheFromDir(spec.src)
        : await loadCacheFromRegistry(spec.ref, registry);
    if (source) sources.push(source);
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
      if (record) return { name: record.name, material: record.material };
      const fromImport = imported?.record(key);
      if (fromImport) return { name: fromImport.name, material: fromImport.material };
      return undefined;
    },
    solved.result.layers,
    mode,
  );
}

/** Writes a collected description where a registry or local `--cache-to` says. */
export async function writeBuildCache(
  spec: Exclude<CacheExportSpec, { type: "inline" }>,
  description: CacheDescription,
  content: ContentStore,
  registry: RegistryOptions,
): Promise<void> {
  if (spec.type === "registry") await exportCacheToRegistry(content, description, spec.ref, registry);
  else await exportCacheToDir(content, description, spec.dest);
}
