/**
 * The copying snapshotter, for where overlayfs cannot be mounted: the merged view of the layers is
 * copied into a plain directory (reflinks where the file system has them), with owners, permission
 * bits, mtimes, symbolic links, hard links (within a layer), FIFOs and devices (as real root). The
 * differ later finds the changes by ctime, so the copy ends by recording a ctime that no copied
 * entry exceeds and every later change will. The bottom of a deep stack of layers is flattened the
 * same way, into a directory whose files are links to the layers' (which are never written to).
 */
import { constants } from "node:fs";
import {
  chmod,
  copyFile,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  readlink,
  symlink,
  unlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { makeSpecialFile } from "../unpack.js";
import { LowerView } from "./lower-view.js";

export interface CopyOptions {
  rootless: boolean;
  /**
   * Regular files are hard links to the layers' own (a copy where a link cannot be made): for a
   * flattened stack, which like the layers it is made of is never written to; never for a root
   * filesystem a step writes to.
   */
  linkFiles?: boolean;
  warn?(message: string): void;
  signal?: AbortSignal;
}

/** Why a hard link could not be made where a copy can: too many links, another file system, not allowed. */
const LINK_REFUSALS = new Set(["EMLINK", "EXDEV", "EPERM"]);

/** Copies the merged view of `lowers` (lowest first) into the existing directory `dest`. */
export async function copyLayers(
  lowers: readonly string[],
  dest: string,
  options: CopyOptions,
): Promise<void> {
  const view = new LowerView(lowers);
  const hardLinks = new Map<string, string>();
  const skipped: string[] = [];

  async function copyDir(rel: string, target: string): Promise<void> {
    for (const [name, entry] of await view.list(rel)) {
      options.signal?.throwIfAborted();
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const to = path.join(target, name);
      const { stat } = entry;
      const uid = Number(stat.uid);
      const gid = Number(stat.gid);
      const mode = Number(stat.mode & 0o7777n);
      if (stat.isDirectory()) {
        await mkdir(to);
        await copyDir(childRel, to);
        await lchown(to, uid, gid);
        await chmod(to, mode);
        await lutimes(to, stat.atime, stat.mtime);
        continue;
      }
      if (stat.isFile() && options.linkFiles) {
        try {
          // The very file: its owner, mode and times are the layer's, and must not be set again.
          await link(entry.source, to);
          continue;
        } catch (err) {
          if (!LINK_REFUSALS.has((err as NodeJS.ErrnoException).code ?? "")) throw err;
        }
      }
      if (stat.isFile()) {
        const key = `${stat.dev}:${stat.ino}`;
        const first = stat.nlink > 1n ? hardLinks.get(key) : undefined;
        if (first !== undefined) {
          await link(first, to);
          continue;
        }
        if (stat.nlink > 1n) hardLinks.set(key, to);
        await copyFile(entry.source, to, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
      } else if (stat.isSymbolicLink()) {
        await symlink(await readlink(entry.source), to);
      } else if (stat.isFIFO()) {
        await makeSpecialFile(to, "FIFO");
      } else if (stat.isCharacterDevice() || stat.isBlockDevice()) {
        if (options.rootless) {
          skipped.push(childRel);
          continue;
        }
        const rdev = stat.rdev;
        const devmaj = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
        const devmin = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
        await makeSpecialFile(
          to,
          stat.isCharacterDevice() ? "CharacterDevice" : "BlockDevice",
          devmaj,
          devmin,
        );
      } else {
        continue; // a socket: no layer holds one
      }
      await lchown(to, uid, gid);
      if (!stat.isSymbolicLink()) await chmod(to, mode);
      await lutimes(to, stat.atime, stat.mtime);
    }
  }

  await copyDir("", dest);
  const root = await view.lookup("");
  if (root) {
    await lchown(dest, Number(root.stat.uid), Number(root.stat.gid));
    await chmod(dest, Number(root.stat.mode & 0o7777n));
    await lutimes(dest, root.stat.atime, root.stat.mtime);
  } else {
    await chmod(dest, 0o755);
  }
  if (skipped.length > 0) {
    options.warn?.(
      `skipped ${skipped.length} device node${skipped.length === 1 ? "" : "s"} (${skipped.slice(0, 3).join(", ")}): a user namespace cannot create devices`,
    );
  }
}

/**
 * A ctime (nanoseconds) that everything written so far in `dir`'s file system has not exceeded,
 * and that every later change will: file timestamps come from a coarse clock, so this waits until
 * that clock has ticked past the marker (a few milliseconds at most).
 */
export async function changeClockMark(dir: string): Promise<bigint> {
  const marker = path.join(dir, ".since");
  await writeFile(marker, "");
  const mark = (await lstat(marker, { bigint: true })).ctimeNs;
  const probe = path.join(dir, ".probe");
  for (;;) {
    await writeFile(probe, "");
    const now = (await lstat(probe, { bigint: true })).ctimeNs;
    await unlink(probe);
    if (now > mark) return mark;
    await sleep(1);
  }
}
