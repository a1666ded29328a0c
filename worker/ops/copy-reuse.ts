/**
 * A COPY re-run after an edit, updated in place: the previous run of the same copy on the same
 * base (its kept upper directory, Snapshotter.claimLayer) becomes the new run's upper directory,
 * and the unchanged copy code runs over it. A file whose source is the very inode the previous run
 * copied, unchanged since (device, inode, ctime, mtime, size), and whose copy is the very inode
 * that run wrote, unchanged since (inode, ctime), is kept instead of written again; everything
 * else is written as a fresh run writes it, and what the previous run made that this one does not
 * is removed. Editing one file of a 2,000-file `COPY . .` then writes one file, not 2,000.
 *
 * The previous run's entries must not change what the copy decides. So every question the copier
 * asks of the destination ("does it exist?") is answered as a fresh upper directory would answer
 * it (`exists`): an entry only the previous run made, and that this run has not made yet, is not
 * there. Where the answer cannot be made the same (a leftover entry over a lower layer's entry,
 * which only a whiteout could hide), the update is abandoned (ReuseAbandoned) and the op runs
 * again on a fresh upper directory. Directories this run does not give times to get "now", as
 * the directories a fresh run creates entries in do.
 *
 * test/worker/copy-update.test.ts builds random contexts and edits warm and in empty stores and
 * compares the images, layer for layer.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  type BigIntStats,
  chmodSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readdirSync,
  rmSync,
  type Stats,
} from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { FileAction } from "../../solver/graph.js";
import { childPath } from "../child-path.js";
import { isWhiteout, LowerView, type Snapshotter } from "../snapshot/index.js";
import type { Owner } from "./owner.js";

/** What `<snapshots>/copies/<key>.json` records of the last run of a copy on a base. */
interface CopyRecord {
  /** The chain ID its upper directory was kept as. */
  layer: string;
  /** Where its destination resolved, relative to the root. */
  dest: string;
  /** Each copied file: its source's identity, then its copy's inode and ctime (ns), by path. */
  files: Record<string, string>;
}

/** Thrown when the previous run's upper directory cannot be made what a fresh run gives. */
export class ReuseAbandoned extends Error {}

/** What identifies an unchanged source file: any write, chmod, chown or utimes moves its ctime. */
function sourceIdentity(st: Stats): string {
  return `${st.dev}:${st.ino}:${st.ctimeMs}:${st.mtimeMs}:${st.size}`;
}

export class CopyReuse {
  /** The merged root the copy writes to; set once mounted. */
  root = "";
  private readonly lower: LowerView;
  /** The previous run's entries (its upper directory, walked before mounting), by path. */
  private readonly previous: Map<string, BigIntStats>;
  private readonly previousFiles: Record<string, string>;
  private readonly previousDest: string | undefined;
  /** Paths this run made or kept, and every directory above them. */
  private readonly produced = new Set<string>();
  private readonly above = new Set<string>();
  /** Directories this run gave times to (the copied ones). */
  private readonly stamped = new Set<string>();
  /** Each file this run copied or kept: its source's identity, for the next record. */
  private readonly sources = new Map<string, string>();
  /** The previous run's entries by directory. */
  private readonly children = new Map<string, string[]>();
  /** The previous run's entries removed, with everything below them. */
  private readonly removed = new Set<string>();
  private dest: string | undefined;

  private constructor(
    lowers: readonly string[],
    previous: Map<string, BigIntStats>,
    record: CopyRecord | undefined,
  ) {
    this.lower = new LowerView(lowers);
    this.previous = previous;
    for (const rel of previous.keys()) {
      const parent = parentOf(rel)!;
      const siblings = this.children.get(parent);
      if (siblings) siblings.push(rel);
      else this.children.set(parent, [rel]);
    }
    this.previousFiles = record?.files ?? {};
    this.previousDest = record?.dest;
  }

  /** Whether an op may be updated in place: one plain copy (an archive ADD extracts instead). */
  static applies(actions: readonly FileAction[]): boolean {
    return actions.length === 1 && actions[0]!.action === "copy" && !actions[0]!.attemptUnpack;
  }

  /** The record's name: the copy and the chain ID of the base it runs on. */
  static key(action: FileAction, baseChainId: string | undefined): string {
    return createHash("sha256")
      .update(JSON.stringify({ action, base: baseChainId ?? "" }))
      .digest("hex");
  }

  /**
   * Takes the previous run's upper directory out of the store when it can (nothing else can be
   * reading it) into a temp directory beside the layers: `upper`, for mountWritable. Without
   * one, a reuse that remembers nothing, for the record of this run.
   */
  static async start(
    snapshotter: Snapshotter,
    key: string,
    lowers: readonly string[],
  ): Promise<{ reuse: CopyReuse; upper?: string }> {
    const file = path.join(snapshotter.root, "copies", `${key}.json`);
    let record: CopyRecord | undefined;
    try {
      record = JSON.parse(await readFile(file, "utf8")) as CopyRecord;
    } catch {
      // None yet.
    }
    // Without a previous run to take, a reuse that remembers nothing records this one.
    const none = () => ({ reuse: new CopyReuse(lowers, new Map(), undefined) });
    if (record === undefined) return none();
    await mkdir(snapshotter.layersDir, { recursive: true, mode: 0o700 });
    const temp = path.join(
      snapshotter.layersDir,
      `.tmp-copy-${process.pid}-${randomBytes(6).toString("hex")}`,
    );
    if (!(await snapshotter.claimLayer(record.layer, temp))) return none();
    const previous = new Map<string, BigIntStats>();
    // A kept upper directory never holds a whiteout; a layer unpacked from its tar might.
    if (!walk(temp, "", previous)) {
      await rm(temp, { recursive: true, force: true });
      return none();
    }
    return { reuse: new CopyReuse(lowers, previous, record), upper: temp };
  }

  /** Whether the previous run's upper directory is in use. */
  get updating(): boolean {
    return this.previous.size > 0;
  }

  /** Whether the previous run made `rel` (relative to the root). */
  holds(rel: string): boolean {
    return this.previous.has(rel);
  }

  /** The previous run's directory did not become the upper directory (the mount is a copy). */
  forgetPrevious(): void {
    this.previous.clear();
    this.children.clear();
  }

  private rel(hostPath: string): string {
    return path.relative(this.root, hostPath);
  }

  private made(rel: string): void {
    this.produced.add(rel);
    for (let dir = parentOf(rel); dir !== undefined && !this.above.has(dir); dir = parentOf(dir)) {
      this.above.add(dir);
    }
  }

  private isProduced(rel: string): boolean {
    return this.produced.has(rel) || this.above.has(rel);
  }

  /**
   * Whether `hostPath` (in the merged root, which holds it or not) exists as it would in a fresh
   * run at this point: an entry only the previous run made, and this run has not, does not.
   */
  exists(hostPath: string, present: boolean): boolean {
    if (!present) return false;
    const rel = this.rel(hostPath);
    if (!this.previous.has(rel) || this.isProduced(rel)) return true;
    const below = this.lower.lookupSync(rel);
    if (below === undefined) return false;
    // The previous run's entry over a lower one: a copied-up directory, or what replaced a file.
    if (below.stat.isDirectory() !== this.previous.get(rel)!.isDirectory()) {
      throw new ReuseAbandoned(`${rel}: the previous copy replaced a lower entry of another type`);
    }
    return true;
  }

  /**
   * The destination as resolved: it must resolve where the previous run's did, through
   * directories only, or the previous run's entries could have moved it.
   */
  destination(hostPath: string): void {
    const rel = this.rel(hostPath);
    this.dest = rel;
    if (!this.updating) return;
    if (rel !== this.previousDest) {
      throw new ReuseAbandoned(`the destination resolved to /${rel}, not /${this.previousDest}`);
    }
    for (let dir: string | undefined = rel; dir !== undefined; dir = parentOf(dir)) {
      const st = this.previous.get(dir);
      if (st && !st.isDirectory()) throw new ReuseAbandoned(`/${dir} is no longer a directory`);
    }
  }

  /**
   * Makes the missing directories of `hostPath` (resolved in the root) as copy.ts's mkdirAll
   * does, counting the previous run's as missing: one of them is given the mode and owner a
   * new one gets, a file of it is replaced.
   */
  mkdirAll(hostPath: string, mode: number, owner: Owner | undefined): void {
    const rel = this.rel(hostPath);
    const parts = rel === "" ? [] : rel.split("/");
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      // Each directory above was checked (or made) a directory in the turns before.
      const full = childPath(this.root, dir);
      const st = lstatSync(full, { throwIfNoEntry: false });
      if (this.exists(full, st !== undefined)) {
        if (!st!.isDirectory()) throw new ReuseAbandoned(`/${dir} is in the way as a file`);
        this.made(dir);
        continue;
      }
      if (st && !st.isDirectory()) this.removeLeftover(full);
      if (!st?.isDirectory()) mkdirSync(full, { mode: 0o700 });
      lchownSync(full, owner?.uid ?? 0, owner?.gid ?? 0);
      chmodSync(full, mode);
      this.made(dir);
    }
  }

  /**
   * The previous run's file at `target` when it is what copying `st` from `src` would write
   * again: true when kept (nothing to do).
   */
  keep(target: string, st: Stats): boolean {
    const rel = this.rel(target);
    const before = this.previous.get(rel);
    const recorded = this.previousFiles[rel];
    if (before === undefined || recorded === undefined || this.isProduced(rel)) return false;
    if (!before.isFile() || before.nlink !== 1n) return false;
    const identity = sourceIdentity(st);
    if (recorded !== `${identity} ${before.ino}:${before.ctimeNs}`) return false;
    this.made(rel);
    this.sources.set(rel, identity);
    return true;
  }

  /** `target` was written (any type): a file of one link from `st` is remembered for the next run. */
  wrote(target: string, st?: Stats): void {
    const rel = this.rel(target);
    this.made(rel);
    if (st?.isFile() && st.nlink === 1) this.sources.set(rel, sourceIdentity(st));
    else this.sources.delete(rel);
  }

  /** The copied directory `target` was given its source's times. */
  stamp(target: string): void {
    const rel = this.rel(target);
    this.made(rel);
    this.stamped.add(rel);
  }

  /** Whether `target`'s entry is one only the previous run made, not made again yet. */
  isLeftover(target: string): boolean {
    const rel = this.rel(target);
    return this.previous.has(rel) && !this.isProduced(rel) && this.lower.lookupSync(rel) === undefined;
  }

  /** Removes the previous run's entry at `target` (over no lower entry: no whiteout is made). */
  removeLeftover(target: string): void {
    const rel = this.rel(target);
    if (!this.isLeftover(target)) throw new ReuseAbandoned(`/${rel}: not the previous copy's own`);
    rmSync(this.inside(rel), { recursive: true, force: true });
    this.markRemoved(rel);
  }

  /**
   * `rel` in the root, through directories only. What this run made may have replaced a
   * directory of the previous run with a symlink (to a host path, as likely as not): a path
   * through it must never be followed, so a path with anything but directories above it is
   * refused.
   */
  private inside(rel: string): string {
    const parts = rel.split("/");
    let dir = this.root;
    for (const part of parts.slice(0, -1)) {
      dir = childPath(dir, part);
      if (!lstatSync(dir).isDirectory()) {
        throw new ReuseAbandoned(`/${rel}: a directory above it is no longer one`);
      }
    }
    return childPath(dir, parts.at(-1)!);
  }

  /**
   * Removes what the previous run made in the copied directory `target` and this run did not,
   * once this run made all of its entries and before it gives the directory its times (a removal
   * moves them): a fresh run never made those entries.
   */
  pruneDirectory(target: string): void {
    if (!this.updating) return;
    const rel = this.rel(target);
    for (const child of this.children.get(rel) ?? []) this.removeUnmade(child);
  }

  private removeUnmade(rel: string): void {
    if (this.isProduced(rel) || this.removed.has(rel)) return;
    if (this.lower.lookupSync(rel) !== undefined) {
      throw new ReuseAbandoned(`/${rel}: the previous copy's entry is over a lower layer's`);
    }
    rmSync(this.inside(rel), { recursive: true, force: true });
    this.markRemoved(rel);
  }

  private markRemoved(rel: string): void {
    this.removed.add(rel);
    for (const child of this.children.get(rel) ?? []) this.markRemoved(child);
  }

  /**
   * After the copy: removes what is left of the previous run outside the copied directories,
   * and gives each directory this run did not give times to the time a fresh run leaves it: "now"
   * where a fresh run creates an entry in it or creates it, else the lower layer's (a copy-up
   * keeps it).
   */
  finish(): void {
    if (!this.updating) return;
    for (const rel of [...this.previous.keys()].sort()) this.removeUnmade(rel);
    const now = new Date();
    const unstamped = new Set<string>();
    for (const [rel, st] of this.previous) {
      if (st.isDirectory() && !this.removed.has(rel) && !this.stamped.has(rel)) unstamped.add(rel);
    }
    // The directories a fresh run creates an entry in: a new one, or a file (which replaces any).
    const creating = new Set<string>();
    for (const child of this.produced) {
      const parent = parentOf(child)!;
      if (!unstamped.has(parent) || creating.has(parent)) continue;
      if (!lstatSync(this.inside(child)).isDirectory() || this.lower.lookupSync(child) === undefined) {
        creating.add(parent);
      }
    }
    for (const rel of unstamped) {
      const full = this.inside(rel);
      const current = lstatSync(full, { bigint: true });
      // What this run made there may be a file (the previous run's directory is gone).
      if (!current.isDirectory()) continue;
      const below = this.lower.lookupSync(rel);
      if (below === undefined || creating.has(rel)) lutimesSync(full, now, now);
      else if (current.mtimeNs !== below.stat.mtimeNs) {
        throw new ReuseAbandoned(`/${rel}: the previous copy left it a time a fresh one does not`);
      }
    }
  }

  /**
   * Records this run for the next one, once its upper directory was kept as `chainId`: each file's
   * inode and ctime as they are now, beside its source's identity.
   */
  async record(snapshotter: Snapshotter, key: string, chainId: string): Promise<void> {
    const dir = path.join(snapshotter.root, "copies");
    const layer = snapshotter.layerDir(chainId);
    const files: Record<string, string> = {};
    for (const [rel, identity] of this.sources) {
      const st = lstatSync(childPath(layer, rel), { bigint: true, throwIfNoEntry: false });
      if (st?.isFile() && st.nlink === 1n) files[rel] = `${identity} ${st.ino}:${st.ctimeNs}`;
    }
    const record: CopyRecord = { layer: chainId, dest: this.dest ?? "", files };
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const temp = path.join(dir, `.${key}.${process.pid}.tmp`);
    await writeFile(temp, JSON.stringify(record));
    await rename(temp, path.join(dir, `${key}.json`));
  }
}

function parentOf(rel: string): string | undefined {
  if (rel === "") return undefined;
  const i = rel.lastIndexOf("/");
  return i < 0 ? "" : rel.slice(0, i);
}

/** Every entry below `dir` into `out` by relative path; false at a whiteout. */
function walk(dir: string, rel: string, out: Map<string, BigIntStats>): boolean {
  for (const name of readdirSync(childPath(dir, rel))) {
    const child = rel === "" ? name : `${rel}/${name}`;
    const st = lstatSync(childPath(dir, child), { bigint: true });
    if (isWhiteout(st)) return false;
    out.set(child, st);
    if (st.isDirectory() && !walk(dir, child, out)) return false;
  }
  return true;
}
