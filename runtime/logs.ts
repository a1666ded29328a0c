/**
 * The log of a detached container, in Docker's json-file format, so that what `docker logs` users
 * know (and tools that read `*-json.log`) carries over: one JSON object per line,
 * `{"log":"text\n","stream":"stdout"|"stderr","time":"RFC 3339, nanoseconds, Z"}`, an entry per
 * line of output. A chunk's unfinished tail waits for the rest of its line, unless the stream ends
 * or the tail grows past 16 KiB: then it is an entry of its own without the `\n`, as docker's
 * copier does. The log is capped and rotated as docker's `max-size` and `max-file` do:
 * `container.log` is the newest part, `.1`, `.2`, ... older ones, at most `max-file` in all.
 *
 * The writer is fed by the process supervising a detached container; `readLog` and `followLog`
 * serve `tbuild logs`, which needs no user namespace: the files are the user's own.
 */
import {
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  watch,
  writeSync,
} from "node:fs";
import path from "node:path";
import { UsageError } from "../errors/index.js";

export type LogStream = "stdout" | "stderr";

/** `--log-opt max-size=` and `max-file=`: stored in the container's record. */
export interface LogOptions {
  /** Bytes a part may hold before the next entry starts a new one. */
  maxSize: number;
  /** Parts kept, the newest included. */
  maxFile: number;
}

export const DEFAULT_LOG_OPTIONS: LogOptions = { maxSize: 10 * 1024 * 1024, maxFile: 3 };

/** Docker's limit on a line kept whole: longer ones are split into entries of this size. */
export const MAX_LOG_LINE = 16 * 1024;

/** One entry of the log, as stored. */
export interface LogEntry {
  log: string;
  stream: LogStream;
  time: string;
}

/** `--log-opt KEY=VALUE` flags (json-file's `max-size` and `max-file`) over the defaults. */
export function parseLogOptions(flags: readonly string[]): LogOptions {
  const options = { ...DEFAULT_LOG_OPTIONS };
  for (const flag of flags) {
    const eq = flag.indexOf("=");
    const key = eq < 0 ? flag : flag.slice(0, eq);
    const value = eq < 0 ? "" : flag.slice(eq + 1);
    if (key === "max-size") {
      const match = /^(\d+)([kmg]?)b?$/i.exec(value);
      const size = match ? Number(match[1]) * 1024 ** "_kmg".indexOf(match[2]!.toLowerCase() || "_") : 0;
      if (!match || size < 1) {
        throw new UsageError(
          `--log-opt ${flag}: max-size is a positive size in bytes, or with k, m or g (e.g. max-size=20m)`,
        );
      }
      options.maxSize = size;
    } else if (key === "max-file") {
      if (!/^[1-9]\d{0,5}$/.test(value)) {
        throw new UsageError(
          `--log-opt ${flag}: max-file is a whole number of files, at least 1 (e.g. max-file=5)`,
        );
      }
      options.maxFile = Number(value);
    } else {
      throw new UsageError(
        `--log-opt ${flag}: tbuild's json-file log knows max-size=SIZE and max-file=N only`,
      );
    }
  }
  return options;
}

/** The log's parts, oldest first: `FILE.N`, ..., `FILE.1`, `FILE` (only those there, N < maxFile). */
export function logParts(file: string, maxFile: number): string[] {
  let names: string[];
  try {
    names = readdirSync(path.dirname(file));
  } catch {
    return [];
  }
  // Listed, not looked for one by one: a max-file of a million costs one readdir, not a million stats.
  const base = path.basename(file);
  const rotated = names
    .map((name) => (name.startsWith(`${base}.`) ? /^[1-9]\d*$/.exec(name.slice(base.length + 1)) : null))
    .filter((match) => match !== null)
    .map((match) => Number(match[0]))
    .filter((n) => n < maxFile)
    .sort((a, b) => b - a);
  return [...rotated.map((n) => `${file}.${n}`), ...(names.includes(base) ? [file] : [])];
}

/**
 * Writes a container's output to its log. Synchronous writes, one per chunk: the supervising
 * process has nothing else to do meanwhile, and a chunk's lines go in one write(2).
 */
export class LogWriter {
  private readonly file: string;
  private readonly options: LogOptions;
  private fd: number;
  private size: number;
  private readonly pending: Record<LogStream, string> = { stdout: "", stderr: "" };
  private readonly decoders = {
    stdout: new TextDecoder("utf-8"),
    stderr: new TextDecoder("utf-8"),
  };

  constructor(file: string, options: LogOptions = DEFAULT_LOG_OPTIONS) {
    this.file = file;
    this.options = options;
    // Readable by the user's group, as docker's; the user's own whichever way the container ran.
    this.fd = openSync(file, "a", 0o640);
    this.size = fstatSync(this.fd).size;
  }

  /** A chunk of the container's output on `stream`: its whole lines become entries. */
  write(stream: LogStream, chunk: Uint8Array | string): void {
    const text =
      this.pending[stream] +
      (typeof chunk === "string" ? chunk : this.decoders[stream].decode(chunk, { stream: true }));
    // The same end for every entry of the chunk: made once.
    const end = entryEnd(stream, logTime());
    let out = "";
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      // A line longer than docker's limit is cut into entries of that size, the last with the \n.
      while (nl + 1 - start > MAX_LOG_LINE) {
        out += `{"log":${JSON.stringify(text.slice(start, start + MAX_LOG_LINE))}${end}`;
        start += MAX_LOG_LINE;
      }
      out += `{"log":${JSON.stringify(text.slice(start, nl + 1))}${end}`;
      start = nl + 1;
    }
    while (text.length - start >= MAX_LOG_LINE) {
      out += `{"log":${JSON.stringify(text.slice(start, start + MAX_LOG_LINE))}${end}`;
      start += MAX_LOG_LINE;
    }
    this.pending[stream] = text.slice(start);
    if (out !== "") this.append(out);
  }

  /** `stream` has ended: its unfinished last line, if any, becomes an entry without its `\n`. */
  end(stream: LogStream): void {
    const tail = this.pending[stream] + this.decoders[stream].decode();
    this.pending[stream] = "";
    if (tail !== "") this.append(`{"log":${JSON.stringify(tail)}${entryEnd(stream, logTime())}`);
  }

  /** Both streams ended, the file closed. */
  close(): void {
    this.end("stdout");
    this.end("stderr");
    closeSync(this.fd);
  }

  private append(lines: string): void {
    const data = Buffer.from(lines, "utf8");
    // Rotated before an entry that would take the part past max-size, never in the middle of one.
    if (this.size > 0 && this.size + data.length > this.options.maxSize) this.rotate();
    writeSync(this.fd, data);
    this.size += data.length;
  }

  private rotate(): void {
    closeSync(this.fd);
    const { maxFile } = this.options;
    if (maxFile > 1) {
      // The parts there, oldest first (listed once: max-file may be large): each moves one older.
      for (const part of logParts(this.file, maxFile)) {
        if (part === this.file) continue;
        const n = Number(part.slice(this.file.length + 1));
        if (n + 1 >= maxFile) removeIfPresent(part);
        else renameSync(part, `${this.file}.${n + 1}`);
      }
      renameSync(this.file, `${this.file}.1`);
      this.fd = openSync(this.file, "a", 0o640);
    } else {
      // One part only: it starts again empty, as docker's does.
      this.fd = openSync(this.file, "w", 0o640);
    }
    this.size = 0;
  }
}

/** What follows an entry's `{"log":"..."`: its stream and time, as docker's json-file orders them. */
function entryEnd(stream: LogStream, time: string): string {
  return `,"stream":"${stream}","time":"${time}"}\n`;
}

/** Milliseconds of the wall clock, nanoseconds from the monotonic one, so entries keep their order. */
const clockBase = { wallMs: Date.now(), mono: process.hrtime.bigint() };

/** Now in RFC 3339 with nanoseconds (trailing zeros dropped, as Go's RFC3339Nano), in UTC. */
export function logTime(): string {
  const ns = BigInt(clockBase.wallMs) * 1_000_000n + (process.hrtime.bigint() - clockBase.mono);
  const seconds = ns / 1_000_000_000n;
  const fraction = (ns % 1_000_000_000n).toString().padStart(9, "0").replace(/0+$/, "");
  const whole = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  return `${whole}${fraction ? `.${fraction}` : ""}Z`;
}

/** A stored time as `docker logs -t` prints it: always nine digits of fraction. */
export function displayTime(time: string): string {
  const match = /^(.{19})(?:\.(\d{1,9}))?Z$/.exec(time);
  if (!match) return time;
  return `${match[1]}.${(match[2] ?? "").padEnd(9, "0")}Z`;
}

export interface ReadLogOptions {
  /** The last `tail` lines only. */
  tail?: number;
  /** Entries at or after this time (a stored time's form) only. */
  since?: string;
}

/** Where a reader has got to: the part it reads and how far, to follow the log from there. */
export interface LogPosition {
  fd: number;
  offset: number;
  /** The undecoded end of the last read, short of a whole line. */
  rest: string;
}

/**
 * The entries of the log at `file` (its rotated parts first), handed to `emit` in order; returns
 * where the newest part ends, to follow from. Undefined when the container has no log at all.
 */
export function readLog(
  file: string,
  maxFile: number,
  emit: (entry: LogEntry) => void,
  options: ReadLogOptions = {},
): LogPosition | undefined {
  const parts = logParts(file, maxFile);
  if (parts.length === 0) return undefined;
  const newest = parts[parts.length - 1] === file ? openSync(file, "r") : undefined;
  const tail = options.tail;
  const kept: LogEntry[] = [];
  const take = (entry: LogEntry) => {
    if (options.since !== undefined && displayTime(entry.time) < options.since) return;
    if (tail === undefined) return emit(entry);
    kept.push(entry);
    // Trimmed now and then, not on every entry: the last `tail` are all that will be shown.
    if (kept.length > 2 * tail + 1024) kept.splice(0, kept.length - tail);
  };
  let position: LogPosition | undefined;
  for (const part of parts) {
    const fd = part === file && newest !== undefined ? newest : openSync(part, "r");
    const at: LogPosition = { fd, offset: 0, rest: "" };
    readNewEntries(at, take);
    if (fd === newest) position = at;
    else closeSync(fd);
  }
  if (tail !== undefined) for (const entry of kept.slice(Math.max(0, kept.length - tail))) emit(entry);
  // Between a rotation's rename and the new part's creation: followed from the end of the last one.
  if (position === undefined) {
    const last = parts[parts.length - 1]!;
    position = { fd: openSync(last, "r"), offset: statSync(last).size, rest: "" };
  }
  return position;
}

const READ_SIZE = 1024 * 1024;

/** Reads what was added to the part at `at` since, handing each whole entry to `emit`. */
function readNewEntries(at: LogPosition, emit: (entry: LogEntry) => void): void {
  const buffer = Buffer.allocUnsafe(READ_SIZE);
  for (;;) {
    const n = readSync(at.fd, buffer, 0, READ_SIZE, at.offset);
    if (n === 0) return;
    at.offset += n;
    // Entries are JSON (ASCII with escapes only where JSON.stringify leaves UTF-8): cut at the last \n.
    const text = at.rest + buffer.toString("latin1", 0, n);
    const last = text.lastIndexOf("\n");
    at.rest = text.slice(last + 1);
    if (last < 0) continue;
    for (const line of Buffer.from(text.slice(0, last), "latin1").toString("utf8").split("\n")) {
      if (line === "") continue;
      try {
        emit(JSON.parse(line) as LogEntry);
      } catch {
        // A line cut by a crash of the writer: skipped, as docker's reader does.
      }
    }
  }
}

/**
 * Follows the log from `position` (see readLog): each new entry goes to `emit`, across rotations,
 * until `running()` says the container no longer runs (asked again on every change in the
 * container's directory, where its record is replaced on every change of state) or `signal` aborts.
 */
export async function followLog(
  file: string,
  position: LogPosition,
  emit: (entry: LogEntry) => void,
  running: () => Promise<boolean>,
  signal?: AbortSignal,
  removed: () => boolean = () => !existsSync(path.dirname(file)),
): Promise<void> {
  let at = position;
  const drain = () => {
    readNewEntries(at, emit);
    // Rotated: what is left of the old part first, then the new part from its start.
    const current = statOrUndefined(file);
    const open = fstatSync(at.fd);
    if (current !== undefined && current.ino !== open.ino) {
      const next = openSync(file, "r");
      closeSync(at.fd);
      at = { fd: next, offset: 0, rest: "" };
      readNewEntries(at, emit);
    } else if (current !== undefined && current.size < at.offset) {
      // Truncated in place (max-file=1): read it again from its start.
      at = { fd: at.fd, offset: 0, rest: "" };
      readNewEntries(at, emit);
    }
  };
  await new Promise<void>((resolve, reject) => {
    let checking = false;
    let again = false;
    let done = false;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      watcher.close();
      signal?.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => finish();
    const check = async () => {
      if (checking) {
        again = true;
        return;
      }
      checking = true;
      try {
        do {
          if (done) return;
          again = false;
          drain();
          if (!(await running())) {
            drain();
            return finish();
          }
        } while (again);
      } catch (err) {
        // The container removed while it was followed (or being removed): the end, not an error.
        return finish(removed() ? undefined : err);
      } finally {
        checking = false;
      }
    };
    let watcher: ReturnType<typeof watch>;
    try {
      watcher = watch(path.dirname(file), () => void check());
    } catch (err) {
      // Removed before the watch began (just after its log was read): as well the end.
      if (removed()) resolve();
      else reject(err);
      return;
    }
    // The container's directory removed (the container with it) may end the watch with an error:
    // that is the end of the container, not of the follower.
    watcher.on("error", (err) => finish(removed() ? undefined : err));
    signal?.addEventListener("abort", onAbort);
    // What changed before the watch began.
    void check();
  });
  closeSync(at.fd);
}

function statOrUndefined(file: string) {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

function removeIfPresent(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // not there
  }
}
