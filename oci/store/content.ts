/**
 * The content store: blobs addressed by digest under `<root>/blobs/<alg>/<hex>`, exactly as an OCI
 * image layout keeps them. A blob becomes visible only whole and verified: bytes stream through the
 * hash into a private file under `<root>/ingest/`, which is flushed to disk and renamed into place
 * only when digest and size match. A rename is atomic, so readers see either nothing or the whole
 * blob, and several processes writing the same blob each rename an identical file: all succeed.
 */
import { createHash, type Hash, randomBytes } from "node:crypto";
import {
  appendFileSync,
  createReadStream,
  createWriteStream,
  mkdirSync,
  statSync,
  unlinkSync,
} from "node:fs";
import { mkdir, open, readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../../errors/index.js";
import { syncPath } from "../atomic-file.js";
import { processRunning } from "./process-liveness.js";

/** The digest algorithms of the image spec, with the length of their hex encoding. */
const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
const DEFAULT_ALGORITHM = "sha256";
/** Large writes cost fewer system calls; a layer is never held whole either way. */
const WRITE_BUFFER_BYTES = 1 << 20;

/** Bytes that do not hash to the digest (or do not have the size) they were announced with. */
export class DigestMismatchError extends TbuildError {
  readonly expected: string | undefined;
  /** Undefined when the bytes ran past the expected size and were not read to the end. */
  readonly actual: string | undefined;

  constructor(
    expected: string | undefined,
    actual: string | undefined,
    options: { expectedSize?: number; actualSize?: number; what?: string } = {},
  ) {
    const { expectedSize, actualSize } = options;
    const what = options.what ?? "blob";
    const expectedText =
      (expected ?? `${expectedSize} bytes`) +
      (expected !== undefined && expectedSize !== undefined ? ` (${expectedSize} bytes)` : "");
    const actualText =
      actual === undefined
        ? `more than ${expectedSize} bytes`
        : actual + (actualSize !== undefined ? ` (${actualSize} bytes)` : "");
    super(
      "E_DIGEST_MISMATCH",
      `digest mismatch: expected ${expectedText}, got ${actualText}; the ${what} was not stored`,
    );
    this.expected = expected;
    this.actual = actual;
  }
}

/** A digest that is not `<algorithm>:<hex>` with an algorithm tbuild knows. */
export class InvalidDigestError extends TbuildError {
  constructor(digest: string) {
    super(
      "E_INVALID_DIGEST",
      `invalid digest ${JSON.stringify(digest.slice(0, 200))}: expected sha256:, sha384: or sha512: and lowercase hex`,
    );
  }
}

/** A blob the store was asked for and does not hold. */
export class BlobNotFoundError extends TbuildError {
  readonly digest: string;

  constructor(digest: string, root: string) {
    super("E_BLOB_UNKNOWN", `blob ${digest} is not in the store at ${root}`);
    this.digest = digest;
  }
}

/** The disk (or quota) filled up while writing into the store; nothing half-written was kept. */
export class DiskFullError extends TbuildError {
  constructor(root: string, cause: unknown) {
    super(
      "E_DISK_FULL",
      `no space left on the device of the store ${root}: nothing half-written was kept. The store is out of space: ` +
        "free some with `tbuild prune` (build cache) or `tbuild rmi` (images), or set TBUILD_ROOT to a larger disk, and run again",
      { cause },
    );
  }
}

export interface ExpectedBlob {
  digest?: string;
  size?: number;
}

export interface WrittenBlob {
  digest: string;
  size: number;
}

/** Splits and checks a digest; throws InvalidDigestError on anything a path could be abused with. */
export function parseDigest(digest: string): { algorithm: string; hex: string } {
  const colon = digest.indexOf(":");
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  const length = DIGEST_HEX_LENGTH[algorithm];
  if (colon < 0 || length === undefined || hex.length !== length || !/^[a-f0-9]+$/.test(hex)) {
    throw new InvalidDigestError(digest);
  }
  return { algorithm, hex };
}

/** `sha256:<hex>` of some bytes. */
export function digestOf(data: Uint8Array | string, algorithm = DEFAULT_ALGORITHM): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest("hex")}`;
}

function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

/** Hashes and counts what flows through; stops as soon as the count passes the expected size. */
class HashingCounter extends Transform {
  readonly hash: Hash;
  size = 0;
  private readonly expected: ExpectedBlob;

  constructor(algorithm: string, expected: ExpectedBlob) {
    super();
    this.hash = createHash(algorithm);
    this.expected = expected;
  }

  override _transform(chunk: Buffer | string, _encoding: BufferEncoding, callback: TransformCallback): void {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    this.size += bytes.length;
    if (this.expected.size !== undefined && this.size > this.expected.size) {
      // Reading on would only waste time and disk: the blob can no longer be the expected one.
      callback(
        new DigestMismatchError(this.expected.digest, undefined, { expectedSize: this.expected.size }),
      );
      return;
    }
    this.hash.update(bytes);
    callback(null, bytes);
  }
}

/**
 * Lease files this process must remove when it exits. Process-wide by nature: one file per pid,
 * however many ContentStore objects share it.
 */
const leaseFilesToRemove = new Set<string>();

function removeLeaseFilesAtExit(): void {
  for (const file of leaseFilesToRemove) {
    try {
      unlinkSync(file);
    } catch {
      // Already gone, or the store was removed: nothing to protect any more.
    }
  }
}

export class ContentStore {
  readonly root: string;
  private readonly blobsDir: string;
  readonly ingestDir: string;
  /**
   * `<root>/leases/<pid>`: the digests this process wrote or relies on, one per line. Another
   * process's garbage collector keeps them while this process lives, so a pull running beside
   * `tbuild rmi` never loses the blobs it has written but not yet named.
   */
  readonly leasesDir: string;
  private readonly leased = new Set<string>();

  constructor(root: string) {
    this.root = root;
    this.blobsDir = path.join(root, "blobs");
    this.ingestDir = path.join(root, "ingest");
    this.leasesDir = path.join(root, "leases");
  }

  blobPath(digest: string): string {
    const { algorithm, hex } = parseDigest(digest);
    return path.join(this.blobsDir, algorithm, hex);
  }

  /** A blob found here is also leased to this process (see `leasesDir`): a caller that skips writing it relies on it. */
  async has(digest: string): Promise<boolean> {
    parseDigest(digest);
    await this.lease(digest);
    return (await this.size(digest)) !== undefined;
  }

  async size(digest: string): Promise<number | undefined> {
    // One stat, asked for each layer of every cached step: synchronously.
    const found = statSync(this.blobPath(digest), { throwIfNoEntry: false });
    return found?.size;
  }

  /** A streaming read; a missing blob surfaces as BlobNotFoundError on the stream. */
  open(digest: string): NodeJS.ReadableStream {
    const file = this.blobPath(digest);
    const root = this.root;
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        yield* createReadStream(file, { highWaterMark: WRITE_BUFFER_BYTES });
      } catch (err) {
        throw isNotFound(err) ? new BlobNotFoundError(digest, root) : err;
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  /** The whole blob in memory: for manifests, configs and layers known to be small. */
  async readBytes(digest: string): Promise<Buffer> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (err) {
      if (isNotFound(err)) throw new BlobNotFoundError(digest, this.root);
      throw err;
    }
  }

  /** Reads and parses a JSON blob (a manifest, an index, a config). */
  async readJson<T>(digest: string): Promise<T> {
    const bytes = await this.readBytes(digest);
    try {
      return JSON.parse(bytes.toString("utf8")) as T;
    } catch (err) {
      throw new TbuildError("E_BAD_BLOB", `blob ${digest} in the store at ${this.root} is not JSON`, {
        cause: err,
      });
    }
  }

  /**
   * Streams bytes in, hashed as they flow, into a temp file in `<root>/ingest/`, flushed to disk and
   * renamed into place only when digest (and size, if given) match; a mismatch throws
   * DigestMismatchError and leaves nothing. Several processes writing the same blob at once all
   * succeed and one copy is stored. The signal aborts and cleans up.
   */
  async write(
    source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
    expected: ExpectedBlob = {},
    signal?: AbortSignal,
  ): Promise<WrittenBlob> {
    const algorithm =
      expected.digest !== undefined ? parseDigest(expected.digest).algorithm : DEFAULT_ALGORITHM;
    const temp = this.tempPath();
    const counter = new HashingCounter(algorithm, expected);
    try {
      await this.makeDirs(algorithm);
      // `flush` fsyncs before close, so the rename below never exposes a blob whose bytes a crash could lose.
      const file = createWriteStream(temp, { flags: "wx", flush: true, highWaterMark: WRITE_BUFFER_BYTES });
      await pipeline(source as AsyncIterable<Uint8Array>, counter, file, signal ? { signal } : {});
      const written = { digest: `${algorithm}:${counter.hash.digest("hex")}`, size: counter.size };
      this.check(expected, written);
      // Leased before it becomes visible, so no collector can see the blob without its lease.
      await this.lease(written.digest);
      await this.commit(temp, written.digest);
      return written;
    } catch (err) {
      await unlink(temp).catch(() => {});
      if (isDiskFull(err)) throw new DiskFullError(this.root, err);
      throw err;
    }
  }

  async writeBytes(data: Uint8Array, expected: ExpectedBlob = {}): Promise<WrittenBlob> {
    const algorithm =
      expected.digest !== undefined ? parseDigest(expected.digest).algorithm : DEFAULT_ALGORITHM;
    const written = { digest: digestOf(data, algorithm), size: data.length };
    this.check(expected, written);
    // Content-addressed: a blob already stored is these very bytes. has() leases it either way.
    if (await this.has(written.digest)) return written;
    const temp = this.tempPath();
    try {
      await this.makeDirs(algorithm);
      const handle = await open(temp, "wx");
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await this.commit(temp, written.digest);
      return written;
    } catch (err) {
      await unlink(temp).catch(() => {});
      if (isDiskFull(err)) throw new DiskFullError(this.root, err);
      throw err;
    }
  }

  /** Removes a blob; false when it was not there. Only the garbage collector should call this. */
  async delete(digest: string): Promise<boolean> {
    try {
      await unlink(this.blobPath(digest));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** Every stored blob's digest and size. */
  async *list(): AsyncGenerator<WrittenBlob> {
    let algorithms: string[];
    try {
      algorithms = await readdir(this.blobsDir);
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const algorithm of algorithms.sort()) {
      const length = DIGEST_HEX_LENGTH[algorithm];
      if (length === undefined) continue;
      const dir = path.join(this.blobsDir, algorithm);
      for (const hex of (await readdir(dir)).sort()) {
        if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) continue;
        const info = await stat(path.join(dir, hex)).catch(() => undefined);
        if (info?.isFile()) yield { digest: `${algorithm}:${hex}`, size: info.size };
      }
    }
  }

  /**
   * Removes ingest files left by processes that were killed mid-write: those whose writer (named in
   * the file name) is gone, and any older than a day (a writer on another host of a shared store).
   */
  async cleanIngest(): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.ingestDir);
    } catch (err) {
      if (isNotFound(err)) return 0;
      throw err;
    }
    let removed = 0;
    const dayAgo = Date.now() - 24 * 3600 * 1000;
    for (const name of names) {
      const pid = Number(name.split("-")[0]);
      const file = path.join(this.ingestDir, name);
      const info = await stat(file).catch(() => undefined);
      if (info === undefined) continue;
      if ((Number.isInteger(pid) && pid > 0 && !processRunning(pid)) || info.mtimeMs < dayAgo) {
        await unlink(file).catch(() => {});
        removed++;
      }
    }
    return removed;
  }

  /**
   * Records that this process relies on a blob until it exits. Appends are small and atomic; the
   * collector reads every live process's file after listing blobs (see ImageStore.collectGarbage).
   */
  async lease(digest: string): Promise<void> {
    if (this.leased.has(digest)) return;
    const file = path.join(this.leasesDir, String(process.pid));
    try {
      // A line appended to a small file: synchronously, sparing a thread-pool round trip or two
      // for each of the blobs a build touches.
      if (this.leased.size === 0) mkdirSync(this.leasesDir, { recursive: true });
      appendFileSync(file, `${digest}\n`);
    } catch (err) {
      // A store this process cannot write (mounted read-only, another user's) is one no write of
      // ours needs protecting in; reading it must still work.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EROFS" || code === "EACCES" || code === "EPERM") return;
      throw err;
    }
    this.leased.add(digest);
    if (leaseFilesToRemove.size === 0) process.once("exit", removeLeaseFilesAtExit);
    leaseFilesToRemove.add(file);
  }

  /**
   * The digests leased by other live processes. Lease files of processes that are gone are
   * removed; this process's own lease is not counted, since it is the one collecting.
   */
  async liveLeases(): Promise<Set<string>> {
    const digests = new Set<string>();
    let names: string[];
    try {
      names = await readdir(this.leasesDir);
    } catch (err) {
      if (isNotFound(err)) return digests;
      throw err;
    }
    for (const name of names) {
      const pid = Number(name);
      const file = path.join(this.leasesDir, name);
      if (!Number.isInteger(pid) || pid <= 0) continue;
      if (pid === process.pid) continue;
      if (!processRunning(pid)) {
        await unlink(file).catch(() => {});
        continue;
      }
      const text = await readFile(file, "utf8").catch(() => "");
      for (const line of text.split("\n")) if (line) digests.add(line);
    }
    return digests;
  }

  private check(expected: ExpectedBlob, written: WrittenBlob): void {
    const sizeWrong = expected.size !== undefined && expected.size !== written.size;
    if ((expected.digest !== undefined && expected.digest !== written.digest) || sizeWrong) {
      throw new DigestMismatchError(expected.digest, written.digest, {
        ...(expected.size !== undefined ? { expectedSize: expected.size } : {}),
        actualSize: written.size,
      });
    }
  }

  private async makeDirs(algorithm: string): Promise<void> {
    await mkdir(this.ingestDir, { recursive: true });
    await mkdir(path.join(this.blobsDir, algorithm), { recursive: true });
  }

  /** Unique per process and call; the pid lets cleanIngest tell abandoned files from live ones. */
  private tempPath(): string {
    return path.join(this.ingestDir, `${process.pid}-${randomBytes(8).toString("hex")}`);
  }

  private async commit(temp: string, digest: string): Promise<void> {
    const target = this.blobPath(digest);
    await rename(temp, target);
    await syncPath(path.dirname(target));
  }
}
