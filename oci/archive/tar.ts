/**
 * Writing tar streams entry by entry, with the `tar` package's header and PAX encoders. tbuild
 * writes archives (layers, OCI and docker archives) as async generators of buffers, so the bytes
 * flow into a hash, a compressor or a file without an archive ever being held in memory, and the
 * entries come out in exactly the order and with exactly the metadata given: deterministic.
 */
import { Header, Pax } from "tar";
import { TbuildError } from "../../errors/index.js";

export type TarEntryType =
  | "File"
  | "Directory"
  | "SymbolicLink"
  | "Link"
  | "CharacterDevice"
  | "BlockDevice"
  | "FIFO";

export interface TarEntry {
  /** Relative, `/`-separated; directories end with `/`. */
  path: string;
  type: TarEntryType;
  /** Permission bits with setuid/setgid/sticky (`0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Content length: files only, 0 for everything else. */
  size: number;
  /** Whole seconds are kept: sub-second times would make PAX records appear for some files only. */
  mtime: Date;
  /** Symbolic link target, or for `Link` the path of the entry it is a hard link to. */
  linkpath?: string;
  devmaj?: number;
  devmin?: number;
}

const BLOCK = 512;
/** Two zero blocks end a tar archive. */
export const TAR_END = Buffer.alloc(BLOCK * 2);

/** The header of an entry: a PAX extended header first when a field does not fit ustar (long paths, big sizes). */
export function encodeTarHeader(entry: TarEntry): Buffer {
  const mtime = new Date(Math.floor(entry.mtime.getTime() / 1000) * 1000);
  const data = {
    path: entry.path,
    type: entry.type,
    mode: entry.mode & 0o7777,
    uid: entry.uid,
    gid: entry.gid,
    size: entry.type === "File" ? entry.size : 0,
    mtime,
    ...(entry.linkpath !== undefined ? { linkpath: entry.linkpath } : {}),
    ...(entry.devmaj !== undefined ? { devmaj: entry.devmaj, devmin: entry.devmin ?? 0 } : {}),
  };
  const header = new Header(data);
  const needPax = header.encode();
  const block = header.block!;
  if (!needPax) return block;
  // Only what the entry is: never atime, ctime, dev or ino, which differ from copy to copy.
  const pax = new Pax({
    path: data.path,
    size: data.size,
    uid: data.uid,
    gid: data.gid,
    mtime,
    ...(data.linkpath !== undefined ? { linkpath: data.linkpath } : {}),
  }).encode();
  return Buffer.concat([pax, block]);
}

/** Zero bytes that round content up to the next block. */
export function tarPadding(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rest);
}

/** One entry, its content (which must be exactly `entry.size` bytes) and padding. */
export async function* tarEntry(
  entry: TarEntry,
  content?: Uint8Array | AsyncIterable<Uint8Array | string> | NodeJS.ReadableStream,
): AsyncGenerator<Buffer> {
  yield encodeTarHeader(entry);
  if (entry.type !== "File") return;
  let written = 0;
  if (content instanceof Uint8Array) {
    written = content.length;
    yield Buffer.from(content.buffer, content.byteOffset, content.length);
  } else if (content !== undefined) {
    for await (const chunk of content as AsyncIterable<Uint8Array | string>) {
      const bytes =
        typeof chunk === "string"
          ? Buffer.from(chunk)
          : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      written += bytes.length;
      // A source that grew would shift every later entry: stop before writing past the header's size.
      if (written > entry.size) break;
      yield bytes;
    }
  }
  if (written !== entry.size) {
    throw new TarSizeError(entry.path, entry.size, written);
  }
  yield tarPadding(entry.size);
}

/** Content that did not have the size its header announced (a file changed while it was read). */
export class TarSizeError extends TbuildError {
  constructor(path: string, expected: number, actual: number) {
    super(
      "E_FILE_CHANGED",
      `${path}: expected ${expected} bytes, ${actual > expected ? "got more" : `got ${actual}`} (did it change while it was read?)`,
    );
  }
}
