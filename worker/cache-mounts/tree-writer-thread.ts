/**
 * The thread that makes an unpack's file system calls (tree-calls.ts): batches in, in order; for
 * each, null when all its calls were made, or the failed call. After a failure it makes no more.
 */
import { parentPort, workerData } from "node:worker_threads";
import { type FailedTreeCall, type TreeCallBatch, TreeCallMaker, type TreeCallPolicy } from "./tree-calls.js";

const maker = new TreeCallMaker(workerData as TreeCallPolicy);
let failed: FailedTreeCall | undefined;
parentPort!.on("message", (batch: TreeCallBatch) => {
  if (!failed) failed = maker.make(batch);
  parentPort!.postMessage(failed ?? null);
});
