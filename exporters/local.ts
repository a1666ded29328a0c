/**
 * `type=local`: the final filesystem written into a directory. Entries come parents first (see
 * filesystem.ts), so every parent is a real directory made here before anything is written below
 * it: whatever stood in the way in the destination (a file, a symbolic link) is replaced, and no
 * write ever follows a link out of the destination. Directories are made owner-writable and get
 * their own mode, owner and times only at the end, deepest first, so a read-only directory can
 * still be filled. Owners are kept when running as root (an unprivileged user cannot give files
 * away). Device nodes, FIFOs and extended attributes cannot be made from Node: they are left out,
 * with a warning.
 */
import { createWriteStream } from "node:fs";
import {
  chmod,
  chown,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  rm,
  symlink,
  unlink,
  utimes,
} from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { UsageError } from "../errors/index.js";
import { makeDirectories } from "../oci/make-directories.js";
import { withAttestationFiles } from "./attestations.js";
import { cannotWrite, releasingSpent } from "./destination.js";
import type { Exporter } from "./exporter.js";
import { type FsEntry, flattenLayers } from "./filesystem.js";

export const localExporter: Exporter = async (job) => {
  const dest = job.request.dest;
  if (dest === undefined || dest === "-") {
    throw new UsageError("type=local writes a directory: give dest=DIRECTORY");
  }
  const entries = withAttestationFiles(
    flattenLayers(job.store.content, job.result.layers, job.flattenOptions()),
    job.attestations,
    job.warn,
  );
  try {
    await writeFilesystem(entries, dest, {
      ...(job.options.signal ? { signal: job.options.signal } : {}),
      warn: (message) => job.warn(message),
    });
  } catch (err) {
    throw cannotWrite(err, dest, "type=local");
  }
  return undefined;
};

export interface WriteFilesystemOptions {
  signal?: AbortSignal;
  warn?(message: string): void;
}

/** Writes filesystem entries under `dir` (made if missing); what `dir` held and the entries do not name stays. */
export async function writeFilesystem(
  entries: AsyncIterable<FsEntry>,
  dir: string,
  options: WriteFilesystemOptions = {},
): Promise<void> {
  const root = path.resolve(dir);
  await makeDirectories(root);
  const keepOwners = process.getuid?.() === 0;
  const directories: FsEntry[] = [];
  const leftOut = new Map<string, string[]>();
  const leaveOut = (reason: string, entryPath: string) => {
    const list = leftOut.get(reason) ?? [];
    list.push(entryPath);
    leftOut.set(reason, list);
  };

  for await (const entry of entries) {
    options.signal?.throwIfAborted();
    const target = path.join(root, entry.path);
    if (entry.xattrs.size > 0) leaveOut("extended attributes (Node cannot set them)", entry.path);
    switch (entry.type) {
      case "Directory": {
        const existing = await lstat(target).catch(() => undefined);
        if (existing?.isDirectory() === true) {
          // Kept, and made writable for now: its own mode comes back at the end.
          await chmod(target, (existing.mode & 0o7777) | 0o700);
        } else {
          if (existing !== undefined) await rm(target, { recursive: true, force: true });
          await mkdir(target, { mode: 0o700 });
        }
        directories.push(entry);
        break;
      }
      case "File":
        await removeExisting(target);
        await pipeline(
          releasingSpent(entry.body ?? []),
          createWriteStream(target, { flags: "wx", mode: 0o600, highWaterMark: 1 << 20 }),
          {
            ...(options.signal ? { signal: options.signal } : {}),
          },
        );
        if (keepOwners) await chown(target, entry.uid, entry.gid);
        // After chown, which clears setuid and setgid.
        await chmod(target, entry.mode);
        await utimes(target, entry.mtime, entry.mtime);
        break;
      case "Link":
        await removeExisting(target);
        await link(path.join(root, entry.linkpath!), target);
        break;
      case "SymbolicLink":
        await removeExisting(target);
        await symlink(entry.linkpath!, target);
        if (keepOwners) await lchown(target, entry.uid, entry.gid);
        await lutimes(target, entry.mtime, entry.mtime);
        break;
      case "CharacterDevice":
      case "BlockDevice":
        leaveOut("device nodes (Node cannot make them)", entry.path);
        break;
      case "FIFO":
        leaveOut("FIFOs (Node cannot make them)", entry.path);
        break;
    }
  }

  for (const entry of directories.reverse()) {
    const target = path.join(root, entry.path);
    if (keepOwners) await chown(target, entry.uid, entry.gid);
    await chmod(target, entry.mode);
    await utimes(target, entry.mtime, entry.mtime);
  }
  for (const [reason, paths] of leftOut) {
    const shown = paths
      .slice(0, 5)
      .map((p) => `/${p}`)
      .join(", ");
    const more = paths.length > 5 ? ` and ${paths.length - 5} more` : "";
    options.warn?.(`type=local left out ${reason}: ${shown}${more}`);
  }
}

/** Whatever is at `target` goes (a directory with all it holds): an entry replaces it, and never writes through it. */
async function removeExisting(target: string): Promise<void> {
  const existing = await lstat(target).catch(() => undefined);
  if (existing === undefined) return;
  if (existing.isDirectory()) await rm(target, { recursive: true, force: true });
  else await unlink(target);
}
