/**
 * `local`: the build context (or a `--build-context NAME=DIR`), as the build reads it.
 *
 * Its cache key is a checksum of the selected files' paths, types, permission bits, contents and
 * link targets, never their mtimes, so a fresh clone of the same sources hits the cache. Owners
 * are not part of it because they are not part of the result either: Docker's and BuildKit's
 * clients send the context with every owner reset to 0:0 (filesync's `resetUIDAndGID`), and so
 * does this layer. Per-file content hashes are remembered under the store by (dev, ino, size,
 * mtime, ctime), so an unchanged file is not read again on the next build.
 *
 * Its result is one layer holding the selected files, mtimes kept as BuildKit keeps them.
 */

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../../errors/index.js";
import { writeFileAtomic } from "../../oci/atomic-file.js";
import { writeLayer } from "../../oci/layer.js";
import type { LocalOp } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import { DroppedXattrs } from "../xattrs.js";
import type { OpContext } from "./context.js";
import {
  type ContextEntry,
  type ContextSelection,
  EMPTY_SHA256,
  LocalSourceError,
  selectContext,
  treeTar,
} from "./context-walk.js";
import { SourceSnapshot } from "./source-snapshot.js";

/** Changing how the checksum is computed changes this, so old keys never match new ones. */
const CHECKSUM_VERSION = "tbuild-context-v1";
const CACHE_VERSION = 2;
/** Files read whole below this size; larger ones are streamed into the hash. */
const READ_WHOLE_BYTES = 1 << 20;
const HASH_CONCURRENCY = 16;
/**
 * A file changed twice within one timestamp tick keeps its mtime and ctime; a hash is only
 * remembered for a file whose times are this much older than the walk, so that such a change
 * after the walk cannot hide behind a remembered hash (git's "racy clean" rule).
 */
const RACY_MARGIN_NS = 2_000_000_000n;

/** The directory a local op reads. */
export function localSourceDir(op: LocalOp, ctx: Pick<OpContext, "localSources">): string {
  const dir = ctx.localSources[op.name];
  if (dir === undefined) {
    const known = Object.keys(ctx.localSources);
    throw new TbuildError(
      "E_LOCAL_SOURCE",
      `the build needs the local source "${op.name}", which this build was not given: pass --build-context ${op.name}=DIR` +
        (known.length > 0 ? ` (given: ${known.join(", ")})` : ""),
    );
  }
  return dir;
}

export async function localContentKey(op: LocalOp, ctx: OpContext): Promise<string> {
  const { checksum, entries, hashes } = await localSelection(op, ctx);
  ctx.contextSelections?.set(op, { entries, hashes });
  return checksum;
}

/** The checksum of what `op` selects of its source (see contextChecksum). */
export async function localChecksum(op: LocalOp, ctx: OpContext): Promise<string> {
  return (await localSelection(op, ctx)).checksum;
}

export interface LocalSelection {
  checksum: string;
  entries: readonly ContextEntry[];
  hashes: ReadonlyMap<string, string>;
}

/**
 * The walk and checksum of one selection of a local source, made once per build: the local op's
 * key and a step's key over the same paths (`COPY . .`) share it, and the op's run reads it.
 */
export function localSelection(op: LocalOp, ctx: OpContext): Promise<LocalSelection> {
  const root = localSourceDir(op, ctx);
  const memo = JSON.stringify([root, op.followPaths, op.excludePatterns]);
  let made = ctx.localSelections?.get(memo);
  if (!made) {
    let entries: readonly ContextEntry[] = [];
    let hashes: ReadonlyMap<string, string> = new Map();
    made = contextChecksum(root, op, {
      cacheDir: path.join(ctx.store.root, "context-hashes"),
      manifestDir: contextManifestDir(ctx.store.root),
      signal: ctx.signal,
      selected: (e, h) => {
        entries = e;
        hashes = h;
      },
    }).then((checksum) => ({ checksum, entries, hashes }));
    ctx.localSelections?.set(memo, made);
    // A failed walk is not remembered: it is reported by the step that needed it.
    made.catch(() => ctx.localSelections?.delete(memo));
  }
  return made;
}

/**
 * Where each checksum's per-path manifest is kept: one file named by the checksum itself, so the
 * cache record's `content` is all `--explain` needs to find which paths changed between two keys.
 */
export function contextManifestDir(storeRoot: string): string {
  return path.join(storeRoot, "context-manifests");
}

/** A context manifest: each selected path → what the checksum recorded for it (type, mode, content hash). */
export type ContextManifest = Record<string, string>;

/** The manifest a checksum was computed from, if this store recorded it. */
export async function readContextManifest(
  storeRoot: string,
  checksum: string,
): Promise<ContextManifest | undefined> {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(checksum)?.[1];
  if (hex === undefined) return undefined;
  try {
    return JSON.parse(await readFile(path.join(contextManifestDir(storeRoot), `${hex}.json`), "utf8"));
  } catch {
    return undefined;
  }
}

export async function runLocal(op: LocalOp, _inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  const root = localSourceDir(op, ctx);
  const selected = ctx.contextSelections?.get(op);
  ctx.contextSelections?.delete(op);
  const entries = selected?.entries ?? (await selectContext(root, op, ctx.signal));
  // Unpacked as it is written, for the copies that read it (see source-snapshot.ts).
  const snapshot = await SourceSnapshot.start(ctx.snapshotter, await sourceKey(root, op), ctx.store.content);
  try {
    // A source layer is only ever read by the copies that use it, never exported, so it is left
    // uncompressed: compressing it would cost time on every context change and save nothing.
    const xattrs = new DroppedXattrs();
    const tar = treeTar(entries, {
      warn: (rel, what) => ctx.warn(`${rel} in the build context is ${what}: left out`),
      xattrs,
      sink: snapshot,
      // A file the checksum found unchanged is taken from the previous tar, not read again: the
      // bytes whose sha256 the checksum has.
      known: (rel, mode, mtime, size) => {
        const sha256 = selected?.hashes.get(rel);
        const content = sha256 === undefined ? undefined : snapshot.known(rel, sha256, mode, mtime, size);
        return content === undefined ? undefined : { content, sha256: sha256! };
      },
    });
    const layer = await writeLayer(ctx.store.content, Readable.from(tar), {
      compression: "uncompressed",
      signal: ctx.signal,
    });
    const dropped = xattrs.warning("the build context");
    if (dropped !== undefined) ctx.warn(dropped);
    await snapshot.finish(ctx.snapshotter, layer.diffId);
    return { layers: [{ descriptor: layer.descriptor, diffId: layer.diffId }] };
  } finally {
    await snapshot.discard();
  }
}

interface HashCacheFile {
  version: number;
  /** By path: `<dev>:<ino>:<size>:<mtime ns>:<ctime ns> <sha256 hex>`. */
  files: Record<string, string>;
}

/**
 * `sha256:<hex>` over every selected entry: path, type, permission bits, and the content's sha256
 * (files), the target (symbolic links). `cacheDir` keeps per-file hashes between builds.
 */
export async function contextChecksum(
  root: string,
  selection: ContextSelection,
  options: {
    cacheDir?: string;
    manifestDir?: string;
    signal?: AbortSignal;
    /** Hears of the entries the checksum was made of, and of its files' sha256 (hex) by path. */
    selected?: (entries: readonly ContextEntry[], hashes: ReadonlyMap<string, string>) => void;
  } = {},
): Promise<string> {
  const walkStartNs = BigInt(Date.now()) * 1_000_000n;
  const entries = await selectContext(root, selection, options.signal);
  const cacheFile = options.cacheDir ? await hashCacheFile(options.cacheDir, root, selection) : undefined;
  const cached = cacheFile ? await readHashCache(cacheFile) : {};
  const fresh: Record<string, string> = {};
  let changed = false;

  const hashes = new Map<string, string>();
  const toHash: { entry: ContextEntry; key: string }[] = [];
  const selectedFiles = new Set<string>();
  for (const entry of entries) {
    if (!entry.stat.isFile()) continue;
    selectedFiles.add(entry.rel);
    const key = statKey(entry);
    const known = cached[entry.rel];
    // `<stat key> <sha256>`: the key has no spaces of its own at the end, the hash none at all.
    if (
      known !== undefined &&
      known.length === key.length + 65 &&
      known.startsWith(key) &&
      known[key.length] === " "
    ) {
      hashes.set(entry.rel, known.slice(key.length + 1));
      fresh[entry.rel] = known;
    } else {
      toHash.push({ entry, key });
    }
  }
  let next = 0;
  const hashWorker = async () => {
    while (next < toHash.length) {
      const { entry, key } = toHash[next++]!;
      options.signal?.throwIfAborted();
      const sha256 = await hashFile(entry);
      hashes.set(entry.rel, sha256);
      const st = entry.stat;
      if (st.mtimeNs < walkStartNs - RACY_MARGIN_NS && st.ctimeNs < walkStartNs - RACY_MARGIN_NS) {
        fresh[entry.rel] = `${key} ${sha256}`;
        changed = true;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(HASH_CONCURRENCY, toHash.length) }, hashWorker));
  options.selected?.(entries, hashes);

  // One line per entry, hashed at once: one update per entry costs more than the hashing.
  const lines: string[] = [`${CHECKSUM_VERSION}\n`];
  const manifest: ContextManifest = {};
  const record = entryRecords(hashes);
  for (const entry of entries) {
    const made = record(entry);
    if (made === undefined) continue; // Left out of the layer too.
    lines.push(`${JSON.stringify(entry.rel)} ${made}\n`);
    manifest[entry.rel] = made;
  }
  const hash = createHash("sha256").update(lines.join(""));
  // Rewritten when it learned a hash, or holds a file no longer selected. A file changed just
  // now is not remembered (see RACY_MARGIN_NS), and its stale entry harms nothing meanwhile.
  if (cacheFile && (changed || Object.keys(cached).some((rel) => !selectedFiles.has(rel)))) {
    await writeHashCache(cacheFile, { version: CACHE_VERSION, files: fresh });
  }
  const hex = hash.digest("hex");
  if (options.manifestDir) await writeManifestOnce(path.join(options.manifestDir, `${hex}.json`), manifest);
  return `sha256:${hex}`;
}

/**
 * What a checksum records of each entry: type, permission bits, and the content's sha256 (files),
 * the target (symbolic links); undefined for what a layer leaves out. A file with several names
 * in the walk is one file in the layer too (a tar hard link): a later name records which one it
 * shares, as BuildKit's contenthash does. Entries are given in walk order.
 */
export function entryRecords(
  hashes: ReadonlyMap<string, string>,
): (entry: ContextEntry) => string | undefined {
  const firstNames = new Map<string, string>();
  return (entry) => {
    const st = entry.stat;
    const mode = (st.mode & 0o7777n).toString(8);
    const inode = st.isFile() && st.nlink > 1n ? `${st.dev}:${st.ino}` : undefined;
    const first = inode === undefined ? undefined : firstNames.get(inode);
    if (inode !== undefined && first === undefined) firstNames.set(inode, entry.rel);
    if (st.isDirectory()) return `dir ${mode}`;
    if (first !== undefined) return `hardlink ${JSON.stringify(first)}`;
    if (st.isFile()) return `file ${mode} ${hashes.get(entry.rel)}`;
    if (st.isSocket()) return `file ${mode} ${EMPTY_SHA256}`; // sent as an empty file (treeTar)
    if (st.isSymbolicLink()) return `symlink ${mode} ${JSON.stringify(entry.linkTarget ?? "")}`;
    if (st.isFIFO()) return `fifo ${mode}`;
    return undefined;
  };
}

/** Records `manifest` as the one behind `checksum` (`sha256:<hex>`), for `--explain`. */
export async function writeContextManifest(
  storeRoot: string,
  checksum: string,
  manifest: ContextManifest,
): Promise<void> {
  const hex = checksum.slice(checksum.indexOf(":") + 1);
  await writeManifestOnce(path.join(contextManifestDir(storeRoot), `${hex}.json`), manifest);
}

/** Named by its checksum, a manifest never changes: one already written is left as it is. */
async function writeManifestOnce(file: string, manifest: ContextManifest): Promise<void> {
  if (
    await stat(file).then(
      () => true,
      () => false,
    )
  )
    return;
  await writeAtomically(file, JSON.stringify(manifest));
}

/** What a remembered hash is valid for: the file's device, inode, size, mtime and ctime. */
function statKey(entry: ContextEntry): string {
  const st = entry.stat;
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

async function hashFile(entry: ContextEntry): Promise<string> {
  try {
    return await sha256File(entry.abs, Number(entry.stat.size));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new LocalSourceError(`cannot read ${entry.abs} in the build context (${code})`, err);
  }
}

/** The sha256 (hex) of a file of `size` bytes: read whole when small, streamed when not. */
export async function sha256File(file: string, size: number): Promise<string> {
  const hash = createHash("sha256");
  if (size < READ_WHOLE_BYTES) hash.update(await readFile(file));
  else await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), hash);
  return hash.digest("hex");
}

/** One cache file per source directory and selection, so two Dockerfiles on one context do not evict each other. */
async function hashCacheFile(cacheDir: string, root: string, selection: ContextSelection): Promise<string> {
  return path.join(cacheDir, `${await sourceKey(root, selection)}.json`);
}

/** A name for a source directory read with a selection: the same on every build of it. */
async function sourceKey(root: string, selection: ContextSelection): Promise<string> {
  const real = await realpath(root).catch(() => path.resolve(root));
  return createHash("sha256")
    .update(JSON.stringify([real, selection.followPaths, selection.excludePatterns]))
    .digest("hex")
    .slice(0, 32);
}

async function readHashCache(file: string): Promise<Record<string, string>> {
  try {
    const parsed = JSON.parse(await readFile(file, "utf8")) as Partial<HashCacheFile>;
    if (parsed.version !== CACHE_VERSION || typeof parsed.files !== "object" || parsed.files === null)
      return {};
    return parsed.files;
  } catch {
    // Missing or unreadable (a crash mid-write cannot leave it half written, but a user can):
    // every file is simply hashed again.
    return {};
  }
}

async function writeHashCache(file: string, data: HashCacheFile): Promise<void> {
  await writeAtomically(file, JSON.stringify(data));
}

async function writeAtomically(file: string, text: string): Promise<void> {
  // The hash cache only saves reading files again, a manifest only serves --explain: a store
  // on a read-only mount still builds.
  await writeFileAtomic(file, text, { makeDirectory: true }).catch(() => {});
}
