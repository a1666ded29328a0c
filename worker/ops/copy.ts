/**
 * The copy action (COPY and ADD), with BuildKit's semantics (its file backend over fsutil's
 * `copy`): `src` may be a glob; each match is copied to `dest`, into it when `dest` ends in `/` or
 * is an existing directory; a directory's contents (not the directory) when `copyDirContentsOnly`;
 * `--parents` include patterns and `--exclude` patterns apply below each source; owners, permission
 * bits and mtimes are kept unless `--chown`/`--chmod` say otherwise; hard links between copied
 * files stay hard links. Nothing is ever written through a symlink of the destination.
 */

import type { Stats } from "node:fs";
import {
  chmodSync,
  constants,
  copyFileSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
} from "node:fs";
import { chmod, lchown, lstat, mkdir, stat } from "node:fs/promises";
import path from "node:path";
import { TbuildError } from "../../errors/index.js";
import { byBytes } from "../../oci/archive/byte-order.js";
import type { FileAction } from "../../solver/graph.js";
import { childPath } from "../child-path.js";
import { rootPath } from "../root-path.js";
import { makeSpecialFile } from "../unpack.js";
import type { CopyReuse } from "./copy-reuse.js";
import { extractArchive, isTarArchive } from "./extract.js";
import { globInRoot, hasGlob, pathComponents } from "./glob.js";
import { createdDirectoryMode, type ModeChange } from "./mode.js";
import type { Owner } from "./owner.js";
import { type ContextMatcher, createContextMatcher } from "./pattern-matcher.js";

export type CopyAction = Extract<FileAction, { action: "copy" }>;

/** Linux's encoding of a device number (glibc's gnu_dev_major/minor). */
function deviceNumbers(rdev: number): { major: number; minor: number } {
  const dev = BigInt(rdev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

/** A copy that cannot be done as asked: a missing source, a file onto a directory. */
export class CopyError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_COPY", message, cause === undefined ? {} : { cause });
  }
}

export interface CopyOptions {
  /** The source filesystem's root (read only). */
  srcRoot: string;
  /** The destination filesystem's root. */
  destRoot: string;
  /** `--chown`, resolved in the destination. */
  owner?: Owner;
  /** `--chmod`. */
  mode?: ModeChange;
  /** In a user namespace device nodes cannot be made: they are left out with a warning. */
  rootless: boolean;
  signal?: AbortSignal;
  warn(message: string): void;
  /**
   * The previous run of this copy, whose entries the destination holds: it answers what exists
   * as a fresh destination would, and keeps the files it can (copy-reuse.ts).
   */
  reuse?: CopyReuse;
}

/** Creates the missing directories of `hostPath` (already resolved in its root), of `mode`, owned by `owner` or 0:0. */
export async function mkdirAll(hostPath: string, mode: number, owner: Owner | undefined): Promise<void> {
  const created = await mkdir(hostPath, { recursive: true, mode: 0o700 }).catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code === "EEXIST" || err.code === "ENOTDIR") {
        throw new CopyError(`cannot create directory ${hostPath}: a file is in the way`, err);
      }
      throw err;
    },
  );
  if (created === undefined) return;
  // Only the directories made here change: what existed keeps its owner and mode.
  for (let dir = hostPath; dir.length >= created.length; dir = path.dirname(dir)) {
    await lchown(dir, owner?.uid ?? 0, owner?.gid ?? 0);
    await chmod(dir, mode);
  }
}

export async function copy(action: CopyAction, options: CopyOptions): Promise<void> {
  const { srcRoot, destRoot } = options;
  const dest = action.dest;
  if (!action.createDestPath) {
    const parent = path.posix.dirname(path.posix.join("/", dest));
    const parentPath = rootPath(destRoot, parent);
    if (!(await stat(parentPath).catch(() => undefined))?.isDirectory()) {
      throw new CopyError(`cannot copy to ${dest}: ${parent} does not exist in the destination`);
    }
  }
  for (const required of action.requiredPaths ?? []) {
    const found = await lstat(rootPath(srcRoot, required, { followFinal: action.followSymlinks })).catch(
      () => undefined,
    );
    if (!found)
      throw new CopyError(`"${required}": not found (no file or directory of the source has this path)`);
  }
  const matches = await resolveSources(action, srcRoot);
  if (matches.length === 0) {
    if (action.allowEmptyWildcard && action.allowWildcard && hasGlob(action.src)) return;
    throw new CopyError(`${action.src}: not found (no file or directory of the source matches it)`);
  }

  // As fsutil: a destination ending in `/` is made a directory first, otherwise its parent.
  const destClean = path.posix.join("/", dest);
  const destIsDir = dest.endsWith("/") || dest.endsWith("/.") || destClean === "/";
  const dirMode = createdDirectoryMode(action.chmod);
  const reuse = options.reuse;
  const makeDirs = (hostPath: string, mode: number, owner: Owner | undefined) =>
    reuse ? reuse.mkdirAll(hostPath, mode, owner) : mkdirAll(hostPath, mode, owner);
  await makeDirs(
    rootPath(destRoot, destIsDir ? destClean : path.posix.dirname(destClean)),
    dirMode,
    options.owner,
  );
  const destPath = rootPath(destRoot, destClean);
  reuse?.destination(destPath);
  const copier = new Copier(options, action);

  for (const match of matches) {
    options.signal?.throwIfAborted();
    const followed = rootPath(srcRoot, match, { followFinal: action.followSymlinks });
    const srcStat = await lstat(followed).catch((err: unknown) => {
      throw new CopyError(`${match}: not found in the source`, err);
    });
    if (action.attemptUnpack && srcStat.isFile() && (await isTarArchive(followed))) {
      await mkdirAll(destPath, 0o755, options.owner);
      await extractArchive(followed, destPath, options);
      continue;
    }
    const found = await stat(destPath).catch(() => undefined);
    const destStat = found && reuse && !reuse.exists(destPath, true) ? undefined : found;
    let target = destPath;
    if (
      (!action.copyDirContentsOnly && srcStat.isDirectory() && destStat) ||
      (!srcStat.isDirectory() && destStat?.isDirectory())
    ) {
      target = path.join(destPath, path.posix.basename(match));
    }
    const parent =
      action.copyDirContentsOnly && srcStat.isDirectory() && !destStat ? target : path.dirname(target);
    await makeDirs(parent, dirMode, options.owner);
    await copier.copy(followed, "", target, false);
  }
}

/**
 * The source paths a copy's `src` names: itself when it has no glob (or globs are off), else every
 * match (see globInRoot), with `--exclude` applied to the matches too, relative to the glob's fixed
 * prefix, so that `COPY --exclude=*.txt hom* /dir/` leaves out `home.txt`.
 */
async function resolveSources(action: CopyAction, srcRoot: string): Promise<string[]> {
  if (!action.allowWildcard || !hasGlob(action.src)) {
    const clean = `/${pathComponents(action.src).join("/")}`;
    const exists = await lstat(rootPath(srcRoot, clean, { followFinal: action.followSymlinks })).then(
      () => true,
      () => false,
    );
    return exists ? [clean] : [];
  }
  // As fsutil's ResolveWildcards, whose walk starts at the pattern's fixed prefix: a prefix the
  // source does not have is an error, even where a glob may match nothing.
  const components = pathComponents(action.src);
  const base = components.slice(0, components.findIndex(hasGlob)).join("/");
  if (
    !(await lstat(rootPath(srcRoot, base, { followFinal: action.followSymlinks })).catch(() => undefined))
  ) {
    throw new CopyError(
      `${action.src}: not found (the source has no /${base}, where the pattern's matches would be)`,
    );
  }
  const exclude =
    action.excludePatterns.length > 0 ? createContextMatcher(action.excludePatterns) : undefined;
  const matches = await globInRoot(srcRoot, action.src, action.followSymlinks);
  return matches.filter((m) => !exclude?.excludes(m.belowBase)).map((m) => m.path);
}

interface PendingDir {
  src: string;
  target: string;
  stat: Stats;
  copied: boolean;
}

/** One copy action's recursive copier: its hard-link memory and its include/exclude matchers. */
class Copier {
  private readonly options: CopyOptions;
  private readonly include: ContextMatcher | undefined;
  private readonly exclude: ContextMatcher | undefined;
  /** `dev:ino` of a copied file with several links → where it was copied to. */
  private readonly inodes = new Map<string, string>();
  /** Directories on the way to the entry being copied that are not created yet (include patterns). */
  private readonly parents: PendingDir[] = [];

  constructor(options: CopyOptions, action: CopyAction) {
    this.options = options;
    this.include =
      action.includePatterns.length > 0 ? createContextMatcher(action.includePatterns) : undefined;
    this.exclude =
      action.excludePatterns.length > 0 ? createContextMatcher(action.excludePatterns) : undefined;
  }

  /**
   * `rel`: the path below the copied source ("" for the source itself, which patterns never
   * filter). `known`: its lstat, when the caller has it.
   */
  async copy(
    src: string,
    rel: string,
    target: string,
    overwriteMetadata: boolean,
    known?: Stats,
  ): Promise<void> {
    this.options.signal?.throwIfAborted();
    const st = known ?? (await lstat(src));
    // A 0:0 character device is an overlay whiteout left in an unpacked layer read directly: it
    // stands for a deletion, never for a file to copy.
    if (st.isCharacterDevice() && st.rdev === 0) return;
    const include = this.included(rel, st);
    if (include === "skip") return;
    if (!st.isDirectory()) {
      if (include) await this.copyEntry(src, rel, target, st);
      return;
    }
    if (include) this.createParents(overwriteMetadata);
    let created = false;
    if (include) created = this.directoryOnly(target, st, overwriteMetadata);
    this.parents.push({ src, target, stat: st, copied: include });
    try {
      // Synchronous calls throughout: a copy is mostly small files and directories, for which a
      // thread-pool round trip per call costs far more than the call itself.
      const children = readdirSync(src)
        .sort(byBytes)
        .map((name) => {
          const childSrc = childPath(src, name);
          return {
            src: childSrc,
            rel: rel === "" ? name : `${rel}/${name}`,
            target: childPath(target, name),
            stat: lstatSync(childSrc),
          };
        });
      // A directory's files first, then its directories, depth first, so that the directories
      // an include pattern needs are made in order.
      const files = children.filter((c) => !c.stat.isDirectory());
      if (files.some((c) => this.included(c.rel, c.stat) === true)) this.createParents(true);
      for (const c of files) await this.copy(c.src, c.rel, c.target, true, c.stat);
      for (const c of children) {
        if (c.stat.isDirectory()) await this.copy(c.src, c.rel, c.target, true, c.stat);
      }
    } finally {
      this.parents.pop();
    }
    if (!include) return;
    this.options.reuse?.pruneDirectory(target);
    // The copy's own top directory keeps the destination's metadata when it existed already.
    if (overwriteMetadata || created) this.copyMetadata(st, target);
    else lutimesSync(target, st.atime, st.mtime);
    this.options.reuse?.stamp(target);
  }

  /** Whether the include and exclude patterns keep `rel`; "skip" for a directory nothing inside can be kept of. */
  private included(rel: string, st: Stats): boolean | "skip" {
    if (rel === "") return true;
    let include = true;
    if (this.include && !this.include.excludes(rel)) include = false;
    if (this.exclude?.excludes(rel)) {
      if (st.isDirectory() && this.exclude.skipsDirectory(rel)) return "skip";
      include = false;
    }
    return include;
  }

  /** Copies a file, symlink, FIFO or device (never a directory) to `target`. */
  private async copyEntry(src: string, rel: string, target: string, st: Stats): Promise<void> {
    const single = st.nlink === 1;
    // Entries are copied one at a time: a later link to an inode finds the first one's copy.
    const inode = st.isFile() && !single ? `${st.dev}:${st.ino}` : undefined;
    const first = inode !== undefined ? this.inodes.get(inode) : undefined;
    this.createParents(true);
    const reuse = this.options.reuse;
    if (first !== undefined) {
      this.replacing(target, () => linkSync(first, target));
      reuse?.wrote(target);
      return; // a hard link shares its inode's metadata, already set
    }
    if (reuse && single && st.isFile() && reuse.keep(target, st)) return;
    if (st.isFile()) {
      // Exclusive: a file is never written through whatever is at the target (a symlink above all).
      this.replacing(target, () =>
        copyFileSync(src, target, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL),
      );
    } else if (st.isSymbolicLink()) {
      const linkTarget = readlinkSync(src);
      this.replacing(target, () => symlinkSync(linkTarget, target));
    } else if (st.isFIFO() || st.isCharacterDevice() || st.isBlockDevice()) {
      this.emptyFileTarget(target);
      if (this.options.rootless && !st.isFIFO()) {
        this.options.warn(`${rel || path.basename(src)}: device files cannot be created rootless; left out`);
        return;
      }
      const type = st.isFIFO() ? "FIFO" : st.isCharacterDevice() ? "CharacterDevice" : "BlockDevice";
      const { major, minor } = deviceNumbers(st.rdev);
      await makeSpecialFile(target, type, major, minor);
    } else {
      this.options.warn(`${rel || path.basename(src)} is a socket: left out of the copy`);
      return;
    }
    // copyFile gave the new file the source's mode already; only a chown can take bits off it.
    this.copyMetadata(st, target, st.isFile());
    reuse?.wrote(target, st);
    if (inode !== undefined) this.inodes.set(inode, target);
  }

  /** Creates `target` with `create`; whatever non-directory is there already is replaced. */
  private replacing(target: string, create: () => void): void {
    try {
      create();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      this.emptyFileTarget(target);
      create();
    }
  }

  private createParents(overwriteMetadata: boolean): void {
    for (const parent of this.parents) {
      if (parent.copied) continue;
      if (this.directoryOnly(parent.target, parent.stat, overwriteMetadata)) {
        this.copyMetadata(parent.stat, parent.target);
      }
      parent.copied = true;
    }
  }

  /** Makes `target` a directory; whether it was created. An existing non-directory is an error. */
  private directoryOnly(target: string, st: Stats, overwriteMetadata: boolean): boolean {
    let existing = lstatSync(target, { throwIfNoEntry: false });
    const reuse = this.options.reuse;
    if (existing && reuse && !reuse.exists(target, true)) {
      // The previous run's own entry: its directory stands for one made now, anything else goes.
      if (existing.isDirectory()) {
        reuse.wrote(target);
        return true;
      }
      reuse.removeLeftover(target);
      existing = undefined;
    }
    if (!existing) {
      mkdirSync(target, { mode: 0o700 });
      reuse?.wrote(target);
      return true;
    }
    if (!existing.isDirectory()) {
      throw new CopyError(
        `cannot copy a directory to ${this.inside(target)}: it exists and is not a directory`,
      );
    }
    if (overwriteMetadata) chmodSync(target, this.modeOf(st));
    reuse?.wrote(target);
    return false;
  }

  private emptyFileTarget(target: string): void {
    const existing = lstatSync(target, { throwIfNoEntry: false });
    if (!existing) return;
    if (existing.isDirectory() && this.options.reuse?.isLeftover(target)) {
      this.options.reuse.removeLeftover(target);
      return;
    }
    if (existing.isDirectory()) {
      throw new CopyError(`cannot replace the directory ${this.inside(target)} with a file`);
    }
    rmSync(target);
  }

  private modeOf(st: Stats): number {
    const own = st.mode & 0o7777;
    return this.options.mode ? this.options.mode(own, st.isDirectory()) & 0o7777 : own;
  }

  /** Owner, then mode (a chown clears setuid bits), then times: as fsutil's copyFileInfo. */
  private copyMetadata(st: Stats, target: string, hasSourceMode = false): void {
    const owner = this.options.owner ?? { uid: st.uid, gid: st.gid };
    lchownSync(target, owner.uid, owner.gid);
    const needsChmod = !hasSourceMode || this.options.mode !== undefined || (st.mode & 0o6000) !== 0;
    if (!st.isSymbolicLink() && needsChmod) chmodSync(target, this.modeOf(st));
    lutimesSync(target, st.atime, st.mtime);
  }

  private inside(hostPath: string): string {
    const rel = path.relative(this.options.destRoot, hostPath);
    return `/${rel}`;
  }
}
