/**
 * A file op run again (COPY after one file of the context changed) writes mostly what it wrote the
 * last time. Writing a small file's data is the dearest part of a copy, so a regular file that
 * the op's previous result holds at the same path with the same bytes, owner, mode and mtime is
 * hard-linked from that result instead, once the overlay is unmounted (a link cannot cross into
 * an overlay mount): the copy makes the file's directories and removes whatever was at its path,
 * and `linkInto` links it into the upper directory. Only an op of a single copy (one COPY
 * source) does this: no later action of the op can look for a file that is not there yet.
 *
 * Kept layers are never written to once in place (overlayfs copies a file up before changing
 * it), so sharing an inode with an earlier result is safe; and a file is only ever linked to the
 * same path it had, so no two paths of one root filesystem share an inode.
 */
import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import {
  chmodSync,
  constants,
  copyFileSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  readFileSync,
  renameSync,
  utimesSync,
} from "node:fs";
import { mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { digestOf } from "../../solver/digest.js";
import type { FileOp } from "../../solver/graph.js";
import { childPath, pathBelow } from "../child-path.js";
import type { Snapshotter } from "../snapshot/index.js";

/** Files above this size are copied: comparing them would cost what copying does. */
const COMPARE_BYTES = 1 << 20;

interface Deferred {
  /** Relative to the root filesystem (and so to the upper directory). */
  rel: string;
  /** The earlier result's file, to link. */
  previous: string;
  /** The copy's source, should the link fail. */
  source: string;
  owner: { uid: number; gid: number };
  mode: number;
  /** Milliseconds: made into dates only should the link fail. */
  mtimeMs: number;
  atimeMs: number;
}

/** What `<snapshots>/results/<op>.json` records of an op's latest kept result. */
interface ResultRecord {
  /** Its chain ID: the unpacked layer it is. */
  layer: string;
  /** Each file's source and the mode and owner it was given, by path: see sourceIdentity. */
  sources?: Record<string, string>;
}

/**
 * Which file a copy read, for files of unpacked layers (which never change in place): its inode
 * and birth time (an inode number is reused only by a file born later), size and mtime. Empty
 * where the file system keeps no birth time.
 */
function sourceIdentity(st: Stats): string {
  return st.birthtimeMs > 0 ? `${st.dev}:${st.ino}:${st.birthtimeMs}:${st.size}:${st.mtimeMs}` : "";
}

export class FileReuse {
  private readonly record: string;
  private readonly previous: string | undefined;
  private readonly previousSources: Record<string, string>;
  private readonly sources: Record<string, string> = {};
  private readonly rootfs: string;
  private readonly upper: string;
  private readonly deferred = new Map<string, Deferred>();
  private lastSource: [string, ReadonlyMap<string, Buffer>] | undefined;

  private constructor(
    record: string,
    previous: { dir: string; sources: Record<string, string> } | undefined,
    rootfs: string,
    upper: string,
  ) {
    this.record = record;
    this.previous = previous?.dir;
    this.previousSources = previous?.sources ?? {};
    this.rootfs = rootfs;
    this.upper = upper;
  }

  /**
   * For a run of `op` on the writable mount (`rootfs`, `upper`): its previous result, if still
   * unpacked; with `previous: false`, none (every file is copied), and this run's result replaces
   * the record.
   */
  static async forOp(
    snapshotter: Snapshotter,
    op: FileOp,
    mount: { rootfs: string; upper: string; mode: string },
    options: { previous: boolean },
  ): Promise<FileReuse | undefined> {
    if (mount.mode !== "overlay" || op.actions.length !== 1 || op.actions[0]!.action !== "copy") {
      return undefined;
    }
    const record = path.join(snapshotter.root, "results", `${digestOf(op).slice(7)}.json`);
    let previous: { dir: string; sources: Record<string, string> } | undefined;
    if (options.previous)
      try {
        const { layer, sources } = JSON.parse(await readFile(record, "utf8")) as ResultRecord;
        const dir = snapshotter.layerDir(layer);
        if ((await stat(dir)).isDirectory()) previous = { dir, sources: sources ?? {} };
      } catch {
        // Never run here, or its result was pruned: everything is copied.
      }
    return new FileReuse(record, previous, mount.rootfs, mount.upper);
  }

  /**
   * Whether the file `source` (lstat `st`), copied to `target` with `owner` and `mode`, is a file of
   * the previous result: then it is linked in later, and the caller leaves nothing at `target`.
   */
  matches(
    source: string,
    target: string,
    st: Stats,
    owner: { uid: number; gid: number },
    mode: number,
  ): boolean {
    const rel = pathBelow(this.rootfs, target);
    if (rel === undefined) return false;
    // A later source copied to the same path (a glob's matches) replaces what an earlier one deferred.
    this.deferred.delete(rel);
    const identity = sourceIdentity(st);
    const made = identity === "" ? "" : `${identity}|${mode}|${owner.uid}:${owner.gid}`;
    this.sources[rel] = made;
    if (this.previous === undefined || st.size > COMPARE_BYTES) return false;
    const previous = childPath(this.previous, rel);
    // Made last time from the very same source file, with this mode and owner: the same file.
    if (made === "" || this.previousSources[rel] !== made) {
      const before = lstatSync(previous, { throwIfNoEntry: false });
      if (
        !before?.isFile() ||
        before.size !== st.size ||
        (before.mode & 0o7777) !== mode ||
        before.uid !== owner.uid ||
        before.gid !== owner.gid ||
        Math.trunc(before.mtimeMs) !== Math.trunc(st.mtimeMs) ||
        !readFileSync(previous).equals(readFileSync(source))
      ) {
        return false;
      }
    }
    this.deferred.set(rel, { rel, previous, source, owner, mode, mtimeMs: st.mtimeMs, atimeMs: st.atimeMs });
    return true;
  }

  /**
   * The content of the file at `rel` (relative to the root), when the file was linked from the
   * previous result and its source's content is in `sources` (source-snapshot.ts): the same bytes,
   * as the link was made for the source's very file.
   */
  contentOf(rel: string, sources: ReadonlyMap<string, ReadonlyMap<string, Buffer>>): Buffer | undefined {
    const entry = this.deferred.get(rel);
    if (entry === undefined) return undefined;
    // A copy's files mostly come from one source: the last one found is tried first.
    const last = this.lastSource;
    if (last !== undefined) {
      const below = pathBelow(last[0], entry.source);
      if (below !== undefined) return last[1].get(below);
    }
    for (const source of sources) {
      const below = pathBelow(source[0], entry.source);
      if (below === undefined) continue;
      this.lastSource = source;
      return source[1].get(below);
    }
    return undefined;
  }

  get pending(): boolean {
    return this.deferred.size > 0;
  }

  /** `target` was written by the copy itself (not by way of `matches`): what is recorded of it is void. */
  wrote(target: string): void {
    const rel = pathBelow(this.rootfs, target);
    if (rel === undefined) return;
    this.sources[rel] = "";
    this.deferred.delete(rel);
  }

  /**
   * With the overlay unmounted: each file is linked from the previous result (or, should linking
   * fail, copied from the source) into the upper directory, over the empty file the copy left in
   * its place (see copy.ts), which is the only thing that can be there: a later write to the same
   * path took the entry out of `deferred`.
   */
  linkInto(): void {
    // Linking moves its directory's times, which the copy set already: they are put back.
    const directoryTimes = new Map<string, Stats>();
    const tag = randomBytes(6).toString("hex");
    for (const entry of this.deferred.values()) {
      const file = childPath(this.upper, entry.rel);
      const dir = path.dirname(file);
      if (!directoryTimes.has(dir)) directoryTimes.set(dir, lstatSync(dir));
      const temp = path.join(dir, `.tbuild-link-${tag}`);
      if (!this.link(entry, temp)) throw new Error(`cannot link ${temp}: it exists`);
      renameSync(temp, file);
    }
    for (const [dir, times] of directoryTimes) utimesSync(dir, times.atime, times.mtime);
  }

  /**
   * Links the previous result's file at `file` (or, should that fail, copies the source there, with
   * the metadata the copy would give); false when something is at `file` already.
   */
  private link(entry: Deferred, file: string): boolean {
    try {
      linkSync(entry.previous, file);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    }
    // Too many links, or pruned meanwhile.
    try {
      copyFileSync(entry.source, file, constants.COPYFILE_EXCL);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    }
    lchownSync(file, entry.owner.uid, entry.owner.gid);
    chmodSync(file, entry.mode);
    lutimesSync(file, new Date(entry.atimeMs), new Date(entry.mtimeMs));
    return true;
  }

  /** The op's result, kept unpacked as `chainId`, is what its next run links from. */
  async remember(chainId: string): Promise<void> {
    await mkdir(path.dirname(this.record), { recursive: true });
    const temp = `${this.record}.${process.pid}.tmp`;
    await writeFile(temp, JSON.stringify({ layer: chainId, sources: this.sources } satisfies ResultRecord));
    await rename(temp, this.record);
  }
}
