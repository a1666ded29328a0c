/**
 * The ops a worker runs, one module each: `image` (a base image's layers), `local` (the build
 * context), `exec` (RUN), `file` (COPY, ADD, WORKDIR, heredoc files), `merge` (COPY --link),
 * `http` and `git` (ADD of URLs). Each takes its inputs' filesystems and returns its own, as a
 * stack of layers in the content store.
 */
import type { Vertex } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import type { OpContext } from "./context.js";
import { runExec } from "./exec.js";
import { runFile } from "./file.js";
import { gitContentKey, runGit } from "./git.js";
import { httpContentKey, runHttp } from "./http.js";
import { runImage } from "./image.js";
import { localContentKey, runLocal } from "./local.js";
import { runMerge } from "./merge.js";

export type { OpContext, SecretSource } from "./context.js";
export { prepareLayers } from "./layers.js";
export { contextChecksum } from "./local.js";

/** Runs one vertex on its inputs' results. */
export function runOp(vertex: Vertex, inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  const op = vertex.op;
  switch (op.kind) {
    case "image":
      return runImage(op, inputs, ctx);
    case "local":
      return runLocal(op, inputs, ctx);
    case "exec":
      return runExec(op, inputs, ctx);
    case "file":
      return runFile(op, inputs, ctx);
    case "merge":
      return runMerge(op, inputs);
    case "http":
      return runHttp(op, inputs, ctx);
    case "git":
      return runGit(op, inputs, ctx);
  }
}

/**
 * What a vertex's cache key needs beyond its definition: the checksum of the context files a
 * `local` op selects, the digest an `http` download has (or promises), the commit a `git` ref
 * names. Other ops are fully described by their definition and their inputs' keys.
 */
export async function opContentKey(vertex: Vertex, ctx: OpContext): Promise<string | undefined> {
  const op = vertex.op;
  switch (op.kind) {
    case "local":
      return localContentKey(op, ctx);
    case "http":
      return httpContentKey(op, ctx);
    case "git":
      return gitContentKey(op, ctx);
    default:
      return undefined;
  }
}
