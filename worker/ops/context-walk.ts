/**
 * Which files of a local source (the build context) a build reads: the paths its COPY, ADD and
 * RUN --mount=from=context select (`followPaths`, globs allowed), minus what `.dockerignore`
 * excludes. Both the context's checksum and its layer come from this one walk, so the cache key
 * covers exactly what the layer holds. Entries come in tar order: names sorted byte-wise, depth
 * first, a directory before its contents.
 */
import type { BigIntStats } from "node:fs";
import { createReadStream, lstatSync, readdirSync, readFileSync } from "node:fs";
import { readlink, stat } from "node:fs/promises";
import { TbuildError } from "../../errors/index.js";
import { byBytes } from "../../oci/archive/byte-order.js";
import { TAR_END, TarChunker, type TarEntry, tarEntry } from "../../oci/archive/tar.js";
import { childPath } from "../child-path.js";
import { directoryTree, resolveInTree } from "../root-path.js";
import type { DroppedXattrs } from "../xattrs.js";
import { globInRoot, hasGlob, PathSelector } from "./glob.js";
import { createContextMatcher } from "./pattern-matcher.js";

export interface ContextEntry {
  /** Relative to the source root, `/`-separated, no trailing slash. */
  rel: string;
  abs: string;
  stat: BigIntStats;
  /** Symbolic links only. */
  linkTarget?: string;
}

export interface ContextSelection {
  followPaths: readonly string[];
  excludePatterns: readonly string[];
}

/** A local source directory that cannot be read. */
export class LocalSourceError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_LOCAL_SOURCE", message, cause === undefined ? {} : { cause });
  }
}

/** The sha256 (hex) of no bytes: the content a socket of the source is sent as. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SMALL_FILE_BYTES = 1n << 20n;

/** Every entry of `root` the selection keeps, in tar order. */
export async function selectContext(
  root: string,
  selection: ContextSelection,
  signal?: AbortSignal,
): Promise<ContextEntry[]> {
  // The source itself may be a symlink to a directory (a context given as a link): followed.
  const rootStat = await stat(root, { bigint: true }).catch((err: unknown) => {
    throw unreadable(root, err);
  });
  if (!rootStat.isDirectory()) throw new LocalSourceError(`${root} is not a directory`);
  const selector = new PathSelector(await withSymlinkTargets(root, selection.followPaths));
  const matcher = createContextMatcher(selection.excludePatterns);
  const out: ContextEntry[] = [];
  // Directories that are only on the way to selected entries (or excluded, with exceptions
  // possibly inside): they enter the result only once something below them does.
  const pendingParents: ContextEntry[] = [];
  const emit = (entry: ContextEntry) => {
    out.push(...pendingParents);
    pendingParents.length = 0;
    out.push(entry);
  };

  const visit = async (abs: string, rel: string, components: string[], allSelected: boolean) => {
    signal?.throwIfAborted();
    let names: string[];
    try {
      // Synchronous, as the lstats: a call is cheaper than its round trip through the thread pool.
      names = readdirSync(abs).sort(byBytes);
    } catch (err) {
      throw unreadable(abs, err);
    }
    const children = names.map((name) => {
      // Below a selected directory everything is selected: no path to classify.
      const childComponents = allSelected ? components : [...components, name];
      const kind = allSelected ? "selected" : selector.classify(childComponents);
      if (kind === "none") return undefined;
      const childAbs = childPath(abs, name);
      let stat: BigIntStats;
      try {
        stat = lstatSync(childAbs, { bigint: true });
      } catch (err) {
        throw unreadable(childAbs, err);
      }
      return { name, childAbs, childComponents, kind, stat };
    });
    for (const child of children) {
      if (child === undefined) continue;
      const childRel = rel === "" ? child.name : `${rel}/${child.name}`;
      const excluded = matcher.excludes(childRel);
      const entry: ContextEntry = { rel: childRel, abs: child.childAbs, stat: child.stat };
      if (child.stat.isDirectory()) {
        if (excluded && matcher.skipsDirectory(childRel)) continue;
        const selected = child.kind === "selected";
        if (selected && !excluded) {
          emit(entry);
          await visit(child.childAbs, childRel, child.childComponents, true);
        } else {
          pendingParents.push(entry);
          await visit(child.childAbs, childRel, child.childComponents, selected);
          if (pendingParents.at(-1) === entry) pendingParents.pop();
        }
        continue;
      }
      if (child.kind !== "selected" || excluded) continue;
      if (child.stat.isSymbolicLink()) {
        entry.linkTarget = await readlink(child.childAbs).catch((err: unknown) => {
          throw unreadable(child.childAbs, err);
        });
      }
      emit(entry);
    }
  };
  await visit(root, "", [], selector.all);
  return out;
}

/**
 * The follow paths plus, for each one (or each match of a glob) that passes through a symbolic
 * link inside the source, the link itself and where it leads, resolved inside the source: a COPY
 * of `/current` where `current -> releases/v2` needs both, and so does `COPY sub/l* dest/` where
 * `sub/l0 -> subfile` (fsutil's FollowLinks does the same for BuildKit's follow paths).
 */
async function withSymlinkTargets(root: string, followPaths: readonly string[]): Promise<string[]> {
  const out = new Set(followPaths);
  const plainPaths: string[] = [];
  for (const followPath of followPaths) {
    if (!hasGlob(followPath)) plainPaths.push(followPath);
    else
      for (const match of await globInRoot(root, followPath, true).catch(() => []))
        plainPaths.push(match.path);
  }
  const tree = directoryTree(root);
  for (const followPath of plainPaths) {
    try {
      resolveInTree(tree, followPath, {
        onLink(link, leadsTo) {
          out.add(`/${link}`);
          out.add(`/${leadsTo}`);
        },
      });
    } catch {
      // A loop of links: the copy names it in its own error.
    }
  }
  return [...out];
}

function unreadable(file: string, err: unknown): LocalSourceError {
  const code = (err as NodeJS.ErrnoException)?.code ?? String(err);
  const hint =
    code === "EACCES" || code === "EPERM" ? ": make it readable, or exclude it in .dockerignore" : "";
  return new LocalSourceError(`cannot read ${file} in the build context (${code})${hint}`, err);
}

export interface TreeTarOptions {
  /** Every entry's mtime (a git checkout's commit time); else each file's own. */
  mtime?: Date;
  /**
   * Permission bits as git knows them (0755 for directories, symlinks as 0777, files 0755 or
   * 0644 by their execute bit), so that a checkout's layer does not depend on the umask.
   */
  gitModes?: boolean;
  /** Hears of entries a source layer does not carry (devices). */
  warn(rel: string, what: string): void;
  /** Hears of each entry's extended attributes, which a source layer does not carry either. */
  xattrs?: DroppedXattrs;
  /** Is given every entry as it goes into the tar, with the very bytes the tar gets. */
  sink?: TreeSink;
  /**
   * A small file's content known without reading the file (an earlier tar of the same source),
   * with its sha256 (hex); undefined to read it.
   */
  known?(
    rel: string,
    mode: number,
    mtime: Date,
    size: number,
  ): { content: Buffer; sha256: string } | undefined;
}

/**
 * What a tree's tar is made of, entry by entry, in tar order (a directory before its contents):
 * for whoever builds the same tree on disk while the tar is written, from the same bytes.
 */
export interface TreeSink {
  directory(rel: string, mode: number, mtime: Date): void;
  /**
   * A small file, whole; `offset` is where its content starts in the tar, `sha256` (hex) the
   * content's hash when known.
   */
  file(rel: string, mode: number, mtime: Date, content: Buffer, offset: number, sha256?: string): void;
  /** A large file, chunk by chunk as the tar gets them. */
  largeFile(rel: string, mode: number, mtime: Date): { write(chunk: Buffer): void; end(): void };
  symlink(rel: string, target: string, mtime: Date): void;
  /** An entry the sink is not given as one of the above (a hard link, a FIFO). */
  other(rel: string): void;
}

/** A large file's chunks, each also handed to `writer` as it is read. */
async function* tapped(
  chunks: AsyncIterable<Buffer>,
  writer: { write(chunk: Buffer): void; end(): void },
): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    writer.write(chunk);
    yield chunk;
  }
  writer.end();
}

/**
 * Selected entries as a source layer's tar: owned by 0:0 (as BuildKit's local, http and git
 * sources are), permission bits kept, mtimes kept (BuildKit keeps a context's), hard links
 * between selected files as links.
 */
export async function* treeTar(
  entries: readonly ContextEntry[],
  options: TreeTarOptions,
): AsyncGenerator<Buffer> {
  const hardLinks = new Map<string, string>();
  const chunker = new TarChunker();
  // Small files are read whole and synchronously: a stream per file would allocate its whole
  // buffer up front, and a thread-pool round trip per read costs more than the read.
  for (const entry of entries) {
    const st = entry.stat;
    options.xattrs?.check(entry.abs, entry.rel);
    let mode = Number(st.mode & 0o7777n);
    if (options.gitModes) {
      mode = st.isDirectory() ? 0o755 : st.isSymbolicLink() ? 0o777 : mode & 0o111 ? 0o755 : 0o644;
    }
    // The tar keeps whole seconds (see tarEntry): so does the sink.
    const mtime = new Date(Math.floor((options.mtime?.getTime() ?? Number(st.mtimeMs)) / 1000) * 1000);
    const base = { mode, uid: 0, gid: 0, size: 0, mtime };
    const sink = options.sink;
    if (st.isDirectory()) {
      sink?.directory(entry.rel, mode, mtime);
      const chunk = chunker.add({ ...base, path: `${entry.rel}/`, type: "Directory" });
      if (chunk) yield chunk;
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1n ? hardLinks.get(key) : undefined;
      if (first !== undefined) {
        sink?.other(entry.rel);
        const chunk = chunker.add({ ...base, path: entry.rel, type: "Link", linkpath: first });
        if (chunk) yield chunk;
        continue;
      }
      if (st.nlink > 1n) hardLinks.set(key, entry.rel);
      const header: TarEntry = { ...base, path: entry.rel, type: "File", size: Number(st.size) };
      if (st.size <= SMALL_FILE_BYTES) {
        const known = options.known?.(entry.rel, mode, mtime, header.size);
        const content = known?.content ?? readFileSync(entry.abs);
        const chunk = chunker.add(header, content);
        sink?.file(entry.rel, mode, mtime, content, chunker.contentOffset, known?.sha256);
        if (chunk) yield chunk;
      } else {
        const gathered = chunker.flush();
        if (gathered) yield gathered;
        const stream = createReadStream(entry.abs, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>;
        const bytes = tarEntry(
          header,
          sink ? tapped(stream, sink.largeFile(entry.rel, mode, mtime)) : stream,
        );
        for await (const chunk of bytes) {
          chunker.passed(chunk.length);
          yield chunk;
        }
      }
    } else if (st.isSymbolicLink()) {
      sink?.symlink(entry.rel, entry.linkTarget ?? "", mtime);
      const chunk = chunker.add({
        ...base,
        path: entry.rel,
        type: "SymbolicLink",
        linkpath: entry.linkTarget ?? "",
      });
      if (chunk) yield chunk;
    } else if (st.isFIFO()) {
      sink?.other(entry.rel);
      const chunk = chunker.add({ ...base, path: entry.rel, type: "FIFO" });
      if (chunk) yield chunk;
    } else if (st.isSocket()) {
      // A socket cannot be sent: BuildKit's context transfer (fsutil) makes it an empty file.
      const content = Buffer.alloc(0);
      const chunk = chunker.add({ ...base, path: entry.rel, type: "File", size: 0 }, content);
      sink?.file(entry.rel, mode, mtime, content, chunker.contentOffset, EMPTY_SHA256);
      if (chunk) yield chunk;
    } else {
      // Devices are never part of a source (fsutil leaves them out of a context too).
      options.warn(entry.rel, "a device");
    }
  }
  const rest = chunker.flush();
  if (rest) yield rest;
  yield TAR_END;
}
