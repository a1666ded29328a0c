/**
 * The worker on this machine: the solver's `Worker`, running each op in this process (and its
 * sandboxes). The remote worker speaks the same interface over SSH.
 */
import type { Vertex } from "../solver/graph.js";
import type { FsResult, VertexContext, Worker } from "../solver/worker.js";
import type { OpContext } from "./ops/context.js";
import { opContentKey, runOp } from "./ops/index.js";

export type LocalWorkerOptions = Omit<OpContext, "signal" | "log">;

export class LocalWorker implements Worker {
  private readonly options: LocalWorkerOptions;

  constructor(options: LocalWorkerOptions) {
    this.options = {
      contextSelections: new WeakMap(),
      localSelections: new Map(),
      resultFileHashes: new Map(),
      ...options,
    };
  }

  contentKey(vertex: Vertex, signal: AbortSignal): Promise<string | undefined> {
    return opContentKey(vertex, { ...this.options, signal, log: () => {} });
  }

  async selectionKeys(vertex: Vertex, inputs: readonly Vertex[], signal: AbortSignal) {
    const { selectionKeys } = await import("./ops/selection.js");
    return selectionKeys(vertex, inputs, { ...this.options, signal, log: () => {} });
  }

  async resultSelectionKeys(
    vertex: Vertex,
    inputs: readonly Vertex[],
    results: readonly FsResult[],
    signal: AbortSignal,
  ) {
    const { resultSelectionKeys } = await import("./ops/result-selection.js");
    return resultSelectionKeys(vertex, inputs, results, { ...this.options, signal, log: () => {} });
  }

  run(vertex: Vertex, inputs: FsResult[], ctx: VertexContext): Promise<FsResult> {
    const ignoringCache = this.options.ignoreCache?.(ctx.digest) === true;
    return runOp(vertex, inputs, { ...this.options, signal: ctx.signal, log: ctx.log, ignoringCache });
  }
}
