/**
 * Paths inside a container's root filesystem, seen from the host. An image is untrusted: its
 * `/etc/passwd` may be a symlink to `/etc/shadow`, and its `/etc` a symlink to `/`. Every path is
 * therefore resolved component by component, with symlinks followed as the container would follow
 * them (absolute targets and `..` stay inside the root), never by the host's own resolution.
 *
 * A root filesystem is a directory, or, before runc mounts it, the stack of directories an
 * overlay will merge (a `RootTree` reads either).
 */
import { lstatSync, readlinkSync } from "node:fs";
import { chown, lstat, mkdir, readdir, rm, utimes } from "node:fs/promises";
import path from "node:path";
import { directoryTree, isMissing, type PathTree, resolveInTree, rootPath } from "../root-path.js";
import { LowerView } from "../snapshot/lower-view.js";

/** What the lookups before a run need of the entries of a root filesystem. */
interface TreeEntry {
  isSymbolicLink(): boolean;
  isDirectory(): boolean;
  atime: Date;
  mtime: Date;
}

/**
 * A root filesystem as the host sees it before the run: paths are relative to the root, `/`
 * separated, "" for the root itself. Its calls are synchronous: a path takes a few lstat calls,
 * each quicker than a thread-pool round trip.
 */
export interface RootTree extends PathTree {
  /** The entry at `rel`, undefined when there is none. */
  lstat(rel: string): TreeEntry | undefined;
  /** The host path that holds the entry at `rel` (to read it), undefined when there is none. */
  hostPath(rel: string): string | undefined;
  /** The host directory the run's changes land in, under the same relative paths. */
  changes: string;
}

/**
 * The root filesystem an overlay of `layers` (lowest first, the upper directory last) will show
 * once mounted, read from the layers themselves; changes land in `upper`.
 */
export function layeredTree(layers: readonly string[], upper: string): RootTree {
  const view = new LowerView(layers);
  const entry = (rel: string) => view.lookupSync(rel);
  return {
    lstat: (rel) => entry(rel)?.stat,
    readlink(rel) {
      const found = entry(rel);
      if (!found) throw Object.assign(new Error(`no such file: ${rel}`), { code: "ENOENT" });
      return readlinkSync(found.source);
    },
    hostPath: (rel) => entry(rel)?.source,
    changes: upper,
  };
}

function treeOf(root: string | RootTree): RootTree {
  return typeof root === "string" ? directoryTree(root) : root;
}

async function exists(hostPath: string): Promise<boolean> {
  try {
    await lstat(hostPath);
    return true;
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
}

/** A mount point runc will create because the image lacks it, and its parent's times to restore. */
interface MountStub {
  path: string;
  parent: string;
  atime: Date;
  mtime: Date;
}

/**
 * runc creates the mount points a config names (`/proc`, `/etc/hosts`, a volume's directory) when
 * the image lacks them, and they would end up in the step's layer. As BuildKit's
 * `MountStubsCleaner`, the highest missing component of each destination is recorded before the
 * run and removed after it if it is still empty, and its parent's times are put back.
 */
export class MountStubs {
  private readonly stubs: MountStub[] = [];

  /** `root`: the directory itself, or a tree whose changes land elsewhere (an overlay's upper). */
  static async record(root: string | RootTree, destinations: readonly string[]): Promise<MountStubs> {
    const tree = treeOf(root);
    const result = new MountStubs();
    const seen = new Set<string>();
    for (const destination of destinations) {
      let current = resolveInTree(tree, destination);
      let highestMissing: string | undefined;
      while (current !== "" && !tree.lstat(current)) {
        highestMissing = current;
        current = path.posix.dirname(current);
        if (current === ".") current = "";
      }
      if (highestMissing === undefined || seen.has(highestMissing)) continue;
      seen.add(highestMissing);
      const times = tree.lstat(current);
      if (!times) continue;
      result.stubs.push({
        path: path.join(tree.changes, highestMissing),
        parent: current === "" ? tree.changes : path.join(tree.changes, current),
        atime: times.atime,
        mtime: times.mtime,
      });
    }
    return result;
  }

  /** Removes each stub that holds nothing but empty mount points. Never throws for one stub. */
  async clean(): Promise<void> {
    for (const stub of [...this.stubs].reverse()) {
      try {
        if (!(await isEmptyStub(stub.path))) continue;
        await rm(stub.path, { recursive: true, force: true });
        await utimes(stub.parent, stub.atime, stub.mtime);
      } catch {
        // A stub that cannot be removed stays: an empty file or directory in the layer, never data lost.
      }
    }
  }
}

async function isEmptyStub(hostPath: string): Promise<boolean> {
  let info: Awaited<ReturnType<typeof lstat>>;
  try {
    info = await lstat(hostPath);
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
  if (info.isFile()) return info.size === 0;
  if (!info.isDirectory()) return false;
  for (const entry of await readdir(hostPath)) {
    if (!(await isEmptyStub(path.join(hostPath, entry)))) return false;
  }
  return true;
}

/** Creates a directory inside the root (for a working directory the image lacks), as `uid:gid`. */
export async function mkdirInRoot(root: string, inside: string, uid: number, gid: number): Promise<void> {
  const target = rootPath(root, inside);
  if (await exists(target)) return;
  const created = await mkdir(target, { recursive: true, mode: 0o755 });
  // Only the directories made here change owner, as BuildKit's MkdirAllAndChown.
  if (created) {
    let dir = target;
    while (dir.length >= created.length) {
      await chown(dir, uid, gid);
      dir = path.dirname(dir);
    }
  }
}

/**
 * Where runc would find a process's `command` (its argv[0]) in the root: as given when it holds a
 * `/`, else the first regular file with an execute bit of that name in `searchPath`'s absolute
 * directories (Go's exec.LookPath, which runc uses inside the container). Undefined: none there.
 */
export function lookPathInRoot(
  root: string | RootTree,
  command: string,
  searchPath: string,
): string | undefined {
  if (command.includes("/")) return command;
  const tree = treeOf(root);
  for (const dir of searchPath.split(":")) {
    if (!dir.startsWith("/")) continue;
    const inside = path.posix.join(dir, command);
    const hostPath = tree.hostPath(resolveInTree(tree, inside));
    if (hostPath === undefined) continue;
    try {
      const info = lstatSync(hostPath);
      if (info.isFile() && (info.mode & 0o111) !== 0) return inside;
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
  }
  return undefined;
}
