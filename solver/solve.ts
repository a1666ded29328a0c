/**
 * Running a BuildGraph: cache keys bottom-up, then each vertex either reused from the cache or
 * run on the worker once its inputs are ready. Independent vertices run at the same time, up to
 * `jobs`; a vertex several stages need runs once; the first failure cancels everything else.
 */
import PQueue from "p-queue";
import { TbuildError } from "../errors/index.js";
import type { CacheIndex, KeyMaterial } from "./cache.js";
import { digestOf } from "./digest.js";
import type { BuildGraph, VertexDigest, VertexInfo } from "./graph.js";
import { inputsFirst } from "./walk.js";
import type { FsResult, Worker } from "./worker.js";

export type SolveEvent =
  | { type: "vertex.cached"; digest: VertexDigest; info: VertexInfo }
  | { type: "vertex.started"; digest: VertexDigest; info: VertexInfo }
  | { type: "vertex.completed"; digest: VertexDigest; info: VertexInfo; durationMs: number }
  | { type: "vertex.failed"; digest: VertexDigest; info: VertexInfo; error: Error }
  | { type: "vertex.canceled"; digest: VertexDigest; info: VertexInfo }
  | { type: "log"; digest: VertexDigest; stream: 1 | 2; data: Uint8Array };

export interface SolveOptions {
  worker: Worker;
  /** Absent: nothing is reused or recorded. */
  cache?: CacheIndex;
  /** Whether a layer blob is still in the content store: a cache record whose layers are gone is a miss. */
  hasBlob?: (digest: string) => Promise<boolean>;
  /** How many vertices run at once; the CPU count by default. */
  jobs?: number;
  signal?: AbortSignal;
  onEvent?: (event: SolveEvent) => void;
  /**
   * Imported build cache (`--cache-from`), read-only, asked after the local cache misses. `get`
   * answers with a result whose layers are already in the content store (fetched on demand: the
   * solver asks only when the step's result is needed); the hit is then recorded locally.
   */
  remoteCache?: { get(key: string, signal: AbortSignal): Promise<FsResult | undefined> };
  /** Vertices that must run even when cached (`--no-cache`, `--no-cache-filter`); what uses them runs too. */
  ignoreCache?: (digest: VertexDigest) => boolean;
}

export interface SolveResult {
  result: FsResult;
  /** Cache key of every vertex the build needed. */
  keys: Map<VertexDigest, string>;
  /** What each of those keys was made of, for `--explain`. */
  materials: Map<VertexDigest, KeyMaterial>;
  ran: VertexDigest[];
  cached: VertexDigest[];
  /** The result of every vertex that was produced (run, or taken from a cache); not those below a cache hit. */
  results: Map<VertexDigest, FsResult>;
}

/** A step failed: names it (and where it is in the Dockerfile); the worker's error says why. */
export class StepFailedError extends TbuildError {
  readonly digest: VertexDigest;
  readonly info: VertexInfo;

  constructor(digest: VertexDigest, info: VertexInfo, cause: unknown) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    const where = info.location ? ` (${info.location.file}:${info.location.startLine})` : "";
    super("E_STEP_FAILED", `${info.name}${where}: ${reason}`, { cause });
    this.digest = digest;
    this.info = info;
  }
}

export async function solve(
  graph: BuildGraph,
  root: VertexDigest,
  options: SolveOptions,
): Promise<SolveResult> {
  const vertexOf = (digest: VertexDigest) => {
    const vertex = graph.vertices[digest];
    if (!vertex) throw new Error(`the build graph has no vertex ${digest}`);
    return vertex;
  };
  const infoOf = (digest: VertexDigest): VertexInfo =>
    graph.info[digest] ?? { name: vertexOf(digest).op.kind };
  // Every vertex the root needs, inputs first: keys and forced runs are worked out in this order,
  // so that each vertex finds its inputs' already there (a recursion would overflow the stack on
  // a Dockerfile thousands of steps long).
  const needed = inputsFirst([root], (digest) => vertexOf(digest).inputs);

  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const queue = new PQueue({ concurrency: options.jobs ?? (await import("node:os")).availableParallelism() });
  const emit = options.onEvent ?? (() => {});

  const keys = new Map<VertexDigest, Promise<{ key: string; material: KeyMaterial }>>();
  const keyOf = (digest: VertexDigest) => keys.get(digest)!;
  for (const digest of needed) {
    const vertex = vertexOf(digest);
    const known = (async () => {
      // What the vertex reads of a local source stands for that input: its selection's checksum.
      const selected = await options.worker.selectionKeys?.(
        vertex,
        vertex.inputs.map(vertexOf),
        controller.signal,
      );
      const inputs = await Promise.all(
        vertex.inputs.map(async (input, i) => selected?.[i] ?? (await keyOf(input)).key),
      );
      const content = await options.worker.contentKey(vertex, controller.signal);
      const material: KeyMaterial = {
        op: vertex.op,
        inputs,
        ...(content !== undefined ? { content } : {}),
      };
      return { key: digestOf(material), material };
    })();
    // A failed key fails the vertices that need it; it must not also be an unhandled rejection.
    known.catch(() => {});
    keys.set(digest, known);
  }

  const forced = new Map<VertexDigest, boolean>();
  for (const digest of needed) {
    const vertex = vertexOf(digest);
    forced.set(
      digest,
      options.ignoreCache?.(digest) === true || vertex.inputs.some((input) => forced.get(input)),
    );
  }
  const isForced = (digest: VertexDigest): boolean => forced.get(digest) === true;

  // Every worker run started: p-queue rejects an aborted task's promise at once, so solve waits
  // for these itself before it settles, and no step is still cleaning up when the caller goes on.
  const inFlight = new Set<Promise<void>>();
  const noop = () => {};
  const ran: VertexDigest[] = [];
  const cached: VertexDigest[] = [];
  let failure: StepFailedError | undefined;
  const results = new Map<VertexDigest, Promise<FsResult>>();
  const resultOf = (digest: VertexDigest): Promise<FsResult> => {
    let known = results.get(digest);
    if (!known) {
      known = produce(digest);
      // A result nobody awaits yet must not become an unhandled rejection; the first failure is reported once.
      known.catch(() => {});
      results.set(digest, known);
    }
    return known;
  };

  // A cached result stands for every step below it too: none of them runs, and progress says so
  // for each, inputs first, as BuildKit's does.
  const reported = new Set<VertexDigest>();
  const markCached = (digest: VertexDigest) => {
    const below = (d: VertexDigest) => vertexOf(d).inputs.filter((input) => !results.has(input));
    for (const step of inputsFirst([digest], below, reported)) {
      cached.push(step);
      emit({ type: "vertex.cached", digest: step, info: infoOf(step) });
    }
  };

  const produce = async (digest: VertexDigest): Promise<FsResult> => {
    const vertex = vertexOf(digest);
    const info = infoOf(digest);
    const { key, material } = await keyOf(digest);
    if (options.cache && !isForced(digest)) {
      const hit = options.cache.get(key);
      if (hit && (await layersPresent(hit.result, options.hasBlob))) {
        markCached(digest);
        return hit.result;
      }
      const imported = await options.remoteCache?.get(key, controller.signal);
      if (imported) {
        // Recorded only now that its layers are stored, like any result.
        options.cache.put(key, imported, material, info.name);
        markCached(digest);
        return imported;
      }
    }
    const inputs = await Promise.all(vertex.inputs.map(resultOf));
    return queue.add(
      async ({ signal }) => {
        const started = performance.now();
        emit({ type: "vertex.started", digest, info });
        try {
          const running = options.worker.run(vertex, inputs, {
            digest,
            signal: signal ?? controller.signal,
            log: (stream, data) => emit({ type: "log", digest, stream, data }),
          });
          inFlight.add(running.then(noop, noop));
          const result = await running;
          options.cache?.put(key, result, material, info.name);
          ran.push(digest);
          emit({ type: "vertex.completed", digest, info, durationMs: performance.now() - started });
          return result;
        } catch (err) {
          if (controller.signal.aborted && failure) {
            emit({ type: "vertex.canceled", digest, info });
            throw failure;
          }
          const error = err instanceof Error ? err : new Error(String(err));
          emit({ type: "vertex.failed", digest, info, error });
          failure ??= new StepFailedError(digest, info, err);
          controller.abort(failure);
          throw failure;
        }
      },
      { signal: controller.signal },
    );
  };

  try {
    const result = await resultOf(root);
    const resolvedKeys = new Map<VertexDigest, string>();
    const materials = new Map<VertexDigest, KeyMaterial>();
    for (const [digest, pendingKey] of keys) {
      const known = await pendingKey;
      resolvedKeys.set(digest, known.key);
      materials.set(digest, known.material);
    }
    const produced = new Map<VertexDigest, FsResult>();
    for (const [digest, pending] of results) {
      const value = await pending.then(
        (r) => r,
        () => undefined,
      );
      if (value) produced.set(digest, value);
    }
    return { result, keys: resolvedKeys, materials, ran, cached, results: produced };
  } catch (err) {
    // Abort reasons from p-queue for tasks that never started are the failure itself or the outer abort.
    if (failure) throw failure;
    throw err;
  } finally {
    options.signal?.removeEventListener("abort", onOuterAbort);
    if (!controller.signal.aborted) controller.abort();
    queue.clear();
    await Promise.all(inFlight);
  }
}

async function layersPresent(result: FsResult, hasBlob: SolveOptions["hasBlob"]): Promise<boolean> {
  if (!hasBlob) return true;
  for (const layer of result.layers) if (!(await hasBlob(layer.descriptor.digest))) return false;
  return true;
}
