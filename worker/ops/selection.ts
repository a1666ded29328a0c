/**
 * What a step reads of a local source (the build context, a `--build-context NAME=DIR`): the paths
 * its COPY and ADD sources name, and the source of its RUN bind or cache mounts. The step's cache
 * key takes the checksum of exactly what it reads in place of the whole source's key, as BuildKit
 * keys a copy on the content hash of the paths it follows: editing a file no step copies re-runs
 * nothing, and editing one re-runs the first step that reads it and what comes after it.
 *
 * Each source is checksummed as BuildKit's contenthash does a followed path: the tree it names
 * (symlinks on the way and at its end followed inside the source), names relative to it, with the
 * copy's `--exclude` patterns applied; a glob by each match's name and tree. So the directories
 * above a source, a symlink naming it, and what `--exclude` leaves out are not part of the key.
 * `--parents` copies the directories on the way below its pivot too: its key covers them. Entries are recorded as
 * the local op's own key records them (local.ts): `.dockerignore` applied, type, permission bits,
 * content and link targets, hard links among them, never mtimes.
 */
import { createHash } from "node:crypto";
import path from "node:path";
import { cleanAbsolutePath } from "../../oci/clean-path.js";
import type { Vertex } from "../../solver/graph.js";
import { resolveInTree } from "../root-path.js";
import type { OpContext } from "./context.js";
import type { ContextEntry } from "./context-walk.js";
import { compileComponentGlob, hasGlob, pathComponents } from "./glob.js";
import { type ContextManifest, entryRecords, localSelection, writeContextManifest } from "./local.js";
import { createContextMatcher } from "./pattern-matcher.js";

/** Changing what a selection's checksum covers changes this, so old keys never match new ones. */
const SELECTION_VERSION = "tbuild-selection-v2";

/** One source a step reads: a path or glob, with `--parents` include and `--exclude` patterns. */
export interface SourceRead {
  src: string;
  includePatterns: readonly string[];
  excludePatterns: readonly string[];
  /**
   * A copy keeps what it reads (mtimes too), a mount shows it to a process; a copy's glob is
   * matched (`allowWildcard`), a mount's source never is; a copy follows a final symlink only with
   * `followSymlinks`.
   */
  by: { kind: "copy"; allowWildcard: boolean; followSymlinks: boolean } | { kind: "mount" };
}

/**
 * For each input of `vertex` that is a local source, the checksum of what `vertex` reads of it;
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
      const reads = sourceReads(vertex, index);
      if (reads === undefined) return undefined;
      const op = input.op;
      const lines: string[] = [`${SELECTION_VERSION}\n`];
      const manifest: ContextManifest = {};
      for (const read of reads) {
        lines.push(`read ${JSON.stringify([read.src, read.includePatterns, read.excludePatterns])}\n`);
        const followPaths =
          read.includePatterns.length > 0
            ? read.includePatterns.map((pattern) => path.posix.join("/", read.src, pattern))
            : [read.src];
        const selection = await localSelection(
          { ...op, followPaths: followPaths.includes("/") ? [] : followPaths },
          ctx,
        );
        const record = entryRecords(selection.hashes);
        for (const [name, entry] of readEntries(read, selection.entries)) {
          const made = typeof entry === "string" ? entry : record(entry);
          if (made === undefined) continue;
          lines.push(`${JSON.stringify(name)} ${made}\n`);
          if (typeof entry !== "string") manifest[entry.rel] = made;
        }
      }
      const checksum = `sha256:${createHash("sha256").update(lines.join("")).digest("hex")}`;
      await writeContextManifest(ctx.store.root, checksum, manifest);
      return checksum;
    }),
  );
}

/**
 * The entries `read` covers, in walk order, each by the name the checksum gives it; a string in
 * place of an entry for a source that is missing.
 */
function readEntries(read: SourceRead, entries: readonly ContextEntry[]): [string, ContextEntry | string][] {
  // `--parents`: the tree below the pivot as the walk selected it, directories on the way included;
  // not the pivot itself nor what is above it, which the copy does not copy (a mode of `src` in
  // `COPY --parents src/./lib ./` changes nothing the copy writes).
  if (read.includePatterns.length > 0) {
    const pivot = pathComponents(read.src);
    const above = new Set(pivot.map((_, i) => pivot.slice(0, i + 1).join("/")));
    return entries.filter((e) => !above.has(e.rel)).map((e) => [e.rel, e]);
  }
  const byRel = new Map(entries.map((e) => [e.rel, e]));
  const tree = {
    lstat: (rel: string) => (rel === "" ? { isSymbolicLink: () => false } : byRel.get(rel)?.stat),
    readlink: (rel: string) => byRel.get(rel)?.linkTarget ?? "",
  };
  const exclude = read.excludePatterns.length > 0 ? createContextMatcher(read.excludePatterns) : undefined;
  const components = pathComponents(read.src);
  const firstGlob = components.findIndex(hasGlob);
  // A glob's matches by their names below its fixed prefix (what --exclude is matched against).
  const matches: { rel: string; name: string }[] = [];
  if (firstGlob < 0) {
    matches.push({ rel: components.join("/"), name: "" });
  } else {
    const globs = components.map((c, i) =>
      i < firstGlob ? (name: string) => name === c : compileComponentGlob(c),
    );
    for (const entry of entries) {
      const parts = entry.rel.split("/");
      if (parts.length !== components.length || !parts.every((part, i) => globs[i]!(part))) continue;
      const name = parts.slice(firstGlob).join("/");
      if (!exclude?.excludes(name)) matches.push({ rel: entry.rel, name });
    }
  }
  const out: [string, ContextEntry | string][] = [];
  for (const match of matches) {
    let resolved: string;
    try {
      resolved = resolveInTree(tree, match.rel, { followFinal: true });
    } catch {
      out.push([match.name, "unresolvable"]); // A symlink loop: the copy says so.
      continue;
    }
    if (resolved !== "" && !byRel.has(resolved)) {
      out.push([match.name, "missing"]);
      continue;
    }
    const prefix = resolved === "" ? "" : `${resolved}/`;
    for (const entry of entries) {
      if (entry.rel !== resolved && !entry.rel.startsWith(prefix)) continue;
      const inner = entry.rel === resolved ? "" : entry.rel.slice(prefix.length);
      if (inner !== "" && exclude?.excludes(inner)) continue;
      out.push([match.name === "" ? inner : inner === "" ? match.name : `${match.name}/${inner}`, entry]);
    }
  }
  return out;
}

/** What `vertex` reads of its input `index`; undefined when it reads it some other way (whole). */
export function sourceReads(vertex: Vertex, index: number): SourceRead[] | undefined {
  const op = vertex.op;
  const reads: SourceRead[] = [];
  if (op.kind === "file") {
    if (op.base === index) return undefined;
    for (const action of op.actions) {
      if (action.action !== "copy" || action.input !== index) continue;
      reads.push({
        src: cleanAbsolutePath(action.src),
        includePatterns: action.includePatterns,
        excludePatterns: action.excludePatterns,
        by: { kind: "copy", allowWildcard: action.allowWildcard, followSymlinks: action.followSymlinks },
      });
    }
  } else if (op.kind === "exec") {
    for (const [at, mount] of op.mounts.entries()) {
      if (mount.input !== index) continue;
      // The root (or any mount whose changes are the output) is built on, not read.
      if (at === 0 || mount.output || (mount.type !== "bind" && mount.type !== "cache")) return undefined;
      reads.push({
        src: cleanAbsolutePath(mount.selector ?? "/"),
        includePatterns: [],
        excludePatterns: [],
        by: { kind: "mount" },
      });
    }
  } else {
    return undefined;
  }
  return reads.length > 0 ? reads : undefined;
}
