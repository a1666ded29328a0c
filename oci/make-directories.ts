/**
 * `mkdir -p` for a directory a user named (an export's or a cache's destination). Node's recursive
 * mkdir loops for ever where the kernel answers ENOENT for a directory whose parent exists (any
 * new name under /proc); this makes the missing directories one at a time, top down, and fails
 * with the first error instead.
 */
import { lstat, mkdir } from "node:fs/promises";
import path from "node:path";

export async function makeDirectories(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let at = path.resolve(dir); ; at = path.dirname(at)) {
    const found = await lstat(at).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    });
    if (found || path.dirname(at) === at) break;
    missing.push(at);
  }
  for (const at of missing.reverse()) {
    await mkdir(at).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err; // made meanwhile by another process: as good
    });
  }
  // What is there now must be a directory (a file or a link to one is ENOTDIR here too).
  await mkdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "EEXIST") throw err;
  });
}
