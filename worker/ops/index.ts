/**
 * The ops a worker runs, one module each: `image` (a base image's layers), `local` (the build
 * context), `exec` (RUN), `file` (COPY, ADD, WORKDIR, heredoc files), `merge` (COPY --link),
 * `http` and `git` (ADD of URLs). Each takes its inputs' filesystems and returns its own, as a
 * stack of layers in the content store.
 *
 * Each op's module is loaded when an op of its kind first runs: a fully cached build runs none,
 * and loading them all (the sandbox, the unpacker, the registry client) was most of its start-up.
 */
import type { Vertex } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import type { OpContext } from "./context.js";
import { localContentKey } from "./local.js";

export type { OpContext, SecretSource } from "./context.js";
export { prepareLayers } from "./layers.js";
export { contextChecksum } from "./local.js";

/** Runs one vertex on its inputs' results. */
export async function runOp(vertex: Vertex, inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  const op = vertex.op;
  switch (op.kind) {
    case "image":
      return (await import("./image.js")).runImage(op, inputs, ctx);
    case "local":
      return (await import("./local.js")).runLocal(op, inputs, ctx);
    case "exec":
      return (await import("./exec.js")).runExec(op, inputs, ctx);
    case "file":
      return (await import("./file.js")).runFile(op, inputs, ctx);
    case "merge":
      return (await import("./merge.js")).runMerge(op, inputs);
    case "http":
      return (await import("./http.js")).runHttp(op, inputs, ctx);
    case "git":
      return (await import("./git.js")).runGit(op, inputs, ctx);
  }
}

/**
 * What a vertex's cache key needs beyond its definition: the checksum of the context files a
 * `local` op selects, the digest an `http` download has (or promises), the commit a `git` ref
 * names; for a step that makes a layer (RUN, COPY), the SOURCE_DATE_EPOCH its layer's times are
 * clamped to, so that a layer made without it is never reused by a build that asks for it. Other
 * ops are fully described by their definition and their inputs' keys.
 */
export async function opContentKey(vertex: Vertex, ctx: OpContext): Promise<string | undefined> {
  const op = vertex.op;
  switch (op.kind) {
    case "local":
      return localContentKey(op, ctx);
    case "http":
      return (await import("./http.js")).httpContentKey(op, ctx);
    case "git":
      return (await import("./git.js")).gitContentKey(op, ctx);
    case "exec":
    case "file":
      return ctx.sourceDateEpoch !== undefined ? `SOURCE_DATE_EPOCH=${ctx.sourceDateEpoch}` : undefined;
    default:
      return undefined;
  }
}
