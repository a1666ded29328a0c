/** SHA-1 and SHA-256 of a file's bytes, as SPDX 2.3 files carry them (SHA-1 is the one it requires). */
import { createHash } from "node:crypto";
import { closeSync, readSync } from "node:fs";
import { type ImageFilesystem, openRegular } from "./filesystem.js";
import type { FileChecksums } from "./package.js";

export function checksumsOf(bytes: Uint8Array): FileChecksums {
  return {
    sha1: createHash("sha1").update(bytes).digest("hex"),
    sha256: createHash("sha256").update(bytes).digest("hex"),
  };
}

/** The checksums of an open file, read in chunks: a binary is never held whole in memory. */
export function checksumsOfFd(fd: number): FileChecksums {
  const sha1 = createHash("sha1");
  const sha256 = createHash("sha256");
  const chunk = Buffer.alloc(1 << 20);
  for (let position = 0; ; ) {
    const bytesRead = readSync(fd, chunk, 0, chunk.length, position);
    if (bytesRead === 0) break;
    sha1.update(chunk.subarray(0, bytesRead));
    sha256.update(chunk.subarray(0, bytesRead));
    position += bytesRead;
  }
  return { sha1: sha1.digest("hex"), sha256: sha256.digest("hex") };
}

/** The checksums of the regular file at `rel` (resolved) of `fs`, streamed; undefined when it is not one. */
export function checksumsOfFile(fs: ImageFilesystem, rel: string): FileChecksums | undefined {
  const fd = openRegular(fs, rel);
  if (fd === undefined) return undefined;
  try {
    return checksumsOfFd(fd);
  } finally {
    closeSync(fd);
  }
}
