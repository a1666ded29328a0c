/**
 * The file system calls of an unpack, as data: unpackTree (archive.ts) checks each entry of an
 * untrusted archive on its own thread and hands the calls that entry needs, in batches, to a
 * thread that only makes them (tree-writer-thread.ts). Parsing and checking the archive then
 * overlaps the ~1 s of open/write/futimes/close calls of 20,000 small files, where on one thread
 * they followed each other. The calls are made in order; the first that fails stops the rest and
 * comes back as the unpack's error. Every decision about what may be written where is made before
 * a call is queued: this side only carries it out, inside the unpack's own new directory.
 *
 * Needless calls are spared (`spareNeedless`): no fchown when the file already has the owner
 * asked for, as one this process creates does (the unpack's directories carry no setgid bit while
 * it runs, so a new file's group is the process's), and no fchmod when open's mode and the umask
 * give the bits already (no setuid, setgid or sticky bit asked for). `plainly` (every call, on the
 * caller's thread) is what the property tests compare that with.
 */
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readFileSync,
  symlinkSync,
  utimesSync,
  writeSync,
} from "node:fs";
import { Worker } from "node:worker_threads";

/** One call; times are milliseconds since the epoch; `name` is the entry's path, for errors. */
export type TreeCall =
  | { call: "mkdir"; path: string }
  | { call: "lchown"; path: string; uid: number; gid: number; name: string }
  | { call: "create"; path: string; mode: number }
  | { call: "write"; at: number; length: number }
  | { call: "close"; uid: number; gid: number; mode: number; atime: number; mtime: number; name: string }
  | {
      call: "symlink";
      path: string;
      target: string;
      uid: number;
      gid: number;
      atime: number;
      mtime: number;
      name: string;
    }
  | { call: "link"; path: string; target: string }
  | { call: "settle"; path: string; mode: number; atime: number; mtime: number };

/**
 * Calls encoded in `calls` (its first `length` bytes), and the bytes their `write` calls take
 * (`at`, `length` index into `data`). Encoded, because cloning an object per call across threads
 * cost more than making the calls: each call is its kind's number, then its fields in
 * CALL_FIELDS's order, a string as its UTF-8 length (4 bytes) and bytes, a number as a double.
 */
export interface TreeCallBatch {
  calls: ArrayBuffer;
  length: number;
  data: ArrayBuffer;
}

const CALL_FIELDS = {
  mkdir: ["path"],
  lchown: ["path", "uid", "gid", "name"],
  create: ["path", "mode"],
  write: ["at", "length"],
  close: ["uid", "gid", "mode", "atime", "mtime", "name"],
  symlink: ["path", "target", "uid", "gid", "atime", "mtime", "name"],
  link: ["path", "target"],
  settle: ["path", "mode", "atime", "mtime"],
} as const satisfies Record<TreeCall["call"], readonly string[]>;
const CALL_KINDS = Object.keys(CALL_FIELDS) as TreeCall["call"][];
const CALL_NUMBERS = Object.fromEntries(CALL_KINDS.map((kind, i) => [kind, i])) as Record<
  TreeCall["call"],
  number
>;

/** Bytes a string takes encoded, at most: its length (4 bytes) and up to 3 bytes of UTF-8 per UTF-16 unit. */
function textBound(text: string): number {
  return 4 + 3 * text.length;
}

/** Bytes `call` may take encoded: an upper bound. */
function encodedBound(call: TreeCall): number {
  switch (call.call) {
    case "mkdir":
      return 1 + textBound(call.path);
    case "lchown":
      return 1 + textBound(call.path) + 16 + textBound(call.name);
    case "create":
      return 1 + textBound(call.path) + 8;
    case "write":
      return WRITE_CALL_BYTES;
    case "close":
      return 1 + 40 + textBound(call.name);
    case "symlink":
      return 1 + textBound(call.path) + textBound(call.target) + 32 + textBound(call.name);
    case "link":
      return 1 + textBound(call.path) + textBound(call.target);
    case "settle":
      return 1 + textBound(call.path) + 24;
  }
}

/** Bytes of an encoded `write` call. */
const WRITE_CALL_BYTES = 1 + 2 * 8;

/**
 * Encodes `call` at `at` (room checked by the caller), its fields in CALL_FIELDS's order, each
 * read by name (a loop over the names, reading each field of any kind, cost an unpack of many
 * files more than the copying of its bytes); the offset after it.
 */
function encodeCall(call: TreeCall, into: Buffer, at: number): number {
  if (call.call === "write") return encodeWrite(call.at, call.length, into, at);
  into[at++] = CALL_NUMBERS[call.call];
  switch (call.call) {
    case "mkdir":
      return encodeText(call.path, into, at);
    case "lchown":
      at = encodeText(call.path, into, at);
      at = into.writeDoubleLE(call.uid, at);
      at = into.writeDoubleLE(call.gid, at);
      return encodeText(call.name, into, at);
    case "create":
      at = encodeText(call.path, into, at);
      return into.writeDoubleLE(call.mode, at);
    case "close":
      at = into.writeDoubleLE(call.uid, at);
      at = into.writeDoubleLE(call.gid, at);
      at = into.writeDoubleLE(call.mode, at);
      at = into.writeDoubleLE(call.atime, at);
      at = into.writeDoubleLE(call.mtime, at);
      return encodeText(call.name, into, at);
    case "symlink":
      at = encodeText(call.path, into, at);
      at = encodeText(call.target, into, at);
      at = into.writeDoubleLE(call.uid, at);
      at = into.writeDoubleLE(call.gid, at);
      at = into.writeDoubleLE(call.atime, at);
      at = into.writeDoubleLE(call.mtime, at);
      return encodeText(call.name, into, at);
    case "link":
      at = encodeText(call.path, into, at);
      return encodeText(call.target, into, at);
    case "settle":
      at = encodeText(call.path, into, at);
      at = into.writeDoubleLE(call.mode, at);
      at = into.writeDoubleLE(call.atime, at);
      return into.writeDoubleLE(call.mtime, at);
  }
}

/** A `write` call of `length` bytes at `at` of the batch's data, encoded without an object for it. */
function encodeWrite(dataAt: number, length: number, into: Buffer, at: number): number {
  into[at++] = CALL_NUMBERS.write;
  at = into.writeDoubleLE(dataAt, at);
  return into.writeDoubleLE(length, at);
}

function encodeText(text: string, into: Buffer, at: number): number {
  const length = into.write(text, at + 4, "utf8");
  into.writeUInt32LE(length, at);
  return at + 4 + length;
}

/**
 * Reads a batch's encoded calls in order, each as its own shape of object (no generator, no
 * field looked up by name). A `name` (an entry's path, for errors) is read only `withNames`: a
 * call that failed is read again with it, and most never fail.
 */
class CallDecoder {
  private readonly from: Buffer;
  /** Where the call read last began. */
  start = 0;
  private at = 0;

  constructor(batch: TreeCallBatch) {
    this.from = Buffer.from(batch.calls, 0, batch.length);
  }

  get done(): boolean {
    return this.at >= this.from.length;
  }

  next(withNames = false): TreeCall {
    this.start = this.at;
    const kind = CALL_KINDS[this.from[this.at++]!]!;
    switch (kind) {
      case "mkdir":
        return { call: kind, path: this.text() };
      case "lchown":
        return {
          call: kind,
          path: this.text(),
          uid: this.number(),
          gid: this.number(),
          name: this.name(withNames),
        };
      case "create":
        return { call: kind, path: this.text(), mode: this.number() };
      case "write":
        return { call: kind, at: this.number(), length: this.number() };
      case "close":
        return {
          call: kind,
          uid: this.number(),
          gid: this.number(),
          mode: this.number(),
          atime: this.number(),
          mtime: this.number(),
          name: this.name(withNames),
        };
      case "symlink":
        return {
          call: kind,
          path: this.text(),
          target: this.text(),
          uid: this.number(),
          gid: this.number(),
          atime: this.number(),
          mtime: this.number(),
          name: this.name(withNames),
        };
      case "link":
        return { call: kind, path: this.text(), target: this.text() };
      case "settle":
        return {
          call: kind,
          path: this.text(),
          mode: this.number(),
          atime: this.number(),
          mtime: this.number(),
        };
    }
  }

  /** The call read last, again, with its name. */
  again(): TreeCall {
    this.at = this.start;
    return this.next(true);
  }

  private text(): string {
    const length = this.from.readUInt32LE(this.at);
    const text = this.from.toString("utf8", this.at + 4, this.at + 4 + length);
    this.at += 4 + length;
    return text;
  }

  private name(read: boolean): string {
    if (read) return this.text();
    this.at += 4 + this.from.readUInt32LE(this.at);
    return "";
  }

  private number(): number {
    const value = this.from.readDoubleLE(this.at);
    this.at += 8;
    return value;
  }
}

/** How the calls are made: whether needless ones are spared, and what sparing them relies on. */
export interface TreeCallPolicy {
  spareNeedless: boolean;
  uid: number;
  gid: number;
  /** The process's umask, from /proc/self/status; undefined: unknown, and fchmod is never spared. */
  umask: number | undefined;
}

/** The policy of this process: the umask is read, never set (setting it would race other threads). */
export function treeCallPolicy(spareNeedless: boolean): TreeCallPolicy {
  let umask: number | undefined;
  try {
    const match = /^Umask:\s*([0-7]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (match) umask = Number.parseInt(match[1]!, 8);
  } catch {
    // No /proc: every mode is set with fchmod.
  }
  return { spareNeedless, uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1, umask };
}

/** A call that failed, as it crosses back: the error's code and message, and the call. */
export interface FailedTreeCall {
  call: TreeCall;
  code: string | undefined;
  message: string;
}

/** The thread's answer to a batch: the failed call, if one did, and the batch's buffers back. */
export interface TreeCallReply {
  failed: FailedTreeCall | undefined;
  batch: TreeCallBatch;
}

/** Makes the calls of batches in order; holds the file being written between its calls. */
export class TreeCallMaker {
  private fd: number | undefined;
  private readonly policy: TreeCallPolicy;

  constructor(policy: TreeCallPolicy) {
    this.policy = policy;
  }

  /** Makes the batch's calls; the first failure is returned, and nothing after it is made. */
  make(batch: TreeCallBatch): FailedTreeCall | undefined {
    const data = new Uint8Array(batch.data);
    const calls = new CallDecoder(batch);
    while (!calls.done) {
      try {
        this.one(calls.next(), data);
      } catch (err) {
        this.abandon();
        const e = err as NodeJS.ErrnoException;
        return { call: calls.again(), code: e.code, message: e.message };
      }
    }
    return undefined;
  }

  /** Closes the file being written, if any (the unpack failed). */
  abandon(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private one(call: TreeCall, data: Uint8Array): void {
    const { spareNeedless, uid, gid, umask } = this.policy;
    switch (call.call) {
      case "mkdir":
        mkdirSync(call.path, { mode: 0o700 });
        return;
      case "lchown":
        lchownSync(call.path, call.uid, call.gid);
        return;
      case "create":
        this.fd = openSync(
          call.path,
          constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
          spareNeedless ? call.mode & 0o777 : 0o600,
        );
        return;
      case "write": {
        let offset = call.at;
        const end = call.at + call.length;
        while (offset < end) offset += writeSync(this.fd!, data, offset, end - offset);
        return;
      }
      case "close": {
        const fd = this.fd!;
        this.fd = undefined;
        try {
          const owned = spareNeedless && call.uid === uid && call.gid === gid;
          if (!owned) fchownSync(fd, call.uid, call.gid);
          // After fchown, which clears setuid and setgid bits.
          const given =
            spareNeedless && umask !== undefined && (call.mode & 0o7000) === 0 && (call.mode & umask) === 0;
          if (!given) fchmodSync(fd, call.mode);
          futimesSync(fd, call.atime / 1000, call.mtime / 1000);
        } finally {
          closeSync(fd);
        }
        return;
      }
      case "symlink":
        symlinkSync(call.target, call.path);
        lchownSync(call.path, call.uid, call.gid);
        lutimesSync(call.path, call.atime / 1000, call.mtime / 1000);
        return;
      case "link":
        linkSync(call.target, call.path);
        return;
      case "settle":
        chmodSync(call.path, call.mode);
        utimesSync(call.path, call.atime / 1000, call.mtime / 1000);
        return;
    }
  }
}

/** Bytes of file content gathered in a batch before it is handed over. */
const BATCH_BYTES = 4 << 20;
/** Bytes of encoded calls in a batch at most. */
const BATCH_CALL_BYTES = 1 << 20;
/** Batches handed over and not yet made: the checking side waits beyond this. */
const BATCHES_AHEAD = 4;

/**
 * Queues calls into batches and has them made: on a thread of their own (`thread`) or at once on
 * this one. Queuing never waits (a round trip through the event loop per call would cost more than
 * the call): the caller waits with `caughtUp` when `behind`. The first failed call is thrown by
 * the next `queue`, `write`, `caughtUp` or `drain`.
 */
export class TreeCallQueue {
  private calls = Buffer.from(new ArrayBuffer(BATCH_CALL_BYTES));
  private callsAt = 0;
  private data = new Uint8Array(new ArrayBuffer(BATCH_BYTES));
  private at = 0;
  private ahead = 0;
  /** Batches' buffers back from the thread, to fill again: fresh memory costs a page fault per page. */
  private readonly spare: TreeCallBatch[] = [];
  private failure: FailedTreeCall | undefined;
  private waiting: (() => void) | undefined;
  private readonly worker: Worker | undefined;
  private readonly maker: TreeCallMaker | undefined;

  constructor(policy: TreeCallPolicy, thread: boolean) {
    if (!thread) {
      this.maker = new TreeCallMaker(policy);
      return;
    }
    this.worker = new Worker(new URL("./tree-writer-thread.js", import.meta.url), { workerData: policy });
    this.worker.on("message", ({ failed, batch }: TreeCallReply) => {
      this.ahead--;
      if (failed && !this.failure) this.failure = failed;
      this.spare.push(batch);
      this.waiting?.();
    });
    this.worker.on("error", (err) => {
      this.failure ??= { call: { call: "mkdir", path: "" }, code: undefined, message: String(err) };
      this.waiting?.();
    });
  }

  /** Queues a call (bytes to write: `write`). */
  queue(call: TreeCall): void {
    const bound = encodedBound(call);
    if (bound > BATCH_CALL_BYTES) {
      throw new TreeCallError(call, "ENAMETOOLONG", `a path of ${bound} bytes is too long`);
    }
    if (this.callsAt + bound > BATCH_CALL_BYTES) this.send();
    this.callsAt = encodeCall(call, this.calls, this.callsAt);
  }

  /** Queues writes of `bytes` to the file created last. */
  write(bytes: Uint8Array): void {
    let offset = 0;
    while (offset < bytes.length) {
      // Room for the call and some bytes in this batch, so that both go in it.
      if (this.at === BATCH_BYTES || this.callsAt + WRITE_CALL_BYTES > BATCH_CALL_BYTES) this.send();
      const length = Math.min(bytes.length - offset, BATCH_BYTES - this.at);
      this.data.set(length === bytes.length ? bytes : bytes.subarray(offset, offset + length), this.at);
      this.callsAt = encodeWrite(this.at, length, this.calls, this.callsAt);
      this.at += length;
      offset += length;
    }
  }

  /** Whether enough batches are ahead of the thread that the caller should wait (`caughtUp`). */
  get behind(): boolean {
    return this.ahead >= BATCHES_AHEAD;
  }

  /** Waits until the thread is no longer `behind`. */
  async caughtUp(): Promise<void> {
    while (this.ahead >= BATCHES_AHEAD && !this.failure)
      await new Promise<void>((resolve) => (this.waiting = resolve));
    this.throwFailure();
  }

  /** Every queued call made; throws the first failure. */
  async drain(): Promise<void> {
    this.send();
    while (this.ahead > 0 && !this.failure) await new Promise<void>((resolve) => (this.waiting = resolve));
    this.throwFailure();
  }

  /** Stops the thread, its calls made or not: nothing writes into the tree after this resolves. */
  async close(): Promise<void> {
    this.maker?.abandon();
    await this.worker?.terminate();
  }

  private send(): void {
    this.throwFailure();
    if (this.callsAt === 0) return;
    const batch: TreeCallBatch = {
      calls: this.calls.buffer as ArrayBuffer,
      length: this.callsAt,
      data: this.data.buffer as ArrayBuffer,
    };
    this.callsAt = 0;
    this.at = 0;
    if (this.maker) {
      this.failure = this.maker.make(batch);
    } else {
      this.ahead++;
      this.worker!.postMessage(batch, [batch.calls, batch.data]);
      const next = this.spare.pop();
      this.calls = Buffer.from(next?.calls ?? new ArrayBuffer(BATCH_CALL_BYTES));
      this.data = new Uint8Array(next?.data ?? new ArrayBuffer(BATCH_BYTES));
    }
    this.throwFailure();
  }

  private throwFailure(): void {
    if (!this.failure) return;
    const { call, code, message } = this.failure;
    throw new TreeCallError(call, code, message);
  }
}

/** A call that failed: its errno code and the call, for the unpack to say which entry it was. */
export class TreeCallError extends Error {
  readonly code: string | undefined;
  readonly call: TreeCall;

  constructor(call: TreeCall, code: string | undefined, message: string) {
    super(message);
    this.code = code;
    this.call = call;
  }
}
