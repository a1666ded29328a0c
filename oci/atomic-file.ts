/**
 * Replacing a file whole or not at all: the new content is written to a temp file on the same file
 * system, then renamed over the file, so a reader (or a process killed midway) sees the old file or
 * the new one, never half of one. The one home of tbuild's temp-and-rename writes: the store's
 * index and records, caches, credentials, exports.
 *
 * `durable` adds what a power cut needs on top of a kill: the temp file reaches the disk before
 * the rename, and the directory (the rename itself) after it.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm } from "node:fs/promises";
import path from "node:path";

export interface AtomicFileOptions {
  /** Where the temp file is made; it must be on the file system of `file`. Default: beside it. */
  tempDir?: string;
  /** Flush the file and then its directory to the disk. */
  durable?: boolean;
  /** Make the file's directory (and `tempDir`) first when missing. */
  makeDirectory?: boolean;
  /** The new file's permission bits (before the umask); 0o666 by default, as writeFile. */
  mode?: number;
}

/**
 * Replaces `file` with what `write` writes to the temp path it is given (a stream, a copy). The
 * temp file is removed when `write` or the rename fails, and the error is thrown as it is.
 */
export async function replaceFile(
  file: string,
  write: (temp: string) => Promise<unknown>,
  options: AtomicFileOptions = {},
): Promise<void> {
  const dir = path.dirname(file);
  if (options.makeDirectory) {
    await mkdir(dir, { recursive: true });
    if (options.tempDir !== undefined) await mkdir(options.tempDir, { recursive: true });
  }
  const temp = path.join(
    options.tempDir ?? dir,
    `.${path.basename(file)}.${process.pid}-${randomBytes(6).toString("hex")}.tmp`,
  );
  try {
    await write(temp);
    if (options.durable) await syncPath(temp);
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => {});
    throw err;
  }
  if (options.durable) await syncPath(dir);
}

/** Replaces `file` with `data`, as replaceFile. */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  options: AtomicFileOptions = {},
): Promise<void> {
  await replaceFile(
    file,
    async (temp) => {
      const handle = await open(temp, "wx", options.mode ?? 0o666);
      try {
        await handle.writeFile(data);
      } finally {
        await handle.close();
      }
    },
    options,
  );
}

/** Flushes a file or a directory (its entries: a rename made in it) to the disk. */
export async function syncPath(file: string): Promise<void> {
  const handle = await open(file, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
