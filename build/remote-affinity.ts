/**
 * How much of a build's cache a worker holds, for a pool's scheduler (build/remote-target.ts):
 * "the one holding most of the build's cache keys". The client cannot compute a build's keys
 * before the worker has its context and base images, so the worker answers from its past: after
 * each remote build it records, per client context (remote-serve.ts `contextKey`) and Dockerfile
 * digest, the cache keys that build solved; asked about a context, it counts how many of the keys
 * of its last build of it (with that Dockerfile, else any) are still in its cache index. A garbage
 * collection or `tbuild prune` there lowers the count, as it should.
 *
 * The record is `<store>/remote-contexts/<contextKey>.keys.json`: the last few Dockerfiles' keys.
 */
import { existsSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import { CacheIndex } from "../solver/cache.js";

/** What a client asks with `affinity`. */
export interface AffinityParams {
  contextKey: string;
  /** `sha256:…` of the Dockerfile's bytes. */
  dockerfile: string;
}

/** What `affinity` answers: of the `keys` its last build of that context solved, how many are cached. */
export interface AffinityAnswer {
  cached: number;
  keys: number;
}

interface KeysRecord {
  builds: { dockerfile: string; keys: string[]; at: number }[];
}

/** Dockerfiles of one context remembered (a branch switch back finds its keys). */
const KEPT_DOCKERFILES = 8;

const recordFile = (storeRoot: string, contextKey: string) =>
  path.join(storeRoot, "remote-contexts", `${contextKey}.keys.json`);

async function readRecord(file: string): Promise<KeysRecord> {
  try {
    const record = JSON.parse(await readFile(file, "utf8")) as KeysRecord;
    return Array.isArray(record.builds) ? record : { builds: [] };
  } catch {
    // Absent, or half-written by a worker killed mid-write: no affinity, never an error.
    return { builds: [] };
  }
}

/** After a build of `contextKey` with this Dockerfile: the keys it solved. */
export async function recordBuildKeys(
  storeRoot: string,
  params: AffinityParams,
  keys: string[],
): Promise<void> {
  const file = recordFile(storeRoot, params.contextKey);
  const record = await readRecord(file);
  const builds = [
    { dockerfile: params.dockerfile, keys, at: Date.now() },
    ...record.builds.filter((b) => b.dockerfile !== params.dockerfile),
  ].slice(0, KEPT_DOCKERFILES);
  const temp = `${file}.${process.pid}.tmp`;
  await writeFile(temp, JSON.stringify({ builds } satisfies KeysRecord));
  await rename(temp, file);
}

/** The answer to `affinity`: 0 of 0 for a context this worker never built. */
export async function answerAffinity(storeRoot: string, params: AffinityParams): Promise<AffinityAnswer> {
  if (!/^[0-9a-f]{16,64}$/.test(params.contextKey ?? "")) return { cached: 0, keys: 0 };
  const { builds } = await readRecord(recordFile(storeRoot, params.contextKey));
  const last = builds.find((b) => b.dockerfile === params.dockerfile) ?? builds[0];
  const indexFile = path.join(storeRoot, "cache", "index.db");
  if (!last || !existsSync(indexFile)) return { cached: 0, keys: last?.keys.length ?? 0 };
  const cache = new CacheIndex(indexFile);
  try {
    return {
      cached: last.keys.filter((key) => cache.createdAt(key) !== undefined).length,
      keys: last.keys.length,
    };
  } finally {
    cache.close();
  }
}
