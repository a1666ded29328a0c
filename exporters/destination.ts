/**
 * Where exported bytes land: a regular file (or a new path), written through a temp file beside it
 * and renamed when complete (a failed or interrupted export never leaves a truncated archive under
 * the asked name); standard output (`-`); or a stream that is already there — a device, a FIFO, a
 * pipe such as `/dev/stdout` or bash's `>(cmd)` (`/dev/fd/63`) — opened for writing in place, never
 * replaced, as `docker buildx build -o dest=` writes them. A terminal is refused either way.
 */

import { constants, createWriteStream } from "node:fs";
import { type FileHandle, open, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isatty } from "node:tty";
import { TbuildError, UsageError } from "../errors/index.js";
import { replaceFile } from "../oci/atomic-file.js";
import { releaseSpentBuffers } from "../oci/memory.js";

/**
 * The same bytes, each chunk counted as spent once passed on: V8 would otherwise let some 64 MB
 * of streamed chunks pile up before collecting them (see oci/memory.ts).
 */
export async function* releasingSpent<T extends Uint8Array>(
  bytes: AsyncIterable<T> | Iterable<T>,
): AsyncGenerator<T> {
  for await (const chunk of bytes) {
    yield chunk;
    releaseSpentBuffers(chunk.length);
  }
}

export interface DestinationOptions {
  signal?: AbortSignal;
  /** Where `-` writes; the process's standard output when absent. */
  stdout?: NodeJS.WritableStream;
  /** How the user names a file instead, for messages: `dest=FILE` when absent. */
  fileOption?: string;
}

/** Writes a byte stream to `dest` (a file path, or `-`); `what` names it in messages (e.g. "type=oci"). */
export async function writeBytesTo(
  bytes: AsyncIterable<Uint8Array>,
  dest: string,
  what: string,
  options: DestinationOptions,
): Promise<void> {
  const signalOption = options.signal ? { signal: options.signal } : {};
  if (dest === "-") {
    const stdout = options.stdout ?? process.stdout;
    if ((stdout as { isTTY?: boolean }).isTTY) {
      throw new UsageError(
        `${what} writes a tar archive: give ${options.fileOption ?? "dest=FILE"}, or redirect standard output`,
      );
    }
    // `end: false`: the command's standard output outlives this export.
    await pipeline(Readable.from(releasingSpent(bytes), { objectMode: false }), stdout, {
      ...signalOption,
      end: false,
    });
    return;
  }
  const existing = await stat(dest).catch(() => undefined);
  if (existing !== undefined && !existing.isFile()) {
    await writeInPlace(bytes, dest, what, existing, { ...signalOption, fileOption: options.fileOption });
    return;
  }
  // A symlink to a file is followed: the file is replaced, the link stays.
  const target = existing !== undefined ? await realpath(dest) : path.resolve(dest);
  try {
    await replaceFile(
      target,
      (temp) =>
        pipeline(
          Readable.from(releasingSpent(bytes), { objectMode: false }),
          createWriteStream(temp, { flags: "wx", highWaterMark: 1 << 20 }),
          signalOption,
        ),
      { durable: true },
    );
  } catch (err) {
    throw cannotWrite(err, dest, what);
  }
}

/**
 * A destination that is not a regular file: written as a stream, opened write-only without
 * creating or truncating it (a FIFO's open waits for its reader, as a shell's redirection does).
 */
async function writeInPlace(
  bytes: AsyncIterable<Uint8Array>,
  dest: string,
  what: string,
  existing: { isDirectory(): boolean; isSocket(): boolean },
  { fileOption = "dest=FILE", ...signalOption }: { signal?: AbortSignal; fileOption?: string | undefined },
): Promise<void> {
  if (existing.isDirectory()) {
    throw new TbuildError(
      "E_CANNOT_WRITE",
      `cannot write ${dest} (${what}): it is a directory; give a file name (type=local writes into a directory)`,
    );
  }
  if (existing.isSocket()) {
    throw new TbuildError(
      "E_CANNOT_WRITE",
      `cannot write ${dest} (${what}): it is a socket; give a file or a FIFO`,
    );
  }
  let handle: FileHandle;
  try {
    handle = await open(dest, constants.O_WRONLY | constants.O_NOCTTY);
  } catch (err) {
    throw cannotWrite(err, dest, what);
  }
  try {
    if (isatty(handle.fd)) {
      throw new UsageError(`${what} writes a tar archive, and ${dest} is a terminal: give ${fileOption}`);
    }
    await pipeline(
      Readable.from(releasingSpent(bytes), { objectMode: false }),
      handle.createWriteStream({ autoClose: false, highWaterMark: 1 << 20 }),
      signalOption,
    );
  } catch (err) {
    throw cannotWrite(err, dest, what);
  } finally {
    await handle.close().catch(() => {});
  }
}

/** A file system error while writing an export, as a message a user can act on; anything else unchanged. */
export function cannotWrite(err: unknown, dest: string, what: string): unknown {
  if (err instanceof TbuildError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new TbuildError(
      "E_DISK_FULL",
      `no space left on the device of ${dest} (${what}): the partial output was removed; free some space and run again`,
      { cause: err },
    );
  }
  if (code === "EPIPE") {
    return new TbuildError(
      "E_CANNOT_WRITE",
      `cannot write ${dest} (${what}): its reader closed it before the end of the archive`,
      { cause: err },
    );
  }
  if (
    code === "ENOENT" ||
    code === "ENXIO" ||
    code === "EACCES" ||
    code === "EPERM" ||
    code === "EROFS" ||
    code === "ENOTDIR" ||
    code === "EISDIR"
  ) {
    return new TbuildError("E_CANNOT_WRITE", `cannot write ${dest} (${what}): ${code}`, { cause: err });
  }
  return err;
}
