/**
 * The thread that makes an unpack's file system calls (tree-calls.ts): batches in, in order; for
 * each, the failed call if one did, and the batch's buffers back to be filled again. After a
 * failure it makes no more.
 */
import { parentPort, workerData } from "node:worker_threads";
import {
  type FailedTreeCall,
  type TreeCallBatch,
  TreeCallMaker,
  type TreeCallPolicy,
  type TreeCallReply,
} from "./tree-calls.js";

const maker = new TreeCallMaker(workerData as TreeCallPolicy);
let failed: FailedTreeCall | undefined;
parentPort!.on("message", (batch: TreeCallBatch) => {
  if (!failed) failed = maker.make(batch);
  const reply: TreeCallReply = { failed, batch };
  parentPort!.postMessage(reply, [batch.calls, batch.data]);
});
