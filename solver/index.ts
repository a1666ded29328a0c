/**
 * The solver: the BuildGraph (the IR every other folder speaks), cache keys and the cache index,
 * and `solve`, which runs a graph on a Worker with parallelism, dedupe and cancellation.
 */
export { CacheIndex, type CacheRecord, type KeyMaterial } from "./cache.js";
export { canonicalJson, digestOf, sha256Digest } from "./digest.js";
export type * from "./graph.js";
export { type SolveEvent, type SolveOptions, type SolveResult, StepFailedError, solve } from "./solve.js";
export { inputsFirst } from "./walk.js";
export type { FsResult, LayerRef, VertexContext, Worker } from "./worker.js";
