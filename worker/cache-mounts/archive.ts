/**
 * A cache mount's content as a tar stream and back: the form in which mounts travel (`tbuild cache
 * export|import`, and `mounts=true` in `--cache-to`/`--cache-from`).
 *
 * Packing is deterministic, as `tbuild import` packs a directory (oci/archive/rootfs.ts): entries
 * sorted byte-wise, depth first; numeric owners, permission bits with setuid/setgid/sticky, mtimes
 * in whole seconds; hard links as links, so an unchanged mount packs to the same bytes and a
 * registry already holding its blob is not sent it again. The mount's own directory is the first
 * entry (its owner and mode are part of the mount: `uid=1000`). A mount is mostly many small files
 * (package caches), so the tree is read with synchronous calls gathered into large chunks: a
 * round trip through the thread pool per call would cost more than the calls. The tar is
 * compressed in independent zstd frames, two at a time, while the tree is read (zstdFrames): the
 * tree's writer fills chunks of exactly one frame from a pool, each compressed as it is and filled
 * again once compressed.
 *
 * Unpacking reads untrusted input (an archive from a user, a registry any CI job writes to). It
 * writes only into a new directory of its own, renamed into place when complete: an entry whose
 * path is absolute or climbs with `..`, or that lies below anything but a directory this archive
 * made, is refused, as is a second entry at a path or a hard link to anything but a file it made;
 * files are created exclusively and never through a symbolic link. Entries are checked on this
 * thread, parsed synchronously chunk by chunk (TarPullParser: no promise per entry); the calls
 * that make them are made, in order, on a thread of their own (tree-calls.ts).
 */
import { randomBytes } from "node:crypto";
import {
  type BigIntStats,
  chmodSync,
  closeSync,
  constants,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  readSync,
  type Stats,
} from "node:fs";
import { rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createZstdCompress, createZstdDecompress, constants as zlib } from "node:zlib";
import { TbuildError } from "../../errors/index.js";
import { byBytes } from "../../oci/archive/byte-order.js";
import { deviceNumbers } from "../../oci/archive/rootfs.js";
import { encodeTarHeader, TAR_END, type TarEntry, writePlainUstarHeader } from "../../oci/archive/tar.js";
import {
  readTarEntries,
  sniffTarCompression,
  type TarEntryHead,
  TarPullParser,
} from "../../oci/archive/tar-reader.js";
import { entryComponents } from "../../oci/layer-entry.js";
import { makeSpecialFile } from "../unpack.js";
import { type TreeCall, TreeCallError, TreeCallQueue, treeCallPolicy } from "./tree-calls.js";

/** Bytes gathered before a chunk of the tar is handed on. */
const CHUNK_BYTES = 1 << 20;
/** Bytes the decompressor may hold beyond its reader: it works ahead (on another thread) meanwhile. */
const AHEAD_BYTES = 16 << 20;
/** Files at most this large are read whole, in one call. */
const WHOLE_FILE_BYTES = 512 * 1024;

/** An archive of cache mounts that cannot be read or written; the message says what and why. */
export class CacheMountArchiveError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_CACHE_MOUNT_ARCHIVE", message, cause === undefined ? {} : { cause });
  }
}

/** A device file's numbers, from an exact (bigint) lstat: a number as a float may lose bits. */
function deviceNumbersOf(file: string): { devmaj: number; devmin: number } {
  return deviceNumbers(lstatSafe(file, true).rdev);
}

/** What packTree and unpackTree count: the bytes of a tree as `directorySize` does, without walking it again. */
export interface TreeSize {
  /** Sizes of everything but directories, each file once however many hard links it has. */
  bytes: number;
}

/**
 * The tar entries of the directory `dir` under `prefix` (`""`: the directory is `./`; `"K/"`: it
 * is `K/` and its files `K/...`), without the end-of-archive blocks, so that several directories
 * can follow each other in one archive: written into `writer` when one is given (its caller
 * takes what is left and ends the archive), else into one of its own, whose chunks are all
 * yielded. `onSkip` hears of sockets, which a tar cannot hold; `size` counts what is packed.
 */
export async function* packTree(
  dir: string,
  prefix = "",
  onSkip?: (relative: string, reason: string) => void,
  size: TreeSize = { bytes: 0 },
  writer?: TreeTarWriter,
): AsyncGenerator<Buffer> {
  const out = writer ?? new TreeTarWriter();
  const hardLinks = new Map<string, string>();
  /** Inodes with several links already counted in `size`. */
  const counted = new Set<string>();
  const rootInfo = lstatSafe(dir);
  if (!rootInfo.isDirectory()) throw new CacheMountArchiveError(`${dir} is not a directory`);
  const stack: { dir: string; relative: string; names: string[]; at: number }[] = [];
  const enter = (absolute: string, relative: string) => {
    let names: string[];
    try {
      names = readdirSync(absolute).sort(byBytes);
    } catch (err) {
      throw unreadable(absolute, err);
    }
    stack.push({ dir: absolute, relative, names, at: 0 });
  };
  out.entry(entryOf(rootInfo, prefix === "" ? "./" : prefix, "Directory"));
  enter(dir.length > 1 ? dir.replace(/\/+$/, "") : dir, prefix);
  while (stack.length > 0) {
    if (out.full) yield* out.take();
    const top = stack[stack.length - 1]!;
    if (top.at >= top.names.length) {
      stack.pop();
      continue;
    }
    const name = top.names[top.at++]!;
    // A name from readdir has no "/" and is never "." or "..": no path.join, whose normalizing
    // of every path cost a tree of many small files more than its calls.
    const absolute = `${top.dir}/${name}`;
    const relative = top.relative + name;
    const st = lstatSafe(absolute);
    // An inode with several links is named by dev and ino as bigints: as numbers, two could meet.
    const key = st.nlink > 1 && !st.isDirectory() ? inodeKey(absolute) : undefined;
    if (!st.isDirectory() && (key === undefined || !counted.has(key))) {
      if (key !== undefined) counted.add(key);
      size.bytes += st.size;
    }
    if (st.isDirectory()) {
      out.entry(entryOf(st, `${relative}/`, "Directory"));
      enter(absolute, `${relative}/`);
    } else if (st.isFile()) {
      const linked = key !== undefined ? hardLinks.get(key) : undefined;
      if (linked !== undefined) {
        out.entry(entryOf(st, relative, "Link", linked));
        continue;
      }
      if (key !== undefined) hardLinks.set(key, relative);
      const entry = entryOf(st, relative, "File");
      entry.size = st.size;
      if (entry.size <= WHOLE_FILE_BYTES) out.file(entry, absolute);
      else yield* out.largeFile(entry, absolute);
    } else if (st.isSymbolicLink()) {
      let target: string;
      try {
        target = readlinkSync(absolute);
      } catch (err) {
        throw unreadable(absolute, err);
      }
      out.entry(entryOf(st, relative, "SymbolicLink", target));
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      const entry = entryOf(st, relative, st.isCharacterDevice() ? "CharacterDevice" : "BlockDevice");
      out.entry({ ...entry, ...deviceNumbersOf(absolute) });
    } else if (st.isFIFO()) {
      out.entry(entryOf(st, relative, "FIFO"));
    } else {
      onSkip?.(relative, "a socket cannot be stored in an archive");
    }
  }
  if (writer === undefined) yield* out.rest();
  else if (out.full) yield* out.take();
}

/** An entry as lstat describes it: numeric owners, permission bits (the header keeps whole seconds of the mtime). */
function entryOf(st: Stats, entryPath: string, type: TarEntry["type"], linkpath?: string): TarEntry {
  const entry: TarEntry = {
    path: entryPath,
    type,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    size: 0,
    mtime: new Date(Math.floor(st.mtimeMs)),
  };
  if (linkpath !== undefined) entry.linkpath = linkpath;
  return entry;
}

/** A whole archive of one directory: packTree and the end-of-archive blocks. */
export function packDirectoryTree(
  dir: string,
  onSkip?: (relative: string, reason: string) => void,
): Readable {
  return Readable.from(directoryTar(dir, onSkip), { objectMode: false });
}

async function* directoryTar(
  dir: string,
  onSkip?: (relative: string, reason: string) => void,
  pool?: ChunkPool,
): AsyncGenerator<Buffer> {
  const writer = new TreeTarWriter(pool);
  yield* packTree(dir, "", onSkip, undefined, writer);
  writer.bytes(TAR_END);
  yield* writer.rest();
}

/**
 * Buffers a TreeTarWriter fills, given back by its consumer once done with them, to be filled
 * again: fresh memory costs a page fault per page, and a garbage collection of the whole heap
 * every few dozen megabytes. Each holds `chunkBytes` and the writer's slack. Only a buffer the
 * pool made is taken back.
 */
export class ChunkPool {
  readonly chunkBytes: number;
  private readonly made = new WeakSet<ArrayBufferLike>();
  private readonly spare: Buffer[] = [];

  constructor(chunkBytes: number) {
    this.chunkBytes = chunkBytes;
  }

  /** A buffer to fill, out of the pool's hands until it is given back. */
  take(): Buffer {
    const chunk = this.spare.pop() ?? Buffer.allocUnsafeSlow(this.chunkBytes + SLACK_BYTES);
    this.made.add(chunk.buffer);
    return chunk;
  }

  /** Whether `chunk` is (a part of) a buffer of this pool, not yet given back. */
  owns(chunk: Buffer): boolean {
    return this.made.has(chunk.buffer);
  }

  /** `chunk` (or a part of one) is done with: nothing reads it again. A second giving back is ignored. */
  giveBack(chunk: Buffer): void {
    if (!this.made.delete(chunk.buffer) || this.spare.length >= SPARE_CHUNKS) return;
    this.spare.push(Buffer.from(chunk.buffer, 0, this.chunkBytes + SLACK_BYTES));
  }
}

/** Buffers a pool keeps to fill again. */
const SPARE_CHUNKS = 4;

/**
 * lstat, as numbers: exact for modes, owners, sizes and times, and without the bigints a tree of
 * many small files felt in garbage collection; `bigint` where every bit counts (inodes, devices).
 */
function lstatSafe(file: string): Stats;
function lstatSafe(file: string, bigint: true): BigIntStats;
function lstatSafe(file: string, bigint = false): Stats | BigIntStats {
  try {
    return bigint ? lstatSync(file, { bigint: true }) : lstatSync(file);
  } catch (err) {
    throw unreadable(file, err);
  }
}

/** The inode of `file`, exactly: a hard link's first path is found by it. */
function inodeKey(file: string): string {
  const st = lstatSafe(file, true);
  return `${st.dev}:${st.ino}`;
}

/** Room after a chunk's `chunkBytes` for what is written whole: a small file's header and content. */
const SLACK_BYTES = WHOLE_FILE_BYTES + (64 << 10);

/**
 * A tar written in chunks of exactly `chunkBytes` (the last shorter): a small file's content is
 * read straight into its chunk and a plain header written there, no buffer per entry and nothing
 * copied twice. A write that runs past `chunkBytes` goes into the slack beyond it, and the part
 * past the bound is carried to the start of the next chunk: a copy of at most one entry per
 * chunk. Chunks are new buffers (their consumer may hold on to them) or a pool's, whose size
 * then sets the chunks' (zstdFrames compresses each such chunk as it is, a frame).
 */
export class TreeTarWriter {
  private readonly pool: ChunkPool | undefined;
  private readonly chunkBytes: number;
  private chunk: Buffer;
  private at = 0;
  /** Chunks filled and not yet taken, in order. */
  private ready: Buffer[] = [];

  constructor(pool?: ChunkPool) {
    this.pool = pool;
    this.chunkBytes = pool?.chunkBytes ?? CHUNK_BYTES;
    this.chunk = this.fresh();
  }

  private fresh(): Buffer {
    return this.pool?.take() ?? Buffer.allocUnsafe(this.chunkBytes + SLACK_BYTES);
  }

  /** Whether chunks are filled and waiting to be taken. */
  get full(): boolean {
    return this.ready.length > 0;
  }

  /** The filled chunks, in order; they are the taker's now. */
  take(): Buffer[] {
    const ready = this.ready;
    this.ready = [];
    return ready;
  }

  /** Everything written: the filled chunks and what is gathered after them (the archive's end). */
  rest(): Buffer[] {
    const rest = this.take();
    if (this.at > 0) rest.push(this.chunk.subarray(0, this.at));
    this.chunk = this.fresh();
    this.at = 0;
    return rest;
  }

  /** `bytes`, copied on: a general header, an end of archive, a small file given in memory. */
  bytes(bytes: Uint8Array): void {
    let offset = 0;
    while (offset < bytes.length) {
      const n = Math.min(bytes.length - offset, this.chunk.length - this.at);
      this.chunk.set(n === bytes.length ? bytes : bytes.subarray(offset, offset + n), this.at);
      this.at += n;
      offset += n;
      this.settle();
    }
  }

  /** An entry's header: written in place when it is plain ustar, as it mostly is. */
  entry(entry: TarEntry): void {
    if (!writePlainUstarHeader(entry, this.chunk, this.at)) {
      this.bytes(encodeTarHeader(entry));
      return;
    }
    this.at += BLOCK;
    this.settle();
  }

  /** A file's entry whose content is in memory (exactly `entry.size` bytes), with its padding. */
  content(entry: TarEntry, content: Uint8Array): void {
    this.entry(entry);
    this.bytes(content);
    this.padding(content.length);
  }

  /**
   * A small file's entry (at most WHOLE_FILE_BYTES): its header, exactly `entry.size` bytes of
   * content read from `file` straight into the chunk, and padding. One byte more is asked for, so
   * a file that grew since its lstat is caught in the same read; a file that changed size is
   * refused rather than archived wrong.
   */
  file(entry: TarEntry, file: string): void {
    const fd = openForReading(file);
    try {
      this.entry(entry);
      // After settle, `at` is below chunkBytes: the slack holds the content, its padding and a byte.
      let read = 0;
      for (;;) {
        const n = readSync(fd, this.chunk, this.at + read, entry.size + 1 - read, null);
        if (n === 0) break;
        read += n;
        if (read > entry.size) throw changed(file);
      }
      if (read !== entry.size) throw changed(file);
    } finally {
      closeSync(fd);
    }
    this.at += entry.size;
    this.padding(entry.size);
  }

  /** A large file's entry, read in pieces into the chunks, which are yielded as they fill. */
  *largeFile(entry: TarEntry, file: string): Generator<Buffer> {
    const fd = openForReading(file);
    try {
      this.entry(entry);
      let left = entry.size;
      while (left > 0) {
        const n = readSync(fd, this.chunk, this.at, Math.min(this.chunkBytes - this.at, left), null);
        if (n === 0) throw changed(file);
        this.at += n;
        left -= n;
        this.settle();
        if (this.full) yield* this.take();
      }
      if (readSync(fd, Buffer.alloc(1), 0, 1, null) !== 0) throw changed(file);
    } finally {
      closeSync(fd);
    }
    this.padding(entry.size);
  }

  /** Zero bytes up to the next block after content of `size` bytes. */
  private padding(size: number): void {
    const rest = (BLOCK - (size % BLOCK)) % BLOCK;
    this.chunk.fill(0, this.at, this.at + rest);
    this.at += rest;
    this.settle();
  }

  /** A chunk filled to its bound is set aside, and what ran past the bound starts the next. */
  private settle(): void {
    while (this.at >= this.chunkBytes) {
      const next = this.fresh();
      const over = this.at - this.chunkBytes;
      if (over > 0) this.chunk.copy(next, 0, this.chunkBytes, this.at);
      this.ready.push(this.chunk.subarray(0, this.chunkBytes));
      this.chunk = next;
      this.at = over;
    }
  }
}

const BLOCK = 512;

function changed(file: string): CacheMountArchiveError {
  return new CacheMountArchiveError(
    `${file} changed while it was read (a build using the cache mount is running?); export again when it is done`,
  );
}

/** A file of the tree opened to be read, never through a symbolic link. */
function openForReading(file: string): number {
  try {
    return openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    throw unreadable(file, err);
  }
}

function unreadable(file: string, err: unknown): CacheMountArchiveError {
  const code = (err as NodeJS.ErrnoException)?.code ?? String(err);
  return new CacheMountArchiveError(`cannot read ${file} (${code})`, err);
}

/** Chunks of a tar, whatever its compression: gzip and zstd are recognized by their magic bytes. */
export async function* decompressedTar(
  source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
): AsyncGenerator<Buffer> {
  const { compression, chunks } = await sniffTarCompression(source);
  if (compression === "none") {
    yield* chunks;
    return;
  }
  const inflate =
    compression === "gzip"
      ? createGunzip({ chunkSize: CHUNK_BYTES })
      : createZstdDecompress({ chunkSize: CHUNK_BYTES, params: { [zlib.ZSTD_d_windowLogMax]: 27 } });
  const piping = pipeline(Readable.from(chunks), inflate);
  piping.catch(() => {});
  try {
    yield* chunksOf(inflate, piping);
  } finally {
    inflate.destroy();
  }
}

/**
 * The decompressor's chunks one by one, as it gives them, up to AHEAD_BYTES of them waiting: room
 * to decompress ahead while the tree is written, else each chunk waits for the last to be
 * written. Not its async iterator: that reads all that waits at once, joined into one new buffer,
 * a copy of the whole tar into fresh memory.
 */
async function* chunksOf(inflate: NodeJS.ReadableStream, piping: Promise<void>): AsyncGenerator<Buffer> {
  const waiting: Buffer[] = [];
  let bytes = 0;
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const woken = () => {
    wake?.();
    wake = undefined;
  };
  inflate.on("data", (chunk: Buffer) => {
    waiting.push(chunk);
    bytes += chunk.length;
    if (bytes >= AHEAD_BYTES) inflate.pause();
    woken();
  });
  inflate.on("end", () => {
    ended = true;
    woken();
  });
  piping.catch((err: unknown) => {
    failure ??= err;
    woken();
  });
  for (;;) {
    const chunk = waiting.shift();
    if (chunk !== undefined) {
      bytes -= chunk.length;
      if (bytes < AHEAD_BYTES && inflate.isPaused()) inflate.resume();
      yield chunk;
      continue;
    }
    if (failure !== undefined) throw failure;
    if (ended) return;
    await new Promise<void>((resolve) => (wake = resolve));
  }
}

export interface UnpackTreeOptions {
  /** In a user namespace: device nodes cannot be made there, and are skipped with a warning. */
  rootless: boolean;
  warn?(message: string): void;
  signal?: AbortSignal;
  /** Names the archive in errors. */
  what: string;
  /** Filled with the size (as TreeSize counts it) of what is unpacked under each top-level name. */
  sizes?: Map<string, number>;
  /**
   * Every file system call made, on this thread, none spared (tree-calls.ts): the plain path the
   * property tests hold the fast one to. Off: calls are made on a thread of their own.
   */
  plainly?: boolean;
}

/**
 * Unpacks a tar (plain, gzip or zstd) into `dest`, which must not exist: into a sibling temp
 * directory first, renamed to `dest` when complete. The archive's `./` entry, when there is one, is
 * `dest` itself. Refuses hostile entries (see the file's comment) with nothing left behind.
 */
export async function unpackTree(
  source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
  dest: string,
  options: UnpackTreeOptions,
): Promise<void> {
  const target = path.resolve(dest);
  const temp = path.join(
    path.dirname(target),
    `.tmp-${path.basename(target)}-${process.pid}-${randomBytes(6).toString("hex")}`,
  );
  mkdirSync(temp, { mode: 0o700 });
  // Without the setgid bit a parent may have passed on: files made below then get this process's group.
  chmodSync(temp, 0o700);
  const calls = new TreeCallQueue(treeCallPolicy(options.plainly !== true), options.plainly !== true);
  try {
    const tree = new TreeWriter(temp, calls, options);
    const reading = {
      what: options.what,
      onSkip: (entryPath: string, reason: string) => options.warn?.(`skipped ${entryPath}: ${reason}`),
    };
    if (options.plainly === true) await readEntries(decompressedTar(source), tree, reading, options.signal);
    else await pullEntries(decompressedTar(source), tree, reading, options.signal);
    options.signal?.throwIfAborted();
    await tree.finish();
    await calls.close();
    await rename(temp, target);
  } catch (err) {
    await calls.close();
    (source as { destroy?: () => void }).destroy?.();
    await rm(temp, { recursive: true, force: true }).catch(() => {});
    if ((err as NodeJS.ErrnoException).code === "ENAMETOOLONG") {
      throw new CacheMountArchiveError(`cannot unpack ${options.what}: a path in it is too long`, err);
    }
    throw err;
  }
}

type ReadingOptions = { what: string; onSkip: (entryPath: string, reason: string) => void };

/** The plain path: readTarEntries, a promise per entry and its body read as an async iterable. */
async function readEntries(
  tar: AsyncIterable<Buffer>,
  tree: TreeWriter,
  reading: ReadingOptions,
  signal: AbortSignal | undefined,
): Promise<void> {
  let count = 0;
  for await (const entry of readTarEntries(tar, reading)) {
    if ((++count & 255) === 0) signal?.throwIfAborted();
    const waiting = tree.apply(entry);
    if (waiting) await waiting;
    if (entry.type !== "File" || entry.size === 0) continue;
    for await (const chunk of entry.body) {
      const behind = tree.write(chunk);
      if (behind) await behind;
    }
  }
}

/**
 * The fast path: each decompressed chunk parsed synchronously (TarPullParser), entries and content
 * slices handed on as they come, an await only where the writer asks for one.
 */
async function pullEntries(
  tar: AsyncIterable<Buffer>,
  tree: TreeWriter,
  reading: ReadingOptions,
  signal: AbortSignal | undefined,
): Promise<void> {
  const parser = new TarPullParser(reading);
  let count = 0;
  for await (const chunk of tar) {
    parser.push(chunk);
    for (let item = parser.next(); item !== undefined; item = parser.next()) {
      if (item instanceof Uint8Array) {
        const behind = tree.write(item);
        if (behind) await behind;
        continue;
      }
      if ((++count & 255) === 0) signal?.throwIfAborted();
      const waiting = tree.apply(item);
      if (waiting) await waiting;
    }
  }
  parser.finish();
}

/**
 * Checks each entry against what the archive made before it and queues the calls that make it
 * (tree-calls.ts). Directories stay 0700 while the tree is made; their modes and times are set
 * last, deepest first.
 */
class TreeWriter {
  private readonly root: string;
  private readonly calls: TreeCallQueue;
  private readonly options: UnpackTreeOptions;
  /** Directories this archive made, by relative path ("" is the root). */
  private readonly dirs = new Map<string, { mode: number; atime: number; mtime: number }>([
    ["", { mode: 0o755, atime: 0, mtime: 0 }],
  ]);
  /** Everything else this archive made: true for regular files (what hard links may name). */
  private readonly others = new Map<string, boolean>();
  private skippedDevices = 0;
  private xattrs = 0;
  /** The file whose content is being written: bytes still to come, and its close. */
  private file: { left: number; close: Extract<TreeCall, { call: "close" }> } | undefined;

  constructor(root: string, calls: TreeCallQueue, options: UnpackTreeOptions) {
    this.root = root;
    this.calls = calls;
    this.options = options;
  }

  private refuse(entry: TarEntryHead, reason: string): never {
    throw new CacheMountArchiveError(
      `refused to unpack ${this.options.what}: its entry ${JSON.stringify(entry.path)} ${reason}; nothing of it was unpacked`,
    );
  }

  /** Adds the entry to its top-level name's size: hard links and directories take no room of their own. */
  private count(top: string, entry: TarEntryHead): void {
    const sizes = this.options.sizes;
    if (sizes === undefined || entry.type === "Directory" || entry.type === "Link") return;
    const bytes =
      entry.type === "File"
        ? entry.size
        : entry.type === "SymbolicLink"
          ? Buffer.byteLength(entry.linkpath)
          : 0;
    sizes.set(top, (sizes.get(top) ?? 0) + bytes);
  }

  /**
   * Checks the entry and queues its calls (a file's content follows by `write`); a promise only
   * when there is something to wait for (a special file, the thread behind): an await per entry
   * costs more than its calls.
   */
  apply(entry: TarEntryHead): Promise<void> | undefined {
    return this.guarded(() => this.make(entry));
  }

  /** Content of the file made last, in order; its close is queued with its last byte. */
  write(bytes: Buffer): Promise<void> | undefined {
    return this.guarded(() => {
      const file = this.file!;
      this.calls.write(bytes);
      file.left -= bytes.length;
      if (file.left === 0) this.close(file.close);
      return undefined;
    });
  }

  /** Runs `step`; a promise when it has one or the thread is behind; failed calls as the user should read them. */
  private guarded(step: () => Promise<void> | undefined): Promise<void> | undefined {
    try {
      const waiting = step() ?? (this.calls.behind ? this.calls.caughtUp() : undefined);
      return waiting?.catch((err: unknown) => {
        throw err instanceof TreeCallError ? this.failed(err) : err;
      });
    } catch (err) {
      throw err instanceof TreeCallError ? this.failed(err) : err;
    }
  }

  private close(call: Extract<TreeCall, { call: "close" }>): void {
    this.calls.queue(call);
    this.file = undefined;
  }

  /** A failed call as the user should read it: an owner the user namespace does not map says so. */
  private failed(err: TreeCallError): Error {
    const { call } = err;
    if (
      err.code === "EINVAL" &&
      (call.call === "lchown" || call.call === "close" || call.call === "symlink")
    ) {
      return new CacheMountArchiveError(
        `${call.name} in ${this.options.what} is owned by ${call.uid}:${call.gid}, which this user namespace does not map; give the user a larger subordinate range in /etc/subuid and /etc/subgid`,
        err,
      );
    }
    return err;
  }

  /**
   * The absolute path of checked components (entryComponents: no "", "." or ".."): what path.join
   * would give, without its normalizing, which an unpack of many small files felt.
   */
  private inside(rel: string): string {
    return `${this.root}/${rel}`;
  }

  private make(entry: TarEntryHead): Promise<void> | undefined {
    let parts: string[];
    try {
      parts = entryComponents(entry.path);
    } catch (err) {
      this.refuse(entry, (err as { reason?: string }).reason ?? (err as Error).message);
    }
    if (entry.xattrs.size > 0) this.xattrs++;
    const rel = parts.join("/");
    const atime = (entry.atime ?? entry.mtime).getTime();
    const mtime = entry.mtime.getTime();
    const owner = { uid: entry.uid, gid: entry.gid, name: entry.path };
    if (rel === "") {
      if (entry.type !== "Directory") this.refuse(entry, "is the archive's root but no directory");
      this.calls.queue({ call: "lchown", path: this.root, ...owner });
      this.dirs.set("", { mode: entry.mode & 0o7777, atime, mtime });
      return;
    }
    if (this.dirs.has(rel) || this.others.has(rel)) this.refuse(entry, "is there twice");
    // Every parent must be a directory this archive made (implied ones are made here).
    let parent = "";
    for (const part of parts.slice(0, -1)) {
      parent = parent === "" ? part : `${parent}/${part}`;
      if (this.dirs.has(parent)) continue;
      if (this.others.has(parent))
        this.refuse(entry, `lies below ${JSON.stringify(parent)}, which is no directory`);
      this.calls.queue({ call: "mkdir", path: this.inside(parent) });
      this.dirs.set(parent, { mode: 0o755, atime: 0, mtime: 0 });
    }
    const file = this.inside(rel);
    this.count(parts[0]!, entry);
    switch (entry.type) {
      case "Directory":
        this.calls.queue({ call: "mkdir", path: file });
        this.calls.queue({ call: "lchown", path: file, ...owner });
        this.dirs.set(rel, { mode: entry.mode & 0o7777, atime, mtime });
        return;
      case "File": {
        const mode = entry.mode & 0o7777;
        this.calls.queue({ call: "create", path: file, mode });
        this.others.set(rel, true);
        const close = { call: "close" as const, mode, atime, mtime, ...owner };
        if (entry.size === 0) this.close(close);
        else this.file = { left: entry.size, close };
        return;
      }
      case "SymbolicLink":
        this.calls.queue({
          call: "symlink",
          path: file,
          target: entry.linkpath,
          atime,
          mtime,
          ...owner,
        });
        this.others.set(rel, false);
        return;
      case "Link": {
        let target: string;
        try {
          target = entryComponents(entry.linkpath).join("/");
        } catch (err) {
          this.refuse(
            entry,
            `links to ${JSON.stringify(entry.linkpath)}: ${(err as { reason?: string }).reason ?? ""}`,
          );
        }
        if (this.others.get(target) !== true) {
          this.refuse(
            entry,
            `is a hard link to ${JSON.stringify(entry.linkpath)}, which is no file of the archive before it`,
          );
        }
        this.calls.queue({ call: "link", path: file, target: this.inside(target) });
        this.others.set(rel, true);
        return;
      }
      case "CharacterDevice":
      case "BlockDevice":
      case "FIFO":
        if (entry.type !== "FIFO" && this.options.rootless) {
          this.skippedDevices++;
          return;
        }
        this.others.set(rel, false);
        return this.makeSpecialFile(file, entry, entry.type, atime, mtime);
    }
  }

  /** A device or FIFO: rare, so made here, after everything queued before it. */
  private async makeSpecialFile(
    file: string,
    entry: TarEntryHead,
    type: "CharacterDevice" | "BlockDevice" | "FIFO",
    atime: number,
    mtime: number,
  ): Promise<void> {
    await this.calls.drain();
    await makeSpecialFile(file, type, entry.devmaj, entry.devmin);
    try {
      lchownSync(file, entry.uid, entry.gid);
    } catch (err) {
      const call: TreeCall = { call: "lchown", path: file, uid: entry.uid, gid: entry.gid, name: entry.path };
      throw this.failed(new TreeCallError(call, (err as NodeJS.ErrnoException).code, (err as Error).message));
    }
    chmodSync(file, entry.mode & 0o7777);
    lutimesSync(file, atime / 1000, mtime / 1000);
  }

  /** Directories' modes and times, deepest first (making their entries changed their times). */
  async finish(): Promise<void> {
    const dirs = [...this.dirs.keys()].sort((a, b) => b.length - a.length);
    try {
      for (const rel of dirs) {
        const { mode, atime, mtime } = this.dirs.get(rel)!;
        const file = rel === "" ? this.root : path.join(this.root, rel);
        this.calls.queue({ call: "settle", path: file, mode, atime, mtime });
      }
      await this.calls.drain();
    } catch (err) {
      throw err instanceof TreeCallError ? this.failed(err) : err;
    }
    if (this.skippedDevices > 0) {
      this.options.warn?.(
        `skipped ${this.skippedDevices} device file(s) of ${this.options.what}: a user namespace cannot make them`,
      );
    }
    if (this.xattrs > 0) {
      this.options.warn?.(
        `${this.xattrs} entr${this.xattrs === 1 ? "y" : "ies"} of ${this.options.what} carried extended attributes, which tbuild does not set yet`,
      );
    }
  }
}

/** Bytes of tar in each zstd frame: a frame is compressed on its own, so two can be at once. */
export const FRAME_BYTES = 8 << 20;
/** Frames being compressed (each on a thread of the pool) while the tree is read on this one. */
const FRAMES_AT_ONCE = 2;

/**
 * One frame of zstd: `input` compressed on the pool, as the pieces the compressor gave. zlib's
 * zstdCompress joins them into one new buffer, a copy into fresh memory that cost the export as
 * much as a fifth of its time; the pieces are written as they are.
 */
function zstdCompressFrame(input: Buffer): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const compressor = createZstdCompress({
      chunkSize: FRAME_BYTES + (FRAME_BYTES >> 6),
      params: { [zlib.ZSTD_c_compressionLevel]: 3 },
    });
    const pieces: Buffer[] = [];
    compressor.on("data", (piece: Buffer) => pieces.push(piece));
    compressor.on("error", reject);
    compressor.on("end", () => resolve(pieces));
    compressor.end(input);
  });
}

/**
 * `tar` zstd-compressed (level 3, zstd's default) in independent frames of FRAME_BYTES of tar
 * each, the last shorter: concatenated frames are one valid zstd stream (`zstd -d` and every
 * decompressor read them whole). The frames' bounds depend only on the tar's bytes, never on how
 * it arrived, so the same tree still gives the same bytes; and two frames are compressed on the
 * pool while the tree is read into the next, where one stream would leave a core idle. A chunk
 * of `pool` that is a whole frame where one begins (a TreeTarWriter's of that pool) is compressed as
 * it is and given back once compressed; any other chunk is copied into a frame (and a pool's
 * given back then).
 */
export async function* zstdFrames(tar: AsyncIterable<Buffer>, pool?: ChunkPool): AsyncGenerator<Buffer> {
  const compressing: { input: Buffer; output: Promise<Buffer[]> }[] = [];
  /** Frames' buffers compressed already, to fill again: fresh memory costs a page fault per page. */
  const spare: Buffer[] = [];
  let frame: Buffer = Buffer.allocUnsafe(FRAME_BYTES);
  let at = 0;
  const compress = (input: Buffer) => {
    const output = zstdCompressFrame(input);
    output.catch(() => {});
    compressing.push({ input, output });
  };
  const oldest = async () => {
    const { input, output } = compressing.shift()!;
    const compressed = await output;
    if (pool?.owns(input)) pool.giveBack(input);
    else spare.push(input);
    return compressed;
  };
  try {
    for await (const chunk of tar) {
      if (at === 0 && chunk.length === FRAME_BYTES && pool?.owns(chunk)) {
        if (compressing.length >= FRAMES_AT_ONCE) yield* await oldest();
        compress(chunk);
        continue;
      }
      let offset = 0;
      while (offset < chunk.length) {
        const n = chunk.copy(frame, at, offset);
        at += n;
        offset += n;
        if (at < FRAME_BYTES) continue;
        if (compressing.length >= FRAMES_AT_ONCE) yield* await oldest();
        compress(frame);
        frame = spare.pop() ?? Buffer.allocUnsafe(FRAME_BYTES);
        at = 0;
      }
      pool?.giveBack(chunk);
    }
    if (at > 0) compress(frame.subarray(0, at));
    while (compressing.length > 0) yield* await oldest();
  } finally {
    compressing.length = 0;
  }
}

/**
 * A mount's content as it travels alone (a blob of `--cache-to ...,mounts=true`): its archive,
 * zstd-compressed in frames. The same content gives the same bytes, so a blob already sent is not
 * sent again.
 */
export function packMountBlob(dir: string, onSkip?: (relative: string, reason: string) => void): Readable {
  const pool = new ChunkPool(FRAME_BYTES);
  return Readable.from(zstdFrames(directoryTar(dir, onSkip, pool), pool), { objectMode: false });
}

/** The media type of a cache mount blob. */
export const CACHE_MOUNT_MEDIA_TYPE = "application/vnd.tbuild.cache.mount.v1.tar+zstd";
