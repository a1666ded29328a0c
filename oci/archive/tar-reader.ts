/**
 * Reading a tar stream entry by entry, pulled rather than pushed: the unpacker awaits each
 * entry's file system work before the next header is read, so entries are applied strictly in
 * order and a slow disk slows the download instead of filling memory. Header blocks are decoded by
 * the `tar` package's `Header`; PAX records (`x`, `g`) and GNU long names (`L`, `K`) are applied
 * here, because they must reach the entry they describe and nothing else.
 */
import { Header } from "tar";
import { TbuildError } from "../../errors/index.js";

const BLOCK = 512;

/** A tar stream that is not one, or that ends in the middle of an entry. */
export class InvalidTarError extends TbuildError {
  readonly reason: string;

  constructor(what: string, reason: string) {
    super("E_INVALID_LAYER", `${what} is not a valid tar archive: ${reason}`);
    this.reason = reason;
  }
}

/**
 * PAX records and GNU long names are read whole: a header claiming more than this is refused
 * rather than buffered (GNU tar and the `tar` package draw the line at about the same size).
 */
const MAX_META_BYTES = 1024 * 1024;

export type TarReadType =
  | "File"
  | "Link"
  | "SymbolicLink"
  | "CharacterDevice"
  | "BlockDevice"
  | "Directory"
  | "FIFO";

export interface TarReadEntry {
  /** As written in the archive (PAX and GNU long names applied), not yet normalized. */
  path: string;
  type: TarReadType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: Date;
  atime?: Date;
  linkpath: string;
  devmaj: number;
  devmin: number;
  /** Extended attributes from PAX `SCHILY.xattr.NAME` records: raw bytes (a capability set is binary). */
  xattrs: Map<string, Buffer>;
  /** The content (files only); entries left unread are skipped. */
  body: AsyncIterable<Buffer>;
  /**
   * The whole content, when it had arrived by the time the header was read (a small file): the
   * bytes `body` gives too, handed over without a round trip through it per file.
   */
  content?: Buffer;
}

/** Pulls exact byte counts out of an async iterable of chunks. */
class ByteReader {
  private buffer: Buffer = Buffer.alloc(0);
  private ended = false;
  private readonly iterator: AsyncIterator<Uint8Array>;
  private readonly what: string;

  constructor(source: AsyncIterable<Uint8Array>, what: string) {
    this.iterator = source[Symbol.asyncIterator]();
    this.what = what;
  }

  private async fill(n: number): Promise<void> {
    while (this.buffer.length < n && !this.ended) {
      const next = await this.iterator.next();
      if (next.done) {
        this.ended = true;
        break;
      }
      const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    }
  }

  /** Exactly `n` bytes, or fewer only at the end of the stream. */
  async take(n: number): Promise<Buffer> {
    await this.fill(n);
    return this.takeAtHand(n);
  }

  /** `n` bytes if they have arrived already (else undefined): no waiting, no round trip. */
  takeIfAtHand(n: number): Buffer | undefined {
    return this.buffer.length >= n ? this.takeAtHand(n) : undefined;
  }

  private takeAtHand(n: number): Buffer {
    const out = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(out.length);
    return out;
  }

  /** `n` bytes as they arrive, without gathering them. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buffer.length === 0) await this.fill(1);
      if (this.buffer.length === 0) throw new InvalidTarError(this.what, "it ends in the middle of a file");
      const chunk = this.buffer.subarray(0, Math.min(left, this.buffer.length));
      this.buffer = this.buffer.subarray(chunk.length);
      left -= chunk.length;
      yield chunk;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.chunks(n)) {
      // discarded
    }
  }

  /** Stops reading early: the source (a file, a download) is closed rather than left open. */
  async close(): Promise<void> {
    if (!this.ended) await this.iterator.return?.();
    this.ended = true;
  }

  /** Reads whatever follows the end of the archive, so that a hash over the stream covers all of it. */
  async drain(): Promise<void> {
    this.buffer = Buffer.alloc(0);
    while (!(await this.iterator.next()).done) {
      // discarded
    }
    this.ended = true;
  }
}

function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

/**
 * PAX records: `<length> <key>=<value>\n`, the length counting the whole record. Values stay bytes:
 * an extended attribute's value is binary, the rest is UTF-8.
 */
function parsePax(data: Buffer, into: Record<string, Buffer>, what: string): void {
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    if (space < 0) break;
    const length = Number.parseInt(data.subarray(offset, space).toString("ascii"), 10);
    if (!Number.isSafeInteger(length) || length <= space - offset || offset + length > data.length) {
      throw new InvalidTarError(what, "a PAX header record has a wrong length");
    }
    const record = data.subarray(space + 1, offset + length - 1);
    const equals = record.indexOf(0x3d);
    if (equals > 0)
      into[record.subarray(0, equals).toString("utf8")] = Buffer.from(record.subarray(equals + 1));
    offset += length;
  }
}

function paxText(pax: Record<string, Buffer>, key: string): string | undefined {
  return pax[key]?.toString("utf8");
}

function paxNumber(pax: Record<string, Buffer>, key: string): number | undefined {
  const value = paxText(pax, key);
  if (value === undefined) return undefined;
  const n = Number(value);
  return Number.isFinite(n) ? n : undefined;
}

function cString(data: Buffer): string {
  const nul = data.indexOf(0);
  return data.subarray(0, nul < 0 ? data.length : nul).toString("utf8");
}

/** What readTarEntries reads of a header block, as the `tar` package's `Header` decodes it. */
export type TarHeaderFields = Pick<
  Header,
  | "cksumValid"
  | "path"
  | "linkpath"
  | "type"
  | "mode"
  | "uid"
  | "gid"
  | "size"
  | "mtime"
  | "devmaj"
  | "devmin"
>;

/** The `tar` package's decoding of a header block: the plain path. */
export function decodeTarHeader(block: Buffer): TarHeaderFields {
  return quickUstarHeader(block) ?? new Header(block);
}

/** Type flags quickUstarHeader decodes, with the `tar` package's names ("\0" is an old regular file). */
const QUICK_TYPES = new Map<number, Header["type"]>(
  (
    [
      ["0", "File"],
      ["\0", "File"],
      ["1", "Link"],
      ["2", "SymbolicLink"],
      ["3", "CharacterDevice"],
      ["4", "BlockDevice"],
      ["5", "Directory"],
      ["6", "FIFO"],
      ["7", "ContiguousFile"],
      ["x", "ExtendedHeader"],
      ["g", "GlobalExtendedHeader"],
      ["L", "NextFileHasLongPath"],
      ["K", "NextFileHasLongLinkpath"],
    ] as const
  ).map(([code, name]) => [code.charCodeAt(0), name]),
);
const USTAR_MAGIC = Buffer.from("ustar\u000000");

/**
 * The fast path of decodeTarHeader for the headers tbuild and GNU tar write (POSIX ustar, octal
 * numbers, a type it knows): the same fields as the `tar` package's `Header`, without its
 * per-field strings and regular expressions, which took a tenth of an unpack of many small files.
 * Anything else (base-256 numbers, other magic, odd bytes in a number) is undefined: for Header.
 * A property test holds the two equal on random and mutated blocks.
 */
export function quickUstarHeader(block: Buffer): TarHeaderFields | undefined {
  const type = QUICK_TYPES.get(block[156]!);
  if (type === undefined || block.compare(USTAR_MAGIC, 0, 8, 257, 265) !== 0) return undefined;
  // Header reads atime and ctime there when no long prefix is: base-256 ones it may refuse.
  if (block[475] === 0 && (block[476]! & 0x80 || block[488]! & 0x80)) return undefined;
  const mode = octalField(block, 100, 8);
  const uid = octalField(block, 108, 8);
  const gid = octalField(block, 116, 8);
  const size = octalField(block, 124, 12);
  const mtime = octalField(block, 136, 12);
  const cksum = octalField(block, 148, 12);
  const devmaj = octalField(block, 329, 8);
  const devmin = octalField(block, 337, 8);
  if (
    mode === NOT_OCTAL ||
    uid === NOT_OCTAL ||
    gid === NOT_OCTAL ||
    size === NOT_OCTAL ||
    mtime === NOT_OCTAL ||
    cksum === NOT_OCTAL ||
    devmaj === NOT_OCTAL ||
    devmin === NOT_OCTAL
  )
    return undefined;
  const name = cField(block, 0, 100);
  const linkpath = cField(block, 157, 100);
  const prefix = block[475] !== 0 ? cField(block, 345, 155) : cField(block, 345, 130);
  if (name === undefined || linkpath === undefined || prefix === undefined) return undefined;
  const path = block[475] !== 0 || prefix !== "" ? `${prefix}/${name}` : name;
  let sum = 8 * 0x20;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < 512; i++) sum += block[i]!;
  // Header's reading of old archives: a file whose name (before any prefix) ends in "/" is a directory.
  const directory = type === "Directory" || ((block[156] === 0x30 || block[156] === 0) && name.endsWith("/"));
  return {
    cksumValid: sum === cksum,
    path,
    linkpath,
    type: directory ? "Directory" : type,
    mode,
    uid,
    gid,
    size: directory ? 0 : size,
    mtime: mtime === undefined ? undefined : new Date(mtime * 1000),
    devmaj: devmaj ?? 0,
    devmin: devmin ?? 0,
  };
}

const NOT_OCTAL = -1;

/** A header's size field as it is written (octal), for a header decoded as a directory's: size 0. */
function rawSize(block: Buffer, what: string): number {
  const size = octalField(block, 124, 12);
  if (size === NOT_OCTAL) throw new InvalidTarError(what, "a header's size cannot be read");
  return size ?? 0;
}

/**
 * A numeric field as Header reads it (up to its first NUL, leading spaces skipped, octal digits
 * up to the first other byte; none: undefined), or NOT_OCTAL when it holds any byte but octal
 * digits, spaces and NULs (base-256, other whitespace): Header's business.
 */
function octalField(block: Buffer, offset: number, length: number): number | undefined {
  let end = block.indexOf(0, offset);
  if (end < 0 || end > offset + length) end = offset + length;
  let at = offset;
  while (at < end && block[at] === 0x20) at++;
  let value: number | undefined;
  let digits = true;
  for (let i = at; i < end; i++) {
    const byte = block[i]!;
    if (byte >= 0x30 && byte <= 0x37) {
      if (digits) value = (value ?? 0) * 8 + (byte - 0x30);
    } else if (byte === 0x20) digits = false;
    else return NOT_OCTAL;
  }
  return value;
}

/**
 * A string field: its bytes up to the first NUL, as UTF-8; undefined when a line break follows
 * that NUL: Header cuts at the NUL with a regular expression that stops at a line break, and keeps
 * what follows it.
 */
function cField(block: Buffer, offset: number, length: number): string | undefined {
  const limit = offset + length;
  let end = block.indexOf(0, offset);
  if (end < 0 || end > limit) end = limit;
  for (let i = end; i < limit; i++) {
    const byte = block[i];
    if (byte === 0x0a || byte === 0x0d || byte === 0xe2) return undefined;
  }
  return block.toString("utf8", offset, end);
}

const ENTRY_TYPES: Record<string, TarReadType> = {
  File: "File",
  OldFile: "File",
  ContiguousFile: "File",
  Link: "Link",
  SymbolicLink: "SymbolicLink",
  CharacterDevice: "CharacterDevice",
  BlockDevice: "BlockDevice",
  Directory: "Directory",
  FIFO: "FIFO",
};

/** An entry as its header (and any PAX records or GNU long names before it) says: all but the content. */
export type TarEntryHead = Omit<TarReadEntry, "body" | "content">;

/** PAX records and GNU long names read so far, for the entry they come before. */
class TarHeaderState {
  globalPax: Record<string, Buffer> = {};
  pax: Record<string, Buffer> = {};
  longPath: string | undefined;
  longLink: string | undefined;
}

/**
 * What a header block asks of the reader: the archive ends; `bytes` of metadata (PAX, a long name)
 * to be read whole and given to `apply`; `bytes` to skip (an entry of a kind not supported); or an
 * entry, its `bodySize` bytes (content, then what else it claims) and padding to follow.
 */
type HeaderStep =
  | { kind: "end" }
  | { kind: "meta"; bytes: number; truncated: string; apply(data: Buffer): void }
  | { kind: "skip"; bytes: number }
  | { kind: "entry"; entry: TarEntryHead; bodySize: number };

/** Reads one header block against what came before it (`state`): readTarEntries and TarPullParser both. */
function readHeader(
  block: Buffer,
  state: TarHeaderState,
  what: string,
  onSkip: ((path: string, reason: string) => void) | undefined,
): HeaderStep {
  if (block[0] === 0 && block.every((b) => b === 0)) return { kind: "end" };
  let header: TarHeaderFields;
  try {
    header = decodeTarHeader(block);
  } catch (err) {
    // The `tar` package throws on numeric fields it cannot decode ("invalid base256 encoding").
    throw new InvalidTarError(what, `a header is malformed (${(err as Error).message})`);
  }
  if (!header.cksumValid) throw new InvalidTarError(what, "a header has a wrong checksum");
  const size = header.size ?? 0;
  const typeName = header.type;
  const isMeta =
    typeName === "ExtendedHeader" ||
    typeName === "GlobalExtendedHeader" ||
    typeName === "NextFileHasLongPath" ||
    typeName === "OldGnuLongPath" ||
    typeName === "NextFileHasLongLinkpath";
  if (isMeta && size > MAX_META_BYTES) {
    throw new InvalidTarError(what, `a ${typeName} header claims ${size} bytes (at most ${MAX_META_BYTES})`);
  }
  if (typeName === "ExtendedHeader" || typeName === "GlobalExtendedHeader") {
    return {
      kind: "meta",
      bytes: padded(size),
      truncated: "it ends in a PAX header",
      apply: (data) =>
        parsePax(data.subarray(0, size), typeName === "ExtendedHeader" ? state.pax : state.globalPax, what),
    };
  }
  if (isMeta) {
    return {
      kind: "meta",
      bytes: padded(size),
      truncated: "it ends in a GNU long name",
      apply: (data) => {
        if (typeName === "NextFileHasLongLinkpath") state.longLink = cString(data.subarray(0, size));
        else state.longPath = cString(data.subarray(0, size));
      },
    };
  }
  const fields = { ...state.globalPax, ...state.pax };
  const path = paxText(fields, "path") ?? state.longPath ?? header.path ?? "";
  // A name cut short to fit the header (the whole of it in a PAX record or a GNU long name, as
  // Python's tarfile writes it) may end in "/" where the cut fell, and a regular file's header
  // is then read as a directory's, without its size. What the whole name and the type flag say
  // is what the entry is, as Go's archive/tar (and so BuildKit) reads it.
  const cut = typeName === "Directory" && (block[156] === 0x30 || block[156] === 0) && path !== header.path;
  const entryType = cut && !path.endsWith("/") ? "File" : typeName;
  const entrySize = paxNumber(fields, "size") ?? (entryType !== typeName ? rawSize(block, what) : size);
  if (!Number.isSafeInteger(entrySize) || entrySize < 0) {
    throw new InvalidTarError(what, `the entry ${JSON.stringify(path)} has an invalid size ${entrySize}`);
  }
  state.pax = {};
  state.longPath = undefined;
  const linkpath = paxText(fields, "linkpath") ?? state.longLink ?? header.linkpath ?? "";
  state.longLink = undefined;
  const type = ENTRY_TYPES[entryType];
  // Only regular files carry content that belongs to the file; anything else with a size (a
  // GNU dump dir, a sparse file) is skipped whole.
  const bodySize =
    entryType === "Directory" || entryType === "Link" || entryType === "SymbolicLink" ? 0 : entrySize;
  if (type === undefined) {
    onSkip?.(path, `tar entries of type ${entryType} are not supported`);
    return { kind: "skip", bytes: padded(bodySize) };
  }
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of Object.entries(fields)) {
    const match = /^(?:SCHILY|LIBARCHIVE)\.xattr\.(.+)$/.exec(key);
    if (match) xattrs.set(match[1]!, value);
  }
  const mtimeSeconds = paxNumber(fields, "mtime");
  const atimeSeconds = paxNumber(fields, "atime");
  const entry: TarEntryHead = {
    path,
    type,
    mode: header.mode ?? 0,
    uid: paxNumber(fields, "uid") ?? header.uid ?? 0,
    gid: paxNumber(fields, "gid") ?? header.gid ?? 0,
    size: type === "File" ? bodySize : 0,
    mtime: mtimeSeconds !== undefined ? new Date(mtimeSeconds * 1000) : (header.mtime ?? new Date(0)),
    ...(atimeSeconds !== undefined ? { atime: new Date(atimeSeconds * 1000) } : {}),
    linkpath,
    devmaj: header.devmaj ?? 0,
    devmin: header.devmin ?? 0,
    xattrs,
  };
  return { kind: "entry", entry, bodySize };
}

/**
 * The entries of an uncompressed tar stream, in order. Each entry's body must be read (or left)
 * before asking for the next entry. Bytes after the end-of-archive blocks are read and discarded.
 * `what` names the stream in errors; entries of kinds a file system cannot hold (GNU dump dirs,
 * sparse files, volume labels) go to `onSkip`.
 */
export async function* readTarEntries(
  source: AsyncIterable<Uint8Array>,
  options: { what?: string; onSkip?: (path: string, reason: string) => void } = {},
): AsyncGenerator<TarReadEntry> {
  const what = options.what ?? "the layer";
  const reader = new ByteReader(source, what);
  const state = new TarHeaderState();
  try {
    for (;;) {
      const block = reader.takeIfAtHand(BLOCK) ?? (await reader.take(BLOCK));
      if (block.length === 0) break; // no end-of-archive blocks: tolerated, as GNU tar does
      if (block.length < BLOCK) throw new InvalidTarError(what, "it ends in the middle of a header");
      const step = readHeader(block, state, what, options.onSkip);
      if (step.kind === "end") {
        await reader.drain();
        break;
      }
      if (step.kind === "meta") {
        const data = await reader.take(step.bytes);
        if (data.length < step.bytes) throw new InvalidTarError(what, step.truncated);
        step.apply(data);
        continue;
      }
      if (step.kind === "skip") {
        await reader.skip(step.bytes);
        continue;
      }
      const { entry, bodySize } = step;
      const fileSize = entry.size;
      // A small file's content and padding have usually arrived with its header: taken at once.
      const atHand = reader.takeIfAtHand(padded(bodySize));
      const content = atHand === undefined || fileSize === 0 ? undefined : atHand.subarray(0, fileSize);
      let consumed = atHand === undefined ? 0 : padded(bodySize);
      const body =
        atHand === undefined
          ? (async function* () {
              for await (const chunk of reader.chunks(fileSize)) {
                consumed += chunk.length;
                yield chunk;
              }
            })()
          : (async function* () {
              if (content !== undefined) yield content;
            })();
      yield { ...entry, body, ...(content !== undefined ? { content } : {}) };
      await body.return(undefined);
      if (consumed < padded(bodySize)) await reader.skip(padded(bodySize) - consumed);
    }
  } finally {
    await reader.close();
  }
}

/**
 * readTarEntries without a promise per entry, for an unpack of many small files: chunks are
 * pushed in, and `next` gives, synchronously, each entry's head and then its content as slices of
 * the chunks, until it needs more. The same headers are read the same way (readHeader); a property
 * test holds the two equal on archives cut at random places.
 */
export class TarPullParser {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly state = new TarHeaderState();
  /** Content bytes of the current file still to come. */
  private content = 0;
  /** Bytes to pass over: padding, or a body that is no content. */
  private skipping = 0;
  /** Metadata (PAX records, a long name) waiting for its bytes. */
  private meta: Extract<HeaderStep, { kind: "meta" }> | undefined;
  private ended = false;
  private readonly what: string;
  private readonly onSkip: ((path: string, reason: string) => void) | undefined;

  constructor(options: { what?: string; onSkip?: (path: string, reason: string) => void } = {}) {
    this.what = options.what ?? "the layer";
    this.onSkip = options.onSkip;
  }

  /** Adds a chunk; its bytes are read by `next` (content slices refer to it). */
  push(chunk: Buffer): void {
    if (this.ended) return;
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
  }

  /** The next entry's head, or a slice of the current file's content; undefined: push more. */
  next(): TarEntryHead | Buffer | undefined {
    for (;;) {
      if (this.ended) {
        this.buffer = Buffer.alloc(0);
        return undefined;
      }
      if (this.content > 0) {
        if (this.buffer.length === 0) return undefined;
        const slice = this.take(Math.min(this.content, this.buffer.length));
        this.content -= slice.length;
        return slice;
      }
      if (this.skipping > 0) {
        const n = Math.min(this.skipping, this.buffer.length);
        this.take(n);
        this.skipping -= n;
        if (this.skipping > 0) return undefined;
        continue;
      }
      if (this.meta !== undefined) {
        if (this.buffer.length < this.meta.bytes) return undefined;
        const meta = this.meta;
        this.meta = undefined;
        meta.apply(this.take(meta.bytes));
        continue;
      }
      if (this.buffer.length < BLOCK) return undefined;
      const step = readHeader(this.take(BLOCK), this.state, this.what, this.onSkip);
      if (step.kind === "end") this.ended = true;
      else if (step.kind === "meta") this.meta = step;
      else if (step.kind === "skip") this.skipping = step.bytes;
      else {
        this.content = step.entry.size;
        this.skipping = padded(step.bodySize) - step.entry.size;
        return step.entry;
      }
    }
  }

  /** The stream ended: throws when it did so in the middle of an entry. */
  finish(): void {
    if (this.ended) return;
    if (this.meta !== undefined) throw new InvalidTarError(this.what, this.meta.truncated);
    if (this.content > 0 || this.skipping > 0)
      throw new InvalidTarError(this.what, "it ends in the middle of a file");
    // No end-of-archive blocks: tolerated, as GNU tar does.
    if (this.buffer.length > 0) throw new InvalidTarError(this.what, "it ends in the middle of a header");
  }

  private take(n: number): Buffer {
    const out = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(n);
    return out;
  }
}

/**
 * A tar stream's first bytes told apart: gzip and zstd by their magic bytes, anything else taken
 * as a plain tar; and all of its bytes again from the start, as they arrive.
 */
export async function sniffTarCompression(
  source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
): Promise<{ compression: "gzip" | "zstd" | "none"; chunks: AsyncGenerator<Buffer> }> {
  const iterator = (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  while (head.length < 4) {
    const next = await iterator.next();
    if (next.done) break;
    head = Buffer.concat([head, Buffer.from(next.value)]);
  }
  async function* all(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    }
  }
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  const zstd = head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd;
  return { compression: gzip ? "gzip" : zstd ? "zstd" : "none", chunks: all() };
}
