/**
 * A writable root filesystem's changes as an OCI layer tar. Two ways to find the changes, one way
 * to write them:
 *
 * - overlay: the upper directory holds every changed entry (copied up whole: tbuild mounts with
 *   metacopy off), deletions as whiteouts (0:0 character devices). A directory that overlayfs made
 *   opaque (removed and created again) is recognized without reading its xattr (Node cannot): it
 *   hides entries of the layers below for which it holds no whiteout, which the merged view shows.
 * - copy: the root filesystem is a full copy of the layers; an entry changed when its ctime
 *   (which every write, chmod, chown, rename or link moves, and no one can set) is after the copy
 *   was made; a directory was removed and created again when it was born after the copy.
 *
 * Both give the same tar for the same changes: entries sorted byte-wise, depth first, a changed
 * entry's parent directories included, `.wh.NAME` for a deletion, `.wh..wh..opq` first in a
 * directory that hides everything below it, numeric owners, permission bits with
 * setuid/setgid/sticky, whole-second mtimes clamped to SOURCE_DATE_EPOCH when given, hard links as
 * links. Extended attributes are not carried (Node cannot read them).
 */
import type { BigIntStats } from "node:fs";
import { createReadStream, lstatSync, readdirSync, readFileSync } from "node:fs";
import { readlink } from "node:fs/promises";
import { byBytes } from "../oci/archive/byte-order.js";
import { TAR_END, TarChunker, type TarEntry, tarEntry } from "../oci/archive/tar.js";
import { childPath } from "./child-path.js";
import { isWhiteout, LowerView } from "./snapshot/lower-view.js";
import { DroppedXattrs } from "./xattrs.js";

const WHITEOUT_PREFIX = ".wh.";
const OPAQUE_MARKER = ".wh..wh..opq";
/**
 * Files up to this size are read whole, synchronously: a diff is mostly small files, for which a
 * stream (its buffer sized for large files) and a thread-pool round trip per call cost far more
 * than the read itself.
 */
const READ_WHOLE_BYTES = 256 * 1024;

export interface DiffOptions {
  /** Seconds since the epoch: no mtime in the tar is later (SOURCE_DATE_EPOCH). */
  sourceDateEpoch?: number;
  /** Hears of what a layer cannot hold (sockets, extended attributes). */
  warn?(message: string): void;
}

/** A changed directory (or the root): what to write inside it. */
interface DirChanges {
  opaque: boolean;
  /** Names deleted from the layers below. */
  whiteouts: string[];
  children: ChangedEntry[];
}

interface ChangedEntry {
  name: string;
  /** Where its metadata and content are read. */
  source: string;
  /** Its lstat, taken while the changes were found (nothing writes to a mount being diffed). */
  stat: BigIntStats;
  /** For a directory. */
  inside?: DirChanges;
}

function join(rel: string, name: string): string {
  return rel === "" ? name : `${rel}/${name}`;
}

function readdirSorted(dir: string): string[] {
  return readdirSync(dir).sort(byBytes);
}

/**
 * Changes from an overlay upper directory, with the merged view mounted at `merged` (undefined
 * when no directory can be opaque).
 */
export async function overlayChanges(
  upper: string,
  merged: string | undefined,
  lowers: readonly string[],
): Promise<DirChanges> {
  const view = new LowerView(lowers);
  async function walk(rel: string, belowIsDir: boolean): Promise<DirChanges> {
    const dir = childPath(upper, rel);
    const names = readdirSorted(dir);
    const stats = new Map<string, BigIntStats>();
    const whiteouts = new Set<string>();
    for (const name of names) {
      const stat = lstatSync(childPath(dir, name), { bigint: true });
      if (isWhiteout(stat)) whiteouts.add(name);
      else stats.set(name, stat);
    }
    // What the layers below hold here matters only to whiteouts and opaque directories: a
    // directory of new and changed entries alone (most of them) is never compared. The root is
    // never opaque (no process can remove it): it is listed for its whiteouts only.
    const mayBeOpaque = merged !== undefined && rel !== "";
    const below = belowIsDir && (whiteouts.size > 0 || mayBeOpaque) ? await view.list(rel) : new Map();
    let opaque = false;
    if (below.size > 0 && mayBeOpaque) {
      const visible = new Set(readdirSync(childPath(merged, rel)));
      for (const name of below.keys()) {
        if (!visible.has(name) && !whiteouts.has(name)) opaque = true;
      }
    }
    const children: ChangedEntry[] = [];
    for (const [name, stat] of stats) {
      const source = childPath(dir, name);
      if (!stat.isDirectory()) {
        children.push({ name, source, stat });
        continue;
      }
      // The view resolves the path again when it is listed: a non-directory below lists nothing.
      children.push({ name, source, stat, inside: await walk(join(rel, name), !opaque) });
    }
    return {
      opaque,
      whiteouts: opaque ? [] : [...whiteouts].filter((name) => below.has(name)),
      children,
    };
  }
  return walk("", true);
}

/**
 * Changes of a copied root filesystem against the layers it was copied from; `since` is a ctime
 * (nanoseconds) no entry had when the copy was made and every later change has exceeded.
 */
export async function copyChanges(
  rootfs: string,
  lowers: readonly string[],
  since: bigint,
): Promise<DirChanges> {
  const view = new LowerView(lowers);
  async function walk(rel: string, belowIsDir: boolean, recreated: boolean): Promise<DirChanges> {
    const names = readdirSorted(childPath(rootfs, rel));
    const below = belowIsDir ? await view.list(rel) : new Map();
    const present = new Set(names);
    const hidden = [...below.keys()].filter((name) => !present.has(name)).sort(byBytes);
    // As overlayfs does it: a directory created again hides what was below it; one that lost
    // some entries keeps the others and whites out the lost ones.
    const opaque = recreated && hidden.length > 0;
    const children: ChangedEntry[] = [];
    for (const name of names) {
      const source = childPath(rootfs, join(rel, name));
      const stat = lstatSync(source, { bigint: true });
      const lower = opaque ? undefined : below.get(name);
      const changed = lower === undefined || stat.ctimeNs > since;
      if (!stat.isDirectory()) {
        if (changed) children.push({ name, source, stat });
        continue;
      }
      const underneath = lower?.stat.isDirectory() === true;
      const born = stat.birthtimeNs > since;
      const inside = await walk(join(rel, name), underneath, underneath && born);
      if (
        changed ||
        !underneath ||
        inside.opaque ||
        inside.whiteouts.length > 0 ||
        inside.children.length > 0
      ) {
        children.push({ name, source, stat, inside });
      }
    }
    return { opaque, whiteouts: opaque ? [] : hidden, children };
  }
  return walk("", true, false);
}

/** Whether overlayfs made any directory of these changes opaque. */
export function hasOpaqueDirectory(changes: DirChanges): boolean {
  return changes.opaque || changes.children.some((child) => child.inside && hasOpaqueDirectory(child.inside));
}

/** Linux's encoding of a device number (glibc's gnu_dev_major/minor). */
function deviceNumbers(rdev: bigint): { devmaj: number; devmin: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { devmaj: Number(major), devmin: Number(minor) };
}

/** The tar stream of `changes`, whose root directory is `root` (its metadata dates the root's whiteouts). */
export async function* writeChanges(
  changes: DirChanges,
  root: string,
  options: DiffOptions = {},
): AsyncGenerator<Buffer> {
  const epoch = options.sourceDateEpoch;
  const clamp = (time: Date): Date =>
    epoch !== undefined && time.getTime() > epoch * 1000 ? new Date(epoch * 1000) : time;
  const hardLinks = new Map<string, string>();
  const chunker = new TarChunker();
  const xattrs = new DroppedXattrs();

  const marker = (name: string, dirStat: BigIntStats): TarEntry => ({
    path: name,
    type: "File",
    mode: 0,
    uid: 0,
    gid: 0,
    size: 0,
    mtime: clamp(dirStat.mtime),
  });

  async function* visit(dir: DirChanges, dirSource: string, prefix: string): AsyncGenerator<Buffer> {
    const dirStat = lstatSync(dirSource, { bigint: true });
    if (dir.opaque) {
      const chunk = chunker.add(marker(`${prefix}${OPAQUE_MARKER}`, dirStat));
      if (chunk) yield chunk;
    }
    const items: Array<{ sortKey: string; whiteout?: string; entry?: ChangedEntry }> = [
      ...dir.whiteouts.map((name) => ({ sortKey: `${WHITEOUT_PREFIX}${name}`, whiteout: name })),
      ...dir.children.map((entry) => ({ sortKey: entry.name, entry })),
    ].sort((a, b) => byBytes(a.sortKey, b.sortKey));
    for (const item of items) {
      if (item.whiteout !== undefined) {
        const chunk = chunker.add(marker(`${prefix}${WHITEOUT_PREFIX}${item.whiteout}`, dirStat));
        if (chunk) yield chunk;
        continue;
      }
      const entry = item.entry!;
      const relative = `${prefix}${entry.name}`;
      const stat = entry.stat;
      xattrs.check(entry.source, relative);
      const base = {
        mode: Number(stat.mode & 0o7777n),
        uid: Number(stat.uid),
        gid: Number(stat.gid),
        size: 0,
        mtime: clamp(stat.mtime),
      };
      if (stat.isDirectory()) {
        const chunk = chunker.add({ ...base, path: `${relative}/`, type: "Directory" });
        if (chunk) yield chunk;
        if (entry.inside) yield* visit(entry.inside, entry.source, `${relative}/`);
      } else if (stat.isFile()) {
        const key = `${stat.dev}:${stat.ino}`;
        const first = stat.nlink > 1n ? hardLinks.get(key) : undefined;
        if (first !== undefined) {
          const chunk = chunker.add({ ...base, path: relative, type: "Link", linkpath: first });
          if (chunk) yield chunk;
          continue;
        }
        if (stat.nlink > 1n) hardLinks.set(key, relative);
        const size = Number(stat.size);
        const header: TarEntry = { ...base, path: relative, type: "File", size };
        if (size <= READ_WHOLE_BYTES) {
          const chunk = chunker.add(header, readFileSync(entry.source));
          if (chunk) yield chunk;
        } else {
          const gathered = chunker.flush();
          if (gathered) yield gathered;
          yield* tarEntry(header, createReadStream(entry.source, { highWaterMark: 1 << 20 }));
        }
      } else if (stat.isSymbolicLink()) {
        const chunk = chunker.add({
          ...base,
          path: relative,
          type: "SymbolicLink",
          linkpath: await readlink(entry.source),
        });
        if (chunk) yield chunk;
      } else if (stat.isCharacterDevice() || stat.isBlockDevice()) {
        const type = stat.isCharacterDevice() ? "CharacterDevice" : "BlockDevice";
        const chunk = chunker.add({ ...base, path: relative, type, ...deviceNumbers(stat.rdev) });
        if (chunk) yield chunk;
      } else if (stat.isFIFO()) {
        const chunk = chunker.add({ ...base, path: relative, type: "FIFO" });
        if (chunk) yield chunk;
      } else {
        options.warn?.(`${relative}: a socket cannot be stored in a layer; left out`);
      }
    }
  }

  yield* visit(changes, root, "");
  const dropped = xattrs.warning("the layer");
  if (dropped !== undefined) options.warn?.(dropped);
  const rest = chunker.flush();
  if (rest) yield rest;
  yield TAR_END;
}
