/**
 * The read-only view of an image's filesystem that the SBOM scanner reads: list a directory, stat
 * an entry, resolve a path, read a file. An image is untrusted: its `etc/os-release` may be a
 * symlink to the host's `/etc/shadow`, its `node_modules` a symlink to `/`, its dpkg status a FIFO
 * or gigabytes long. So every path is resolved inside the image's root (worker/root-path.ts, as the
 * container would resolve it), the walk never follows a symlink, a file is opened only when the
 * view says it is a regular file and is opened with O_NOFOLLOW|O_NONBLOCK, and every read has a
 * limit.
 *
 * The view over a build's image is its unpacked layers, lowest first (Snapshotter.prepareImage),
 * merged as overlayfs merges them (worker/snapshot/lower-view.ts); a plain directory (a build
 * context, a test's tree) is a stack of one. When rootless, the scan runs inside tbuild's user
 * namespace like the rest of a build, where the layers' owners are mapped.
 */
import {
  type BigIntStats,
  closeSync,
  constants,
  type Dirent,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
} from "node:fs";
import { childPath } from "../../worker/child-path.js";
import { isMissing, resolveInTree } from "../../worker/root-path.js";
import { LowerView } from "../../worker/snapshot/index.js";

export type EntryKind = "file" | "directory" | "symlink" | "other";

export interface ImageEntry {
  name: string;
  kind: EntryKind;
  size: number;
  /** Permission bits. */
  mode: number;
}

/** A filesystem seen from its root: paths are relative, `/` separated, "" for the root. */
export interface ImageFilesystem {
  /** The entries of the directory at `rel` (no symlink followed), sorted by name; [] when it is not a directory. */
  list(rel: string): Promise<ImageEntry[]>;
  /** The entry at `rel` itself (no symlink followed), undefined when there is none. */
  stat(rel: string): ImageEntry | undefined;
  /** `inside` (a path as the container sees it) with its symlinks followed inside the root. */
  resolve(inside: string): string;
  /** The host path of the entry at `rel`, for readers that must open a file by name (sqlite). */
  hostPath(rel: string): string | undefined;
}

function kindOf(stat: BigIntStats): EntryKind {
  if (stat.isFile()) return "file";
  if (stat.isDirectory()) return "directory";
  if (stat.isSymbolicLink()) return "symlink";
  return "other";
}

function entryOf(name: string, stat: BigIntStats): ImageEntry {
  return { name, kind: kindOf(stat), size: Number(stat.size), mode: Number(stat.mode & 0o7777n) };
}

/** The merged view of unpacked layer directories, lowest first; a plain directory is `[dir]`. */
export function layersFilesystem(layers: readonly string[]): ImageFilesystem {
  const view = new LowerView(layers);
  const tree = {
    lstat: (rel: string) => view.lookupSync(rel)?.stat,
    readlink(rel: string): string {
      const found = view.lookupSync(rel);
      if (!found?.stat.isSymbolicLink())
        throw Object.assign(new Error(`not a symlink: ${rel}`), { code: "EINVAL" });
      // The link's target as text: read from the layer that holds it, never followed by the host.
      return readlinkSync(found.source);
    },
  };
  return {
    list: async (rel) => listMergedSync(view, rel),
    stat(rel) {
      const found = view.lookupSync(rel);
      return found ? entryOf(rel.slice(rel.lastIndexOf("/") + 1), found.stat) : undefined;
    },
    resolve: (inside) => resolveInTree(tree, inside),
    hostPath: (rel) => view.lookupSync(rel)?.source,
  };
}

/** `rel` is the path as asked for (what a warning or a package's `foundIn` names); `resolved` where it led. */
/**
 * An optimization of `LowerView.list` for a walk of the whole tree (a Debian image's 10,000
 * entries: 350 ms through the view's asynchronous lookups, 40 ms so): one synchronous readdir per
 * layer of the directory, the topmost holder of a name wins, and only regular files are stat'ed
 * (a walk needs their size and mode); a character device, which may be a whiteout, is looked up
 * through the view. test/attest/sbom-debian.test.ts checks it lists what `LowerView.list` lists.
 */
export function listMergedSync(view: LowerView, rel: string): ImageEntry[] {
  const dir = view.lookupSync(rel);
  if (!dir?.stat.isDirectory()) return [];
  const seen = new Set<string>();
  const entries: ImageEntry[] = [];
  for (const layer of dir.layers) {
    let names: Dirent[];
    try {
      names = readdirSync(childPath(layer, rel), { withFileTypes: true });
    } catch (err) {
      if (isMissing(err)) continue;
      throw err;
    }
    for (const dirent of names) {
      if (seen.has(dirent.name)) continue;
      seen.add(dirent.name);
      const childRel = rel === "" ? dirent.name : `${rel}/${dirent.name}`;
      if (dirent.isDirectory()) entries.push({ name: dirent.name, kind: "directory", size: 0, mode: 0 });
      else if (dirent.isSymbolicLink())
        entries.push({ name: dirent.name, kind: "symlink", size: 0, mode: 0 });
      else if (dirent.isFile()) {
        const stat = lstatSync(childPath(layer, childRel), { throwIfNoEntry: false });
        if (stat)
          entries.push({ name: dirent.name, kind: "file", size: stat.size, mode: stat.mode & 0o7777 });
      } else {
        const found = view.lookupSync(childRel);
        if (found) entries.push(entryOf(dirent.name, found.stat));
      }
    }
  }
  return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export type ReadResult =
  | { ok: true; rel: string; resolved: string; bytes: Buffer; truncated: boolean }
  | { ok: false; rel: string; problem: string };

/**
 * Opens the regular file at `rel` (already resolved) without following a symlink and without
 * blocking on a FIFO; undefined when the view has no regular file there. The caller closes the
 * descriptor. Synchronous: the scan reads hundreds of small files, each quicker so than through
 * four thread-pool round trips.
 */
export function openRegular(fs: ImageFilesystem, rel: string): number | undefined {
  if (fs.stat(rel)?.kind !== "file") return undefined;
  const host = fs.hostPath(rel);
  if (!host) return undefined;
  const fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    return undefined;
  }
  return fd;
}

/** Up to `length` bytes of `fd` from `position` (fewer at the end of the file). */
export function readAt(fd: number, position: number | bigint, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let filled = 0;
  while (filled < length) {
    const bytesRead = readSync(fd, buffer, filled, length - filled, Number(position) + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}

/**
 * The file at `inside` (symlinks followed inside the root), at most `limit` bytes of it: whole
 * (`truncated` false) or its head (`truncated` true, when `head` is asked for); a file larger than
 * `limit` without `head` is a problem to report, not something to read. undefined when absent.
 */
export async function readImageFile(
  fs: ImageFilesystem,
  inside: string,
  limit: number,
  options: { head?: boolean; resolved?: boolean } = {},
): Promise<ReadResult | undefined> {
  const asked = inside
    .split("/")
    .filter((c) => c !== "" && c !== ".")
    .join("/");
  let rel: string;
  try {
    rel = options.resolved ? inside : fs.resolve(inside);
  } catch (err) {
    return { ok: false, rel: asked, problem: (err as Error).message };
  }
  const entry = fs.stat(rel);
  if (!entry) return undefined;
  if (entry.kind !== "file") return { ok: false, rel: asked, problem: `not a regular file (${entry.kind})` };
  if (entry.size > limit && !options.head) {
    return {
      ok: false,
      rel: asked,
      problem: `skipped: ${entry.size} bytes, more than the limit of ${limit}`,
    };
  }
  let fd: number | undefined;
  try {
    fd = openRegular(fs, rel);
    if (fd === undefined) return { ok: false, rel: asked, problem: "not a regular file" };
    // One byte more than the limit: the file may have grown since the stat, and the limit holds all the same.
    const bytes = readAt(fd, 0, Math.min(entry.size, limit) + 1);
    const truncated = bytes.length > limit;
    if (truncated && !options.head)
      return { ok: false, rel: asked, problem: `skipped: more than the limit of ${limit} bytes` };
    return {
      ok: true,
      rel: asked,
      resolved: rel,
      bytes: bytes.subarray(0, Math.min(bytes.length, limit)),
      truncated,
    };
  } catch (err) {
    return {
      ok: false,
      rel: asked,
      problem: `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    };
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
