/**
 * Kernel mounts through util-linux's `mount` and `umount` (Node has no mount(2)): an overlay of
 * unpacked layers, its unmount (retried while busy, lazily as a last resort so that nothing is
 * left in /proc/mounts), and whether a path is a mount point in this mount namespace.
 */
import { execFile } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { TbuildError } from "../../errors/index.js";

const run = promisify(execFile);

/** The kernel takes at most a page of mount options. */
const MAX_MOUNT_OPTIONS = 4000;

export class MountError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_MOUNT", message, cause === undefined ? {} : { cause });
  }
}

export interface OverlayPaths {
  /** Lowest first, relative to `cwd` (short, and free of the store's own path's characters). */
  lowers: string[];
  upper: string;
  work: string;
  cwd: string;
  /**
   * In a user namespace overlayfs can only use `user.overlay.*` xattrs (`userxattr`); as real
   * root it uses `trusted.overlay.*`. Either way redirects and metacopy stay off, so that every
   * changed file is whole in the upper directory and a renamed directory is copied, never
   * redirected: the differ reads the upper directory alone.
   */
  userxattr: boolean;
  /**
   * Nothing is synced to the upper directory's file system: not on unmount (which would otherwise
   * sync that whole file system), not on a process's fsync. For a build step's root, whose result
   * is kept as a layer blob the content store syncs; never for a container's.
   */
  volatile?: boolean;
}

export function overlayOptions(paths: OverlayPaths): string {
  for (const p of [...paths.lowers, paths.upper, paths.work]) {
    if (/[,:\\]/.test(p))
      throw new MountError(`cannot mount an overlay of ${p}: its path has a ',', ':' or '\\'`);
  }
  const lowerdir = [...paths.lowers].reverse().join(":");
  const flavour = paths.userxattr
    ? "userxattr,index=off,metacopy=off"
    : "index=off,redirect_dir=off,metacopy=off";
  return `lowerdir=${lowerdir},upperdir=${paths.upper},workdir=${paths.work},${flavour}${paths.volatile ? ",volatile" : ""}`;
}

/** Whether the options of an overlay over these layers fit in what the kernel accepts. */
export function overlayFits(paths: OverlayPaths): boolean {
  return overlayOptions(paths).length <= MAX_MOUNT_OPTIONS;
}

/** Whether this kernel's overlayfs takes `volatile` (5.10 and later); unknown until tried. */
let volatileWorks: boolean | undefined;

export async function mountOverlay(paths: OverlayPaths, target: string): Promise<void> {
  if (paths.volatile && volatileWorks !== false) {
    // A volatile overlay leaves incompat/volatile in its work directory and refuses to mount over
    // it again, since the upper directory may have lost writes to a crash. The same upper is only
    // mounted again by this process, after an unmount (a diff's remount): nothing was lost then.
    rmSync(path.resolve(paths.cwd, paths.work, "work", "incompat"), { recursive: true, force: true });
    try {
      await mountWith(overlayOptions(paths), paths.cwd, target);
      volatileWorks = true;
      return;
    } catch (err) {
      if (volatileWorks === true) throw err;
      volatileWorks = false; // An older kernel: mounted without it from now on.
    }
  }
  await mountWith(overlayOptions({ ...paths, volatile: false }), paths.cwd, target);
}

async function mountWith(options: string, cwd: string, target: string): Promise<void> {
  try {
    await run("mount", ["-t", "overlay", "overlay", "-o", options, target], { cwd });
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? (err as Error).message).trim();
    throw new MountError(`cannot mount an overlay at ${target}: ${stderr}`, err);
  }
}

/** `/proc/self/mountinfo` escapes space, tab, newline and backslash as octal. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

export async function isMountPoint(target: string): Promise<boolean> {
  // A /proc file, read at every release: synchronously, sparing a thread-pool round trip.
  const info = readFileSync("/proc/self/mountinfo", "utf8");
  for (const line of info.split("\n")) {
    const fields = line.split(" ");
    if (fields.length > 4 && unescapeMountPath(fields[4]!) === target) return true;
  }
  return false;
}

/** Unmounts every mount stacked at `target`; does nothing when there is none. */
export async function unmount(target: string): Promise<void> {
  for (let attempt = 0; await isMountPoint(target); attempt++) {
    try {
      // A process that has just exited may still pin the mount for a moment: retry, then detach.
      await run("umount", attempt < 20 ? [target] : ["--lazy", target]);
    } catch (err) {
      if (attempt >= 21) {
        const stderr = String((err as { stderr?: string }).stderr ?? (err as Error).message).trim();
        throw new MountError(`cannot unmount ${target}: ${stderr}`, err);
      }
      await sleep(50);
    }
  }
}
