/**
 * What a step reads of a build result (another stage's last step, an image): the paths its
 * `COPY --from` sources select, the source of its `RUN --mount=from=...` bind or cache mounts.
 * BuildKit's second ("slow") cache key: once such an input exists, the step is looked up under the
 * checksum of exactly those paths in it (its contenthash over the followed paths), so a stage that
 * ran again but left the same files there leaves the step, and what follows it, cached.
 *
 * The result is read through the merged view of its unpacked layers (no mount), as the copy or the
 * mount sees it: a source is resolved inside the result (symlinks followed as the container would
 * follow them), a glob matched as fsutil matches it, the tree below each source walked with the
 * copy's `--exclude` patterns. Each entry is recorded with everything the step can carry into its
 * own result: type, permission bits, owner, content, link target, device numbers, hard links among
 * the entries read. A copy keeps mtimes, so its key also holds each mtime as the copy's layer will
 * (whole seconds, clamped to SOURCE_DATE_EPOCH): a cached copy is then exactly what running it
 * gives. A mount's key leaves mtimes out, as BuildKit's contenthash does: the process reads the
 * files, and what it writes gets its own mtimes.
 */
import { createHash } from "node:crypto";
import type { BigIntStats } from "node:fs";
import { createReadStream, readFileSync, readlinkSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { byBytes } from "../../oci/archive/byte-order.js";
import type { Vertex } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import { type PathTree, resolveInTree } from "../root-path.js";
import { isWhiteout, type LowerEntry, LowerView } from "../snapshot/index.js";
import type { OpContext } from "./context.js";
import { compileComponentGlob, hasGlob, pathComponents } from "./glob.js";
import { prepareLayers } from "./layers.js";
import { createContextMatcher } from "./pattern-matcher.js";
import { type SourceRead, sourceReads } from "./selection.js";

/** Changing what the checksum covers changes this, so old keys never match new ones. */
const RESULT_SELECTION_VERSION = "tbuild-result-selection-v1";

/** Files up to this size are read whole; larger ones are streamed through the hash. */
const READ_WHOLE_BYTES = 1n << 20n;

/**
 * For each input of `vertex` that is a build result (not a local source) and of which the vertex
 * reads only some paths, the checksum of those paths in `results[i]`; undefined for the others.
 */
export async function resultSelectionKeys(
  vertex: Vertex,
  inputs: readonly Vertex[],
  results: readonly FsResult[],
  ctx: OpContext,
): Promise<(string | undefined)[]> {
  return Promise.all(
    inputs.map(async (input, index) => {
      if (input.op.kind === "local") return undefined;
      const reads = sourceReads(vertex, index);
      const result = results[index];
      if (reads === undefined || result === undefined) return undefined;
      const view = new LowerView(await prepareLayers(ctx, result.layers));
      const lines: string[] = [`${RESULT_SELECTION_VERSION}\n`];
      for (const read of reads) {
        ctx.signal.throwIfAborted();
        lines.push(`read ${JSON.stringify(read)}\n`);
        await recordRead(view, read, lines, ctx);
      }
      return `sha256:${createHash("sha256").update(lines.join("")).digest("hex")}`;
    }),
  );
}

/** The lines of one source: each match by its name, then the tree below it, in walk order. */
async function recordRead(view: LowerView, read: SourceRead, lines: string[], ctx: OpContext): Promise<void> {
  const tree: PathTree = {
    lstat: (rel) => view.lookupSync(rel)?.stat,
    readlink: (rel) => readlinkSync(view.lookupSync(rel)!.source, "utf8"),
  };
  const copy = read.by.kind === "copy" ? read.by : undefined;
  const followFinal = copy ? copy.followSymlinks : true;
  const exclude = read.excludePatterns.length > 0 ? createContextMatcher(read.excludePatterns) : undefined;
  const include = read.includePatterns.length > 0 ? createContextMatcher(read.includePatterns) : undefined;
  const epoch = ctx.sourceDateEpoch;
  const hardLinks = new Map<string, string>();

  const record = async (name: string, st: BigIntStats, source: string): Promise<string> => {
    const mode = (st.mode & 0o7777n).toString(8);
    const owner = `${st.uid}:${st.gid}`;
    let time = "";
    if (copy) {
      // As the copy's layer will hold it: clamped to SOURCE_DATE_EPOCH, then whole seconds.
      let ms = st.mtimeNs / 1_000_000n;
      if (epoch !== undefined && ms > BigInt(epoch) * 1000n) ms = BigInt(epoch) * 1000n;
      time = ` ${ms / 1000n}`;
    }
    if (st.isDirectory()) return `dir ${mode} ${owner}${time}`;
    if (st.isSymbolicLink()) return `symlink ${owner}${time} ${JSON.stringify(readlinkSync(source, "utf8"))}`;
    if (st.isFile()) {
      if (st.nlink > 1n) {
        const inode = `${st.dev}:${st.ino}`;
        const first = hardLinks.get(inode);
        if (first !== undefined) return `hardlink ${JSON.stringify(first)}`;
        hardLinks.set(inode, name);
      }
      return `file ${mode} ${owner}${time} ${await fileDigest(source, st, ctx)}`;
    }
    if (st.isFIFO()) return `fifo ${mode} ${owner}${time}`;
    if (st.isCharacterDevice() || st.isBlockDevice()) {
      return `${st.isCharacterDevice() ? "char" : "block"} ${mode} ${owner}${time} ${st.rdev}`;
    }
    return "socket";
  };

  /** `entry` at `name`, then (a directory) everything below it that the patterns keep. */
  const walk = async (rel: string, name: string, below: string, entry: LowerEntry): Promise<void> => {
    ctx.signal.throwIfAborted();
    if (isWhiteout(entry.stat)) return;
    if (below !== "") {
      const excluded = exclude?.excludes(below) === true;
      // Skipped with all below it, as the copy skips it.
      if (excluded && entry.stat.isDirectory() && exclude!.skipsDirectory(below)) return;
      // Left out; a directory still matters for what is kept inside it.
      const kept = !excluded && (include === undefined || include.excludes(below));
      if (!kept && !entry.stat.isDirectory()) return;
    }
    // The root's own metadata is the snapshot's (the mount's upper directory), not the result's.
    const made = rel === "" ? "root" : await record(name, entry.stat, entry.source);
    lines.push(`${JSON.stringify(name)} ${made}\n`);
    if (!entry.stat.isDirectory()) return;
    const children = await view.list(rel);
    for (const childName of [...children.keys()].sort(byBytes)) {
      const join = (a: string) => (a === "" ? childName : `${a}/${childName}`);
      await walk(join(rel), join(name), join(below), children.get(childName)!);
    }
  };

  for (const match of await matches(view, tree, read, exclude)) {
    let resolved: string;
    try {
      resolved = resolveInTree(tree, match, { followFinal });
    } catch {
      lines.push(`${JSON.stringify(match)} unresolvable\n`); // A symlink loop: the step says so.
      continue;
    }
    const entry = await view.lookup(resolved);
    if (entry === undefined) {
      lines.push(`${JSON.stringify(match)} missing\n`);
      continue;
    }
    await walk(resolved, match, "", entry);
  }
}

/**
 * The source paths `read` names, as the copy resolves them (copy.ts, glob.ts): itself when it has
 * no glob (or globs are off); else every match below the glob's fixed prefix, component by
 * component, a matched directory not searched further, `--exclude` applied to the matches.
 */
async function matches(
  view: LowerView,
  tree: PathTree,
  read: SourceRead,
  exclude: ReturnType<typeof createContextMatcher> | undefined,
): Promise<string[]> {
  const components = pathComponents(read.src);
  const firstGlob = components.findIndex(hasGlob);
  if (read.by.kind === "mount" || !read.by.allowWildcard || firstGlob < 0) {
    return [`/${components.join("/")}`];
  }
  const base = components.slice(0, firstGlob);
  const globs = components.slice(firstGlob).map(compileComponentGlob);
  let baseRel: string;
  try {
    baseRel = resolveInTree(tree, base.join("/"), { followFinal: read.by.followSymlinks });
  } catch {
    return [];
  }
  const out: string[] = [];
  const walk = async (rel: string, names: string[], depth: number) => {
    const children = await view.list(rel);
    for (const name of [...children.keys()].sort(byBytes)) {
      if (!globs[depth]!(name) || isWhiteout(children.get(name)!.stat)) continue;
      const below = [...names, name];
      if (depth === globs.length - 1) {
        if (!exclude?.excludes(below.join("/"))) out.push(`/${[...base, ...below].join("/")}`);
      } else if (children.get(name)!.stat.isDirectory()) {
        await walk(rel === "" ? name : `${rel}/${name}`, below, depth + 1);
      }
    }
  };
  await walk(baseRel, [], 0);
  return out;
}

/** The sha256 (hex) of a file of a result; layers never change, so a file is read once a build. */
async function fileDigest(source: string, st: BigIntStats, ctx: OpContext): Promise<string> {
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  const known = ctx.resultFileHashes?.get(key);
  if (known) return known;
  const hashing = (async () => {
    const hash = createHash("sha256");
    // Small files synchronously: a thread-pool round trip costs more than reading one.
    if (st.size <= READ_WHOLE_BYTES) hash.update(readFileSync(source));
    else await pipeline(createReadStream(source, { highWaterMark: 1 << 20 }), hash);
    return hash.digest("hex");
  })();
  ctx.resultFileHashes?.set(key, hashing);
  return hashing;
}
