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
  const fast = plainUstarHeader(entry);
  if (fast) return fast;
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

const TYPE_FLAGS: Record<TarEntryType, number> = {
  File: 0x30,
  Link: 0x31,
  SymbolicLink: 0x32,
  CharacterDevice: 0x33,
  BlockDevice: 0x34,
  Directory: 0x35,
  FIFO: 0x36,
};
/** The largest numbers a ustar field of 8 and of 12 bytes holds as octal text. */
const MAX_OCTAL_8 = 0o7777777;
const MAX_OCTAL_12 = 0o77777777777;

function isPlainAscii(text: string, maxLength: number): boolean {
  if (text.length > maxLength) return false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 0 || code > 0x7f) return false;
  }
  return true;
}

/**
 * `value` as the `tar` package writes a number field: zero-padded octal, a space and a NUL; or,
 * when the digits fill all but the last byte, the digits and a NUL.
 */
function writeOctal(block: Buffer, offset: number, size: number, value: number): void {
  let digits = 1;
  for (let v = value; v >= 8; v = Math.floor(v / 8)) digits++;
  const width = digits === size - 1 ? size - 1 : size - 2;
  let v = value;
  for (let i = offset + width - 1; i >= offset; i--) {
    block[i] = 0x30 + (v % 8);
    v = Math.floor(v / 8);
  }
  if (width === size - 2) block[offset + size - 2] = 0x20;
  block[offset + size - 1] = 0;
}

/**
 * The header of an entry whose every field fits ustar as it is (a short ASCII path and link
 * target, small numbers): the bytes the `tar` package's Header writes for it, made directly. A
 * layer of many small files spends more time in that general encoder than in anything else of
 * the tar; anything else is left to it.
 */
function plainUstarHeader(entry: TarEntry): Buffer | undefined {
  const block = Buffer.alloc(BLOCK);
  return writePlainUstarHeader(entry, block, 0) ? block : undefined;
}

/**
 * plainUstarHeader written into `into` at `at` (BLOCK bytes there, whatever they held), for a
 * packer gathering many small entries into one buffer: no buffer per header. False, and nothing
 * written, when the entry needs the general encoder.
 */
export function writePlainUstarHeader(entry: TarEntry, into: Buffer, at: number): boolean {
  const seconds = Math.floor(entry.mtime.getTime() / 1000);
  const size = entry.type === "File" ? entry.size : 0;
  const mode = entry.mode & 0o7777;
  const numbers = [entry.uid, entry.gid, entry.devmaj ?? 0, entry.devmin ?? 0];
  if (
    !isPlainAscii(entry.path, 99) ||
    (entry.linkpath !== undefined && !isPlainAscii(entry.linkpath, 100)) ||
    !numbers.every((n) => Number.isInteger(n) && n >= 0 && n <= MAX_OCTAL_8) ||
    !Number.isInteger(size) ||
    size < 0 ||
    size > MAX_OCTAL_12 ||
    !(seconds >= 0 && seconds <= MAX_OCTAL_12)
  ) {
    return false;
  }
  const block = into.subarray(at, at + BLOCK);
  block.fill(0);
  block.write(entry.path, 0, 100, "ascii");
  writeOctal(block, 100, 8, mode);
  writeOctal(block, 108, 8, entry.uid);
  writeOctal(block, 116, 8, entry.gid);
  writeOctal(block, 124, 12, size);
  writeOctal(block, 136, 12, seconds);
  block[156] = TYPE_FLAGS[entry.type];
  if (entry.linkpath !== undefined) block.write(entry.linkpath, 157, 100, "ascii");
  block.write("ustar\u000000", 257, 8, "ascii");
  // Device numbers are written for every type (0 for all but devices), as the tar package does.
  writeOctal(block, 329, 8, entry.devmaj ?? 0);
  writeOctal(block, 337, 8, entry.devmaj !== undefined ? (entry.devmin ?? 0) : 0);
  // The checksum counts its own field as eight spaces.
  let sum = 8 * 0x20;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < BLOCK; i++) sum += block[i]!;
  writeOctal(block, 148, 8, sum);
  return true;
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

/** Bytes gathered before a chunk is handed on. */
const CHUNK_BYTES = 256 * 1024;

/**
 * Entries gathered into large chunks: a tar of many small entries then goes on as a few chunks
 * instead of three per entry, each of which would be a round trip through every async generator
 * and stream after it.
 */
export class TarChunker {
  /** Bytes gathered before a chunk is handed on. */
  private readonly chunkBytes: number;
  private parts: Buffer[] = [];
  private size = 0;
  /** Bytes of the tar before what is gathered now. */
  private before = 0;
  /** Where the content of the last file added starts in the tar. */
  contentOffset = 0;

  constructor(chunkBytes: number = CHUNK_BYTES) {
    this.chunkBytes = chunkBytes;
  }

  /** Adds an entry with its whole content (files); gives a chunk to pass on once enough gathered. */
  add(entry: TarEntry, content?: Uint8Array): Buffer | undefined {
    this.push(encodeTarHeader(entry));
    if (entry.type === "File") {
      const length = content?.length ?? 0;
      if (length !== entry.size) throw new TarSizeError(entry.path, entry.size, length);
      this.contentOffset = this.before + this.size;
      if (content) this.push(Buffer.from(content.buffer, content.byteOffset, content.length));
      this.push(tarPadding(entry.size));
    }
    return this.size >= this.chunkBytes ? this.flush() : undefined;
  }

  /** Counts bytes the tar got past the chunker (an entry streamed after a flush). */
  passed(bytes: number): void {
    this.before += bytes;
  }

  /** All that gathered (before an entry whose content is streamed, and at the end), if anything. */
  flush(): Buffer | undefined {
    if (this.size === 0) return undefined;
    const chunk = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.before += this.size;
    this.size = 0;
    return chunk;
  }

  private push(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.parts.push(bytes);
    this.size += bytes.length;
  }
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
