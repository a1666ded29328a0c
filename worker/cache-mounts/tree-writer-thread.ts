/**
 * The thread that makes an unpack's file system calls (tree-calls.ts): batches in, in order, each
 * read in place from a slot of memory shared with the queue; for each, the failed call if one
 * did, and the slot, to be filled again. After a failure it makes no more.
 */
import { parentPort, workerData } from "node:worker_threads";
import {
  type FailedTreeCall,
  TreeCallMaker,
  type TreeCallMessage,
  type TreeCallPolicy,
  type TreeCallReply,
} from "./tree-calls.js";

const maker = new TreeCallMaker(workerData as TreeCallPolicy);
const slots: NonNullable<TreeCallMessage["buffers"]>[] = [];
let failed: FailedTreeCall | undefined;
parentPort!.on("message", ({ slot, length, buffers }: TreeCallMessage) => {
  if (buffers) slots[slot] = buffers;
  if (!failed) failed = maker.make({ ...slots[slot]!, length });
  const reply: TreeCallReply = { failed, slot };
  parentPort!.postMessage(reply);
});
