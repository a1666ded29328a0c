/**
 * A tar stream read entry by entry, pulled: the next header is read only once the caller is done
 * with the current entry (its body read, or left to be skipped), so layers are walked in order with
 * nothing buffered beyond one chunk. Header blocks are decoded by the `tar` package's `Header`;
 * PAX records (`x`, `g`) and GNU long names (`L`, `K`) are applied to the entry they precede.
 */
import { Header } from "tar";
import { TbuildError } from "../errors/index.js";

const BLOCK = 512;

/** A layer that is not a tar archive, or that ends in the middle of an entry. */
export class InvalidLayerTarError extends TbuildError {
  constructor(what: string, reason: string) {
    super("E_INVALID_LAYER", `${what} is not a valid tar archive: ${reason}`);
  }
}

export type TarEntryKind =
  | "File"
  | "Link"
  | "SymbolicLink"
  | "CharacterDevice"
  | "BlockDevice"
  | "Directory"
  | "FIFO";

export interface TarReadEntry {
  /** As the archive names it (PAX and GNU long names applied), not normalized. */
  path: string;
  type: TarEntryKind;
  mode: number;
  uid: number;
  gid: number;
  /** Content length: regular files only. */
  size: number;
  mtime: Date;
  linkpath: string;
  devmaj: number;
  devmin: number;
  /** Extended attributes from PAX `SCHILY.xattr.NAME` records: raw bytes (a capability set is binary). */
  xattrs: Map<string, Buffer>;
  /** The content (regular files); left unread, it is skipped. */
  body: AsyncIterable<Buffer>;
}

const KINDS: Record<string, TarEntryKind> = {
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

/** Exact byte counts out of an async iterable of chunks. */
class ByteReader {
  private buffer: Buffer = Buffer.alloc(0);
  private ended = false;
  private readonly iterator: AsyncIterator<Uint8Array>;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.iterator = source[Symbol.asyncIterator]();
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

  /** `n` bytes, fewer only at the end of the stream. */
  async take(n: number): Promise<Buffer> {
    await this.fill(n);
    const out = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(out.length);
    return out;
  }

  /** `n` bytes as they arrive; undefined at a premature end. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buffer.length === 0) await this.fill(1);
      if (this.buffer.length === 0) return;
      const chunk = this.buffer.subarray(0, Math.min(left, this.buffer.length));
      this.buffer = this.buffer.subarray(chunk.length);
      left -= chunk.length;
      yield chunk;
    }
  }

  /** Reads the rest, so that whatever hashes the stream sees all of it. */
  async drain(): Promise<void> {
    this.buffer = Buffer.alloc(0);
    while (!(await this.iterator.next()).done) {
      // discarded
    }
  }

  async close(): Promise<void> {
    await this.iterator.return?.();
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
      throw new InvalidLayerTarError(what, "a PAX record has a wrong length");
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

/**
 * The entries of an uncompressed tar, in order. `what` names the stream in errors. Entries of
 * kinds a filesystem cannot hold (GNU dump dirs, sparse files, volume labels) go to `onSkip`.
 */
export async function* readTarEntries(
  source: AsyncIterable<Uint8Array>,
  what: string,
  onSkip?: (path: string, reason: string) => void,
): AsyncGenerator<TarReadEntry> {
  const reader = new ByteReader(source);
  const globalPax: Record<string, Buffer> = {};
  let pax: Record<string, Buffer> = {};
  let longPath: string | undefined;
  let longLink: string | undefined;
  const takeWhole = async (size: number, inside: string) => {
    const data = await reader.take(padded(size));
    if (data.length < padded(size)) throw new InvalidLayerTarError(what, `it ends inside ${inside}`);
    return data.subarray(0, size);
  };
  try {
    for (;;) {
      const block = await reader.take(BLOCK);
      // No end-of-archive blocks: tolerated, as GNU tar tolerates it.
      if (block.length === 0) return;
      if (block.length < BLOCK) throw new InvalidLayerTarError(what, "it ends inside a header");
      if (block.every((b) => b === 0)) {
        await reader.drain();
        return;
      }
      const header = new Header(block);
      if (!header.cksumValid) throw new InvalidLayerTarError(what, "a header has a wrong checksum");
      const size = header.size ?? 0;
      const typeName = header.type;
      if (typeName === "ExtendedHeader" || typeName === "GlobalExtendedHeader") {
        parsePax(
          await takeWhole(size, "a PAX header"),
          typeName === "ExtendedHeader" ? pax : globalPax,
          what,
        );
        continue;
      }
      if (typeName === "NextFileHasLongPath" || typeName === "OldGnuLongPath") {
        longPath = cString(await takeWhole(size, "a GNU long name"));
        continue;
      }
      if (typeName === "NextFileHasLongLinkpath") {
        longLink = cString(await takeWhole(size, "a GNU long link name"));
        continue;
      }
      const fields = { ...globalPax, ...pax };
      pax = {};
      const path = paxText(fields, "path") ?? longPath ?? header.path ?? "";
      const linkpath = paxText(fields, "linkpath") ?? longLink ?? header.linkpath ?? "";
      longPath = undefined;
      longLink = undefined;
      const declared = paxNumber(fields, "size") ?? size;
      const kind = KINDS[typeName ?? ""];
      // Only regular files (and the odd kinds skipped whole) carry data.
      const dataSize = kind === undefined || kind === "File" ? declared : 0;
      if (kind === undefined) {
        onSkip?.(path, `tar entries of type ${typeName} are not supported`);
        await skip(reader, padded(dataSize), what);
        continue;
      }
      const xattrs = new Map<string, Buffer>();
      for (const [key, value] of Object.entries(fields)) {
        const match = /^(?:SCHILY|LIBARCHIVE)\.xattr\.(.+)$/.exec(key);
        if (match) xattrs.set(match[1]!, value);
      }
      const mtime = paxNumber(fields, "mtime");
      let consumed = 0;
      const body = (async function* () {
        for await (const chunk of reader.chunks(dataSize)) {
          consumed += chunk.length;
          yield chunk;
        }
        if (consumed < dataSize) throw new InvalidLayerTarError(what, `it ends inside ${path}`);
      })();
      yield {
        path,
        type: kind,
        mode: header.mode ?? 0,
        uid: paxNumber(fields, "uid") ?? header.uid ?? 0,
        gid: paxNumber(fields, "gid") ?? header.gid ?? 0,
        size: dataSize,
        mtime: mtime !== undefined ? new Date(mtime * 1000) : (header.mtime ?? new Date(0)),
        linkpath,
        devmaj: header.devmaj ?? 0,
        devmin: header.devmin ?? 0,
        xattrs,
        body,
      };
      await body.return(undefined);
      await skip(reader, padded(dataSize) - consumed, what);
    }
  } finally {
    await reader.close();
  }
}

async function skip(reader: ByteReader, n: number, what: string): Promise<void> {
  let skipped = 0;
  for await (const chunk of reader.chunks(n)) skipped += chunk.length;
  if (skipped < n) throw new InvalidLayerTarError(what, "it ends inside an entry");
}
