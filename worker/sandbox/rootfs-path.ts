/**
 * Paths inside a container's root filesystem, seen from the host. An image is untrusted: its
 * `/etc/passwd` may be a symlink to `/etc/shadow`, and its `/etc` a symlink to `/`. Every path is
 * therefore resolved component by component, with symlinks followed as the container would follow
 * them (absolute targets and `..` stay inside the root), never by the host's own resolution.
 */
import { chown, lstat, mkdir, readdir, readlink, rm, stat, utimes } from "node:fs/promises";
import path from "node:path";
import { SandboxError } from "./errors.js";

/** Linux's own limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/**
 * The host path of `inside` (a path as the container sees it) under `root`. Components that do
 * not exist are appended as they are, so the result also names where a missing path would be.
 */
export async function resolveInRoot(root: string, inside: string): Promise<string> {
  const pending = inside.split("/").filter((c) => c !== "" && c !== ".");
  const resolved: string[] = [];
  let followed = 0;
  while (pending.length > 0) {
    const component = pending.shift() as string;
    if (component === "..") {
      resolved.pop();
      continue;
    }
    const candidate = path.join(root, ...resolved, component);
    let isLink = false;
    try {
      isLink = (await lstat(candidate)).isSymbolicLink();
    } catch (err) {
      if (!isMissing(err)) throw err;
    }
    if (!isLink) {
      resolved.push(component);
      continue;
    }
    if (++followed > MAX_SYMLINKS) {
      throw new SandboxError(
        "E_SANDBOX_PATH",
        `too many levels of symbolic links resolving ${inside} in the image`,
      );
    }
    const target = await readlink(candidate);
    if (target.startsWith("/")) resolved.length = 0;
    pending.unshift(...target.split("/").filter((c) => c !== "" && c !== "."));
  }
  return path.join(root, ...resolved);
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

  static async record(root: string, destinations: readonly string[]): Promise<MountStubs> {
    const result = new MountStubs();
    const seen = new Set<string>();
    for (const destination of destinations) {
      let current = await resolveInRoot(root, destination);
      let highestMissing: string | undefined;
      while (current !== root && current.startsWith(root + path.sep) && !(await exists(current))) {
        highestMissing = current;
        current = path.dirname(current);
      }
      if (!highestMissing || seen.has(highestMissing)) continue;
      seen.add(highestMissing);
      const parent = path.dirname(highestMissing);
      const times = await stat(parent);
      result.stubs.push({ path: highestMissing, parent, atime: times.atime, mtime: times.mtime });
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
  const target = await resolveInRoot(root, inside);
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
