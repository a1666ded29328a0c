/**
 * Running a BuildGraph: cache keys bottom-up, then each vertex either reused from the cache or
 * run on the worker once its inputs are ready. Independent vertices run at the same time, up to
 * `jobs`; a vertex several stages need runs once; the first failure cancels everything else.
 *
 * A vertex has two keys, as in BuildKit. The first is known before anything runs: its op, its
 * inputs' first keys, and for a local source the checksum of what the vertex reads of it. When
 * it misses, the inputs are produced, and the second ("slow") key takes, for each input that is
 * a build result the vertex reads only some paths of (COPY --from a stage or an image, RUN
 * --mount=from=...), the checksum of those paths in that result, and for every other input that
 * input's own second key. A hit under it is reused; a run is recorded under both. So a stage that
 * ran again but gave the same files at the paths a later step reads leaves that step, and what
 * follows it, cached. Where no build result is read by path anywhere below a vertex, both keys
 * are the same.
 */
import PQueue from "p-queue";
import { TbuildError } from "../errors/index.js";
import type { CacheIndex, CacheRecord, KeyMaterial } from "./cache.js";
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
  remoteCache?: {
    get(key: string, signal: AbortSignal): Promise<{ result: FsResult; created?: number } | undefined>;
  };
  /** Vertices that must run even when cached (`--no-cache`, `--no-cache-filter`); what uses them runs too. */
  ignoreCache?: (digest: VertexDigest) => boolean;
}

export interface SolveResult {
  /** The (first) root's result. */
  result: FsResult;
  /** Each root's result, in the order given. */
  rootResults: FsResult[];
  /** Cache key of every vertex the build needed. */
  keys: Map<VertexDigest, string>;
  /** What each of those keys was made of, for `--explain`. */
  materials: Map<VertexDigest, KeyMaterial>;
  ran: VertexDigest[];
  cached: VertexDigest[];
  /**
   * The cached vertices found under their second key: their first missed (an input step ran
   * again), and what they read of their inputs had not changed. Each with its second key's material.
   */
  cachedByContent: Map<VertexDigest, KeyMaterial>;
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
  root: VertexDigest | readonly VertexDigest[],
  options: SolveOptions,
): Promise<SolveResult> {
  // Several roots (one per platform of a build): one solve, one queue, each shared vertex once.
  const roots = typeof root === "string" ? [root] : [...root];
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
  const needed = inputsFirst(roots, (digest) => vertexOf(digest).inputs);

  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const queue = new PQueue({ concurrency: options.jobs ?? (await import("node:os")).availableParallelism() });
  const emit = options.onEvent ?? (() => {});

  const keys = new Map<
    VertexDigest,
    Promise<{ key: string; material: KeyMaterial; selected: (string | undefined)[] | undefined }>
  >();
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
      return { key: digestOf(material), material, selected };
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
  const cachedByContent = new Map<VertexDigest, KeyMaterial>();
  let failure: StepFailedError | undefined;
  /** A vertex's result, and its second key: what the second keys of the vertices on it take. */
  type Produced = { result: FsResult; slowKey: string };
  const results = new Map<VertexDigest, Promise<Produced>>();
  const resultOf = (digest: VertexDigest): Promise<Produced> => {
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

  /**
   * The second key: the first key's material with, in place of each input's key, the checksum of
   * what the vertex reads of a build result, or that input's own second key.
   */
  const slowKeyOf = async (
    digest: VertexDigest,
    known: { material: KeyMaterial; selected: (string | undefined)[] | undefined },
    inputs: Produced[],
  ): Promise<{ key: string; material: KeyMaterial }> => {
    const vertex = vertexOf(digest);
    const read = await options.worker.resultSelectionKeys?.(
      vertex,
      vertex.inputs.map(vertexOf),
      inputs.map((input) => input.result),
      controller.signal,
    );
    const material: KeyMaterial = {
      ...known.material,
      inputs: inputs.map((input, i) => known.selected?.[i] ?? read?.[i] ?? input.slowKey),
    };
    if (material.inputs.every((key, i) => key === known.material.inputs[i])) {
      return { key: digestOf(known.material), material: known.material };
    }
    const slow: KeyMaterial = { ...material, slow: true };
    return { key: digestOf(slow), material: slow };
  };

  /** What a step's failure throws: the build's first failure (the others are cancellations). */
  const failed = (digest: VertexDigest, info: VertexInfo, err: unknown): StepFailedError => {
    if (controller.signal.aborted && failure) {
      emit({ type: "vertex.canceled", digest, info });
      return failure;
    }
    const error = err instanceof Error ? err : new Error(String(err));
    emit({ type: "vertex.failed", digest, info, error });
    failure ??= new StepFailedError(digest, info, err);
    controller.abort(failure);
    return failure;
  };

  const produce = async (digest: VertexDigest): Promise<Produced> => {
    const vertex = vertexOf(digest);
    const info = infoOf(digest);
    const known = await keyOf(digest);
    const { key, material } = known;
    const usable = async (hit: CacheRecord | undefined) =>
      hit !== undefined && (await layersPresent(hit.result, options.hasBlob)) ? hit : undefined;
    if (options.cache && !isForced(digest)) {
      const hit = await usable(options.cache.get(key));
      if (hit) {
        markCached(digest);
        return { result: hit.result, slowKey: hit.slowKey ?? key };
      }
      const imported = await options.remoteCache?.get(key, controller.signal);
      if (imported) {
        // Recorded only now that its layers are stored, like any result, dated when it was made.
        options.cache.put(key, imported.result, material, info.name, undefined, imported.created);
        markCached(digest);
        return { result: imported.result, slowKey: key };
      }
    }
    const inputs = await Promise.all(vertex.inputs.map(resultOf));
    // Reading what the step reads of its inputs can fail as running it would: the step failed.
    const slow = await slowKeyOf(digest, known, inputs).catch((err: unknown) => {
      throw failed(digest, info, err);
    });
    if (options.cache && !isForced(digest) && slow.key !== key) {
      const hit = await usable(options.cache.get(slow.key));
      if (hit) {
        // The next build with the same first key finds it at once.
        options.cache.put(key, hit.result, material, info.name, slow.key, hit.created);
        cachedByContent.set(digest, slow.material);
        markCached(digest);
        return { result: hit.result, slowKey: slow.key };
      }
    }
    return queue.add(
      async ({ signal }) => {
        const started = performance.now();
        emit({ type: "vertex.started", digest, info });
        try {
          const running = options.worker.run(
            vertex,
            inputs.map((input) => input.result),
            {
              digest,
              signal: signal ?? controller.signal,
              log: (stream, data) => emit({ type: "log", digest, stream, data }),
            },
          );
          inFlight.add(running.then(noop, noop));
          const result = await running;
          options.cache?.put(key, result, material, info.name, slow.key);
          if (slow.key !== key) options.cache?.put(slow.key, result, slow.material, info.name, slow.key);
          ran.push(digest);
          emit({ type: "vertex.completed", digest, info, durationMs: performance.now() - started });
          return { result, slowKey: slow.key };
        } catch (err) {
          throw failed(digest, info, err);
        }
      },
      { signal: controller.signal },
    );
  };

  try {
    const rootResults = (await Promise.all(roots.map((r) => resultOf(r)))).map((r) => r.result);
    const result = rootResults[0]!;
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
        (r) => r.result,
        () => undefined,
      );
      if (value) produced.set(digest, value);
    }
    return {
      result,
      rootResults,
      keys: resolvedKeys,
      materials,
      ran,
      cached,
      cachedByContent,
      results: produced,
    };
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
