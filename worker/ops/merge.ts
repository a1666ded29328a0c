/**
 * `merge` (`COPY --link`): the inputs' layer stacks one after the other. No file is copied: the
 * linked layer was made on an empty filesystem, so it stacks onto any base, and a rebuild of the
 * base does not invalidate it.
 */
import type { MergeOp } from "../../solver/graph.js";
import type { FsResult, LayerRef } from "../../solver/worker.js";

export async function runMerge(_op: MergeOp, inputs: FsResult[]): Promise<FsResult> {
  const layers: LayerRef[] = [];
  for (const input of inputs) layers.push(...input.layers);
  return { layers };
}
