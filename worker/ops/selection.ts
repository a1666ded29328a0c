/**
 * What a step reads of a local source (the build context, a `--build-context NAME=DIR`): the paths
 * its COPY and ADD sources name, and the source of its RUN bind or cache mounts. The step's cache
 * key takes the checksum of exactly those files in place of the whole source's key, as BuildKit
 * keys a copy on the content hash of the paths it follows: editing a file no step copies re-runs
 * nothing, and editing one re-runs the first step that reads it and what comes after it.
 *
 * A selection is checksummed by the same walk and rules as the local op's own key (local.ts):
 * `.dockerignore` applied, symlink targets followed, content, type, permission bits and link
 * targets, never mtimes.
 */
import path from "node:path";
import type { Vertex } from "../../solver/graph.js";
import type { OpContext } from "./context.js";
import { localChecksum } from "./local.js";

/**
 * For each input of `vertex` that is a local source, the checksum of what `vertex` selects of it;
 * undefined where an input is not a local source (its own key stands for it).
 */
export async function selectionKeys(
  vertex: Vertex,
  inputs: readonly Vertex[],
  ctx: OpContext,
): Promise<(string | undefined)[]> {
  return Promise.all(
    inputs.map(async (input, index) => {
      if (input.op.kind !== "local") return undefined;
      const paths = selectedPaths(vertex, index);
      if (paths === undefined) return undefined;
      return localChecksum(
        { ...input.op, followPaths: paths.includes("/") ? [] : [...new Set(paths)].sort() },
        ctx,
      );
    }),
  );
}

/** The paths `vertex` reads of its input `index`, absolute inside it; undefined when it reads it some other way. */
function selectedPaths(vertex: Vertex, index: number): string[] | undefined {
  const op = vertex.op;
  const paths: string[] = [];
  if (op.kind === "file") {
    if (op.base === index) return undefined;
    for (const action of op.actions) {
      if (action.action !== "copy" || action.input !== index) continue;
      // --parents: the source is the pivot, and the include patterns what is copied below it.
      if (action.includePatterns.length > 0) {
        for (const pattern of action.includePatterns) paths.push(path.posix.join("/", action.src, pattern));
      } else {
        paths.push(path.posix.join("/", action.src));
      }
    }
  } else if (op.kind === "exec") {
    for (const mount of op.mounts) {
      if (mount.input !== index) continue;
      if (mount.type !== "bind" && mount.type !== "cache") return undefined;
      paths.push(path.posix.join("/", mount.selector ?? "/"));
    }
  } else {
    return undefined;
  }
  return paths.length > 0 ? paths.map((p) => (p.length > 1 ? p.replace(/\/+$/, "") : p)) : undefined;
}
