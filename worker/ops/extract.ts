/**
 * ADD of a local archive: a tar (plain, gzip, zstd, xz or bzip2, recognized by content, never by
 * name) is extracted into the destination directory, as Docker's `chrootarchive.Untar` does:
 * owners (unless `--chown` gives one), permission bits and mtimes from the archive; an existing
 * entry is replaced unless both are directories; absolute paths and symlinks in the archive are
 * resolved inside the destination, as if it were the root; an entry that would land outside it is
 * refused.
 */
import { spawn } from "node:child_process";
import { constants, createReadStream } from "node:fs";
import { chmod, lchown, link, lstat, lutimes, mkdir, open, rm, symlink } from "node:fs/promises";
import path from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createZstdDecompress } from "node:zlib";
import { Header } from "tar";
import { TbuildError } from "../../errors/index.js";
import { readTarEntries } from "../../oci/archive/tar-reader.js";
import { rootPath } from "../root-path.js";
import { makeSpecialFile } from "../unpack.js";
import { pathComponents } from "./glob.js";
import type { Owner } from "./owner.js";

type Compression = "gzip" | "zstd" | "xz" | "bzip2" | "none";

function compressionOf(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return "zstd";
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
  if (head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  return "none";
}

export class ArchiveError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_ADD_ARCHIVE", message, cause === undefined ? {} : { cause });
  }
}

/** The archive's plain tar bytes; xz and bzip2 go through the system's `xz` and `bzip2`, which Node lacks. */
function decompressed(file: string, compression: Compression, signal?: AbortSignal): Readable {
  const input = createReadStream(file, signal ? { signal } : {});
  if (compression === "none") return input;
  if (compression === "gzip" || compression === "zstd") {
    const decompress = compression === "gzip" ? createGunzip() : createZstdDecompress();
    pipeline(input, decompress).catch((err: unknown) => decompress.destroy(err as Error));
    return decompress;
  }
  const out = new PassThrough();
  const child = spawn(compression, ["-dc"], {
    stdio: ["pipe", "pipe", "pipe"],
    ...(signal ? { signal } : {}),
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  child.on("error", (err: NodeJS.ErrnoException) => {
    out.destroy(
      err.code === "ENOENT"
        ? new ArchiveError(
            `${path.basename(file)} is compressed with ${compression}, and the ${compression} program is not installed: install it (apt-get install ${compression === "xz" ? "xz-utils" : "bzip2"})`,
            err,
          )
        : err,
    );
  });
  child.on("close", (code) => {
    if (code !== 0 && code !== null)
      out.destroy(new ArchiveError(`${compression} -dc failed: ${stderr.trim()}`));
  });
  pipeline(input, child.stdin).catch(() => {});
  child.stdout.pipe(out);
  // A reader that stops early (the archive check reads one block) must not leave the
  // decompressor blocked on a full pipe.
  out.once("close", () => {
    if (child.exitCode === null) child.kill();
  });
  return out;
}

/** Whether `file` is a tar archive Docker's ADD would extract: its first header, once decompressed, is valid. */
export async function isTarArchive(file: string): Promise<boolean> {
  const handle = await open(file, "r");
  let head: Buffer;
  try {
    head = Buffer.alloc(6);
    const { bytesRead } = await handle.read(head, 0, 6, 0);
    head = head.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
  if (head.length === 0) return false;
  const compression = compressionOf(head);
  const stream = decompressed(file, compression);
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= 512) break;
    }
  } catch {
    return false; // Not really gzip (or xz, ...) after all: an ordinary file.
  } finally {
    stream.destroy();
  }
  const block = Buffer.concat(chunks);
  if (block.length < 512) return false;
  try {
    const header = new Header(block.subarray(0, 512));
    return header.cksumValid && !header.nullBlock;
  } catch {
    // A numeric field the `tar` package cannot decode ("invalid base256 encoding", as random
    // bytes often have): no header, so an ordinary file, as for Go's tar reader in BuildKit.
    return false;
  }
}

/**
 * Extracts the tar archive `file` into the directory `dest` (which exists). With `owner`
 * (`ADD --chown`), every entry gets that owner instead of the archive's, as Docker's ChownOpts do.
 */
export async function extractArchive(
  file: string,
  dest: string,
  options: { rootless: boolean; owner?: Owner; signal?: AbortSignal; warn(message: string): void },
): Promise<void> {
  const handle = await open(file, "r");
  const head = Buffer.alloc(6);
  try {
    await handle.read(head, 0, 6, 0);
  } finally {
    await handle.close();
  }
  const name = path.basename(file);
  const tar = decompressed(file, compressionOf(head), options.signal);
  // Directory times are set last: extracting into a directory changes its mtime.
  const directoryTimes: { target: string; mtime: Date; atime: Date }[] = [];
  try {
    for await (const entry of readTarEntries(tar, {
      onSkip: (p, reason) => options.warn(`${name}: ${p}: ${reason}`),
    })) {
      options.signal?.throwIfAborted();
      const components = safeComponents(entry.path, name);
      if (components.length === 0) continue; // the archive's root: dest itself
      const parent = rootPath(dest, components.slice(0, -1).join("/"));
      await mkdir(parent, { recursive: true, mode: 0o755 });
      const target = path.join(parent, components.at(-1)!);
      const existing = await lstat(target).catch(() => undefined);
      if (existing && !(existing.isDirectory() && entry.type === "Directory")) {
        await rm(target, { recursive: true, force: true });
      }
      switch (entry.type) {
        case "Directory":
          if (!existing?.isDirectory()) await mkdir(target, { mode: 0o700 });
          break;
        case "File": {
          const out = await open(
            target,
            constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
            0o600,
          );
          try {
            for await (const chunk of entry.body) await out.write(chunk);
          } finally {
            await out.close();
          }
          break;
        }
        case "SymbolicLink":
          await symlink(entry.linkpath, target);
          break;
        case "Link": {
          const linked = safeComponents(entry.linkpath, name);
          const source = rootPath(dest, linked.join("/"), { followFinal: false });
          await link(source, target).catch((err: unknown) => {
            throw new ArchiveError(
              `${name}: hard link ${entry.path} -> ${entry.linkpath}: ${(err as Error).message}`,
              err,
            );
          });
          break;
        }
        case "FIFO":
        case "CharacterDevice":
        case "BlockDevice":
          if (options.rootless && entry.type !== "FIFO") {
            options.warn(`${name}: ${entry.path}: device files cannot be created rootless; left out`);
            continue;
          }
          await makeSpecialFile(target, entry.type, entry.devmaj, entry.devmin);
          break;
      }
      if (entry.type === "Link") continue; // shares the metadata of what it links to
      await lchown(target, options.owner?.uid ?? entry.uid, options.owner?.gid ?? entry.gid);
      if (entry.type !== "SymbolicLink") await chmod(target, entry.mode & 0o7777);
      if (entry.type === "Directory") {
        directoryTimes.push({ target, mtime: entry.mtime, atime: entry.atime ?? entry.mtime });
      } else {
        await lutimes(target, entry.atime ?? entry.mtime, entry.mtime);
      }
    }
  } catch (err) {
    if (err instanceof TbuildError) throw err;
    throw new ArchiveError(`cannot extract ${name}: ${(err as Error).message}`, err);
  } finally {
    tar.destroy();
  }
  for (const { target, atime, mtime } of directoryTimes.reverse()) await lutimes(target, atime, mtime);
}

/** An entry's path as components below the destination; `..` that would climb out is refused. */
function safeComponents(entryPath: string, archive: string): string[] {
  const parts = entryPath.split("/").filter((c) => c !== "" && c !== ".");
  let depth = 0;
  for (const part of parts) {
    depth += part === ".." ? -1 : 1;
    if (depth < 0) {
      throw new ArchiveError(
        `${archive}: its entry ${JSON.stringify(entryPath)} points outside the destination; nothing more was extracted`,
      );
    }
  }
  return pathComponents(entryPath);
}
