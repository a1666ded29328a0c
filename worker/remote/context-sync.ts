import {
  chmodSync,
  closeSync,
  constants,
  createReadStream,
  fchmodSync,
  futimesSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip, gunzipSync, gzipSync, constants as zlibConstants } from "node:zlib";
import { TbuildError } from "../../errors/index.js";
import { TAR_END, TarChunker, type TarEntry, tarEntry } from "../../oci/archive/tar.js";
import { readTarEntries } from "../../oci/archive/tar-reader.js";
import { writeFileAtomic } from "../../oci/atomic-file.js";
import { entryComponents } from "../../oci/layer-entry.js";
import { selectContext } from "../ops/context-walk.js";
import { sha256File } from "../ops/local.js";

/** One entry of a context as the client lists it. */
export interface SyncEntry {
  /** Relative, `/`-separated, no trailing slash. */
  path: string;
  type: "file" | "dir" | "symlink";
  /** Permission bits with setuid, setgid and sticky. */
  mode: number;
  size: number;
  mtimeMs: number;
  /** Symbolic links: the target, as written. */
  link?: string;
}

/** What the worker asks of a listing: files to send, and files to send only if their hash differs. */
export interface SyncPlan {
  need: string[];
  /** Path → the sha256 (hex) of the worker's copy. */
  check: Record<string, string>;
}

/** Whether a plan asks the client for nothing: then no data follows (see build/remote-serve.ts). */
export function asksNothing(plan: SyncPlan): boolean {
  return plan.need.length === 0 && Object.keys(plan.check).length === 0;
}

/** A listing or a request that is not what the protocol says. */
export class ContextSyncError extends TbuildError {
  constructor(message: string) {
    super("E_CONTEXT_SYNC", message);
  }
}

type Row = [path: string, type: "f" | "d" | "l", mode: number, size: number, mtimeMs: number, link?: string];

/** A listing as the bytes that travel: gzip'd JSON rows, a few bytes per entry. */
export function encodeListing(entries: readonly SyncEntry[]): Buffer {
  const rows: Row[] = entries.map((e) => {
    const row: Row = [
      e.path,
      e.type === "file" ? "f" : e.type === "dir" ? "d" : "l",
      e.mode,
      e.size,
      e.mtimeMs,
    ];
    if (e.link !== undefined) row.push(e.link);
    return row;
  });
  return gzipSync(JSON.stringify(rows));
}

/** The listing in `bytes`, each path checked to stay inside the context. */
export function decodeListing(bytes: Buffer): SyncEntry[] {
  let rows: unknown;
  try {
    rows = JSON.parse(gunzipSync(bytes, { maxOutputLength: 512 * 1024 * 1024 }).toString("utf8"));
  } catch (err) {
    throw new ContextSyncError(`the context listing cannot be read: ${(err as Error).message}`);
  }
  if (!Array.isArray(rows)) throw new ContextSyncError("the context listing is not a list");
  const seen = new Set<string>();
  return rows.map((row: unknown) => {
    const [p, t, mode, size, mtimeMs, link] = (Array.isArray(row) ? row : []) as unknown[];
    const valid =
      typeof p === "string" &&
      (t === "f" || t === "d" || t === "l") &&
      Number.isInteger(mode) &&
      Number.isInteger(size) &&
      typeof mtimeMs === "number" &&
      (t !== "l" || typeof link === "string");
    if (!valid)
      throw new ContextSyncError(`the context listing has a malformed entry ${JSON.stringify(row)}`);
    const parts = checkedPath(p as string);
    const clean = parts.join("/");
    if (seen.has(clean))
      throw new ContextSyncError(`the context listing names ${JSON.stringify(clean)} twice`);
    seen.add(clean);
    return {
      path: clean,
      type: t === "f" ? "file" : t === "d" ? "dir" : "symlink",
      mode: (mode as number) & 0o7777,
      size: size as number,
      mtimeMs: mtimeMs as number,
      ...(t === "l" ? { link: link as string } : {}),
    };
  });
}

function checkedPath(raw: string): string[] {
  let parts: string[];
  try {
    parts = entryComponents(raw);
  } catch {
    throw new ContextSyncError(`the context listing names ${JSON.stringify(raw)}, outside the context`);
  }
  if (parts.length === 0) throw new ContextSyncError("the context listing names the context's root");
  return parts;
}

// ---------------------------------------------------------------------------------------------
// The client's half

/** What the build selects of `dir`, less `excludePatterns` (`.dockerignore`), as a listing. */
export async function listContext(
  dir: string,
  excludePatterns: readonly string[],
  signal?: AbortSignal,
): Promise<SyncEntry[]> {
  const entries = await selectContext(dir, { followPaths: [], excludePatterns }, signal);
  const out: SyncEntry[] = [];
  for (const entry of entries) {
    const { stat } = entry;
    const common = { path: entry.rel, mode: Number(stat.mode & 0o7777n), mtimeMs: Number(stat.mtimeMs) };
    if (stat.isDirectory()) out.push({ ...common, type: "dir", size: 0 });
    else if (stat.isSymbolicLink())
      out.push({ ...common, type: "symlink", size: 0, link: entry.linkTarget ?? readlinkSync(entry.abs) });
    else if (stat.isFile()) out.push({ ...common, type: "file", size: Number(stat.size) });
    // Sockets, FIFOs and devices of a context are not build inputs BuildKit sends either.
  }
  return out;
}

/**
 * Files up to this size are read whole and synchronously: for a small file a stream's thread-pool
 * round trips (open, read, read to the end, close) cost more than the read itself.
 */
const SMALL_FILE_BYTES = 1 << 20;

/** The tar gathered before a part of it is compressed and sent. */
const SYNC_CHUNK_BYTES = 64 * 1024;

/** The sha256 (hex) of a file. */
export function hashFile(file: string): Promise<string> {
  return sha256File(file, statSync(file).size);
}

/** The files of `plan` whose content the worker lacks: every `need`, and each `check` whose hash here differs. */
export async function filesToSend(
  dir: string,
  plan: SyncPlan,
  listing: readonly SyncEntry[],
): Promise<string[]> {
  // Only files of the listing: a worker asking for any other path (`../.ssh/id_ed25519`, a file
  // .dockerignore leaves out) gets an error, and nothing of it is read, hashed or sent.
  const files = new Set(listing.filter((entry) => entry.type === "file").map((entry) => entry.path));
  const asked = [...plan.need, ...Object.keys(plan.check)];
  const foreign = asked.find((rel) => !files.has(rel));
  if (foreign !== undefined) {
    throw new ContextSyncError(
      `the worker asked for ${JSON.stringify(foreign)}, which is not a file of the build context; nothing was sent`,
    );
  }
  const send = [...plan.need];
  for (const [rel, theirs] of Object.entries(plan.check)) {
    if ((await hashFile(path.join(dir, rel))) !== theirs) send.push(rel);
  }
  return send;
}

/**
 * The files `paths` of `dir`, as one gzip'd tar. Small files are gathered into chunks
 * (TarChunker), so that gzip and the stream after it see a few calls instead of three per file;
 * each chunk is compressed and passed on at once (a sync flush), so that the worker writes the
 * first files while this side still reads the next. Left to itself, gzip would hold back its
 * output until 16 KiB of it had gathered: with source files, the first half-megabyte or so.
 */
export function contextData(dir: string, paths: readonly string[]): Readable {
  async function* tar(): AsyncGenerator<Buffer> {
    const chunker = new TarChunker(SYNC_CHUNK_BYTES);
    for (const rel of paths) {
      const file = path.join(dir, rel);
      const stat = lstatSync(file);
      if (!stat.isFile()) continue;
      const header: TarEntry = {
        path: rel,
        type: "File",
        mode: stat.mode & 0o7777,
        uid: 0,
        gid: 0,
        size: stat.size,
        mtime: stat.mtime,
      };
      if (stat.size <= SMALL_FILE_BYTES) {
        const chunk = chunker.add(header, readFileSync(file));
        if (chunk) yield chunk;
        continue;
      }
      const gathered = chunker.flush();
      if (gathered) yield gathered;
      yield* tarEntry(header, createReadStream(file));
    }
    const rest = chunker.flush();
    if (rest) yield rest;
    yield TAR_END;
  }
  return Readable.from(tar()).pipe(createGzip({ level: 6, flush: zlibConstants.Z_SYNC_FLUSH }));
}

// ---------------------------------------------------------------------------------------------
// The worker's half

/** An entry of the copy as it was left: inode and change time, which anything done to it changes. */
interface Identity {
  ino: number;
  ctimeMs: number;
}

/** What the worker knows of an entry it holds: the client's listing, and its own copy's identity then. */
interface Kept extends Partial<Identity> {
  entry: SyncEntry;
}

/** `kept.json`: the copy's root and entries as the last sync left them. */
interface KeptRecord {
  root?: Identity;
  entries: Kept[];
}

/**
 * The worker's copy of one client's context: `tree` the files, `kept.json` what they are.
 *
 * Two shortcuts keep a sync of a large, mostly unchanged context cheap; the property test of
 * test/worker/remote/context-sync.test.ts holds them to what the plain way gives:
 * - `knownDirectories`: a directory of the copy found (or made) a real one during this plan or
 *   apply is not looked at again for each path below it; whatever removes something forgets it.
 *   A plan, which changes nothing, also remembers what is not a directory (`notDirectories`), and
 *   an apply what it made (`madeDirectories`): in those, only what it wrote since can stand.
 * - `untouchedSinceRecorded`: an entry whose listing, inode and ctime are those kept.json recorded
 *   has its mode and times already (setting them would change its ctime, and nothing else).
 * - `sameShape`: when the listing names the same paths, of the same types, as the last sync, and
 *   the copy's root, directories and links all have the identity recorded then, the copy holds
 *   exactly those entries still: adding, removing, renaming or replacing anything in a directory
 *   changes that directory's ctime, and nothing sets a ctime back. Then nothing needs removing, and
 *   only the entries whose listing changed are set again; an unchanged copy is not even recorded
 *   anew.
 */
export class SyncedContext {
  readonly dir: string;
  readonly tree: string;
  private readonly record: string;
  /** Paths (relative) of the copy seen to be real directories, not links, since the operation began. */
  private knownDirectories = new Set<string>();
  /** During a plan: paths seen not to be real directories. */
  private notDirectories: Set<string> | undefined;
  /** During an apply: directories it made (empty then). */
  private madeDirectories = new Set<string>();
  /** What the plan read of kept.json, for the apply that follows it (the copy is locked in between). */
  private planned: KeptRecord | undefined;

  constructor(dir: string) {
    this.dir = dir;
    this.tree = path.join(dir, "tree");
    this.record = path.join(dir, "kept.json");
  }

  /** What the last sync recorded; an older record (a bare list) has no identities for all entries. */
  private async kept(): Promise<KeptRecord> {
    try {
      const parsed = JSON.parse(await readFile(this.record, "utf8")) as KeptRecord | Kept[];
      return Array.isArray(parsed) ? { entries: parsed } : parsed;
    } catch {
      return { entries: [] };
    }
  }

  /** What the client must send of `listing`. */
  async plan(listing: readonly SyncEntry[]): Promise<SyncPlan> {
    this.knownDirectories.clear();
    this.notDirectories = new Set();
    try {
      return await this.planFiles(listing);
    } finally {
      this.notDirectories = undefined;
    }
  }

  private async planFiles(listing: readonly SyncEntry[]): Promise<SyncPlan> {
    this.planned = await this.kept();
    const kept = keptByPath(this.planned.entries);
    const need: string[] = [];
    const check: Record<string, string> = {};
    for (const entry of listing) {
      if (entry.type !== "file") continue;
      const here = this.lstat(entry.path);
      if (!here?.isFile()) {
        need.push(entry.path);
        continue;
      }
      if (!untouchedSinceRecorded(kept.get(entry.path), entry, here))
        check[entry.path] = await hashFile(path.join(this.tree, entry.path));
    }
    return { need, check };
  }

  /** The entry at `rel` of the copy, never through a link: undefined when a parent is not a directory. */
  private lstat(rel: string) {
    const slash = rel.lastIndexOf("/");
    if (slash >= 0 && !this.isDirectory(rel.slice(0, slash))) return undefined;
    return lstatOrUndefined(path.join(this.tree, rel));
  }

  /** Whether `rel` and each of its parents is a real directory of the copy. */
  private isDirectory(rel: string): boolean {
    if (this.knownDirectories.has(rel)) return true;
    if (this.notDirectories?.has(rel)) return false;
    const slash = rel.lastIndexOf("/");
    const isOne =
      (slash < 0 || this.isDirectory(rel.slice(0, slash))) &&
      lstatOrUndefined(path.join(this.tree, rel))?.isDirectory() === true;
    if (!isOne) {
      this.notDirectories?.add(rel);
      return false;
    }
    this.knownDirectories.add(rel);
    return true;
  }

  /** Removes `rel` from the copy, and forgets what was known of it and below it. */
  private removeEntry(rel: string): void {
    rmSync(path.join(this.tree, rel), { recursive: true, force: true });
    for (const known of [this.knownDirectories, this.madeDirectories])
      for (const dir of known) if (dir === rel || dir.startsWith(`${rel}/`)) known.delete(dir);
  }

  /** Makes `rel`'s parents real directories of the copy, replacing whatever else stands there. */
  private parents(parts: readonly string[]): void {
    let rel = "";
    for (const part of parts.slice(0, -1)) {
      rel = rel === "" ? part : `${rel}/${part}`;
      if (this.knownDirectories.has(rel)) continue;
      const stat = lstatOrUndefined(path.join(this.tree, rel));
      if (!stat?.isDirectory()) {
        if (stat) this.removeEntry(rel);
        mkdirSync(path.join(this.tree, rel), { mode: 0o755 });
        this.madeDirectories.add(rel);
      }
      this.knownDirectories.add(rel);
    }
  }

  /**
   * Writes the files of `data` (the client's gzip'd tar; none when the plan asked for nothing)
   * into the copy, then makes the copy exactly `listing`, and records it.
   */
  async apply(
    listing: readonly SyncEntry[],
    data: AsyncIterable<Uint8Array> | undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    this.knownDirectories.clear();
    this.madeDirectories.clear();
    const record = this.planned ?? (await this.kept());
    this.planned = undefined;
    // Looked at before anything is written: what this apply writes changes ctimes too.
    const sameShape = this.sameShape(listing, record);
    mkdirSync(this.tree, { recursive: true, mode: 0o755 });
    const byPath = new Map(listing.map((e) => [e.path, e]));
    /** Files written now: their mode and times were set as they were written. */
    const written = new Set<string>();
    if (data !== undefined) await this.writeFiles(data, byPath, written, signal);
    if (sameShape) await this.update(listing, record, written);
    else await this.reconcile(listing, keptByPath(record.entries), written);
  }

  /** Writes the files of `data` (the client's gzip'd tar), each a file of the listing, into the copy. */
  private async writeFiles(
    data: AsyncIterable<Uint8Array>,
    byPath: ReadonlyMap<string, SyncEntry>,
    written: Set<string>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const gunzip = createGunzip();
    const feeding = pipeline(Readable.from(data), gunzip, { ...(signal ? { signal } : {}) });
    feeding.catch(() => {});
    for await (const entry of readTarEntries(gunzip, { what: "the context data" })) {
      signal?.throwIfAborted();
      const parts = checkedPath(entry.path);
      const rel = parts.join("/");
      if (entry.type !== "File" || byPath.get(rel)?.type !== "file") {
        throw new ContextSyncError(
          `the context data holds ${JSON.stringify(rel)}, which the listing has no file of`,
        );
      }
      this.parents(parts);
      const file = path.join(this.tree, rel);
      // In a directory made by this apply, only what it wrote or made since can stand.
      const fresh =
        this.madeDirectories.has(parts.slice(0, -1).join("/")) &&
        !written.has(rel) &&
        !this.knownDirectories.has(rel);
      const here = fresh ? undefined : this.lstat(rel);
      if (here && !here.isFile()) this.removeEntry(rel);
      const fd = openSync(
        file,
        constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
        0o600,
      );
      try {
        const write = (chunk: Buffer) => {
          let offset = 0;
          while (offset < chunk.length) offset += writeSync(fd, chunk, offset);
        };
        if (entry.content !== undefined) write(entry.content);
        else for await (const chunk of entry.body) write(chunk);
        fchmodSync(fd, byPath.get(rel)!.mode);
        futimesSync(fd, new Date(), new Date(byPath.get(rel)!.mtimeMs));
      } finally {
        closeSync(fd);
      }
      written.add(rel);
    }
    await feeding;
  }

  /**
   * Whether the copy holds exactly the entries the last sync recorded, and the listing names the
   * same ones: same paths in the same order, same types, and the root, every directory and every
   * link as recorded (see the class's header).
   */
  private sameShape(listing: readonly SyncEntry[], record: KeptRecord): boolean {
    const { root, entries } = record;
    if (root === undefined || entries.length !== listing.length) return false;
    if (!sameIdentity(root, lstatOrUndefined(this.tree))) return false;
    for (const [i, entry] of listing.entries()) {
      const was = entries[i]!;
      if (was.entry.path !== entry.path || was.entry.type !== entry.type) return false;
      if (entry.type === "file") continue;
      if (!sameIdentity(was, lstatOrUndefined(path.join(this.tree, entry.path)))) return false;
    }
    return true;
  }

  /**
   * The copy of the same shape as recorded (sameShape, checked before the data was written) made
   * `listing`: the entries that were not written and are not as recorded get their mode and times,
   * deepest first, as reconcile sets them. Recorded again only when something changed.
   */
  private async update(
    listing: readonly SyncEntry[],
    record: KeptRecord,
    written: ReadonlySet<string>,
  ): Promise<void> {
    const kept: Kept[] = [];
    const stale: SyncEntry[] = [];
    let changed = written.size > 0;
    for (const [i, entry] of listing.entries()) {
      const here = lstatOrUndefined(path.join(this.tree, entry.path));
      if (entry.type === "file" && (!here?.isFile() || here.size !== entry.size)) {
        throw new ContextSyncError(`the context data did not bring ${JSON.stringify(entry.path)}`);
      }
      if (!written.has(entry.path) && !untouchedSinceRecorded(record.entries[i], entry, here)) {
        stale.push(entry);
      }
      kept.push({ entry, ...identityOf(here!) });
    }
    if (stale.length > 0) {
      changed = true;
      const depth = (e: SyncEntry) => e.path.split("/").length;
      stale.sort((a, b) => depth(b) - depth(a));
      const index = new Map(listing.map((e, i) => [e.path, i]));
      for (const entry of stale) {
        const abs = path.join(this.tree, entry.path);
        if (entry.type !== "symlink") chmodSync(abs, entry.mode);
        lutimesSync(abs, new Date(), new Date(entry.mtimeMs));
        kept[index.get(entry.path)!] = { entry, ...identityOf(lstatSync(abs)) };
      }
    }
    if (!changed) return;
    await writeFileAtomic(
      this.record,
      JSON.stringify({ root: identityOf(lstatSync(this.tree)), entries: kept } satisfies KeptRecord),
    );
  }

  /** The copy made exactly `listing`: what it lacks is refused, what it has beyond is removed. */
  private async reconcile(
    listing: readonly SyncEntry[],
    recorded: ReadonlyMap<string, Kept>,
    written: ReadonlySet<string>,
  ): Promise<void> {
    const wanted = new Map(listing.map((e) => [e.path, e]));
    // Beyond the listing: removed, deepest last so a removed directory takes its contents.
    const prune = (dirRel: string) => {
      const abs = dirRel === "" ? this.tree : path.join(this.tree, dirRel);
      // The entries' types as the directory gives them: no lstat each.
      for (const stat of readdirSync(abs, { withFileTypes: true })) {
        const name = stat.name;
        const rel = dirRel === "" ? name : `${dirRel}/${name}`;
        const want = wanted.get(rel);
        const fits =
          want !== undefined &&
          ((want.type === "dir" && stat.isDirectory()) ||
            (want.type === "file" && stat.isFile()) ||
            (want.type === "symlink" &&
              stat.isSymbolicLink() &&
              readlinkSync(path.join(abs, name)) === want.link));
        if (!fits) this.removeEntry(rel);
        else if (stat.isDirectory()) {
          this.knownDirectories.add(rel);
          prune(rel);
        }
      }
    };
    prune("");
    const untouched = new Set<string>();
    /** Each entry's identity as recorded: taken here, again for one whose mode or times are set below. */
    const identity = new Map<string, Identity>();
    for (const entry of listing) {
      const parts = entry.path.split("/");
      this.parents(parts);
      const abs = path.join(this.tree, entry.path);
      const here = this.lstat(entry.path);
      if (entry.type === "dir") {
        if (!here) mkdirSync(abs, { mode: 0o755 });
        this.knownDirectories.add(entry.path);
      } else if (entry.type === "symlink") {
        if (!here) symlinkSync(entry.link!, abs);
        else if (untouchedSinceRecorded(recorded.get(entry.path), entry, here)) untouched.add(entry.path);
      } else if (!here?.isFile() || here.size !== entry.size) {
        throw new ContextSyncError(`the context data did not bring ${JSON.stringify(entry.path)}`);
      } else {
        identity.set(entry.path, { ino: here.ino, ctimeMs: here.ctimeMs });
        if (!written.has(entry.path) && untouchedSinceRecorded(recorded.get(entry.path), entry, here))
          untouched.add(entry.path);
      }
    }
    // Modes, then times, deepest first: a directory's time is set after everything inside it.
    const depth = new Map(listing.map((e) => [e, e.path.split("/").length]));
    const deepestFirst = [...listing].sort((a, b) => depth.get(b)! - depth.get(a)!);
    for (const entry of deepestFirst) {
      if (written.has(entry.path) || untouched.has(entry.path)) continue;
      const abs = path.join(this.tree, entry.path);
      if (entry.type !== "symlink") chmodSync(abs, entry.mode);
      lutimesSync(abs, new Date(), new Date(entry.mtimeMs));
      identity.set(entry.path, identityOf(lstatSync(abs)));
    }
    // A link left as it was: its identity now (it was found untouched; a directory never is, its
    // times are set above, after everything inside it).
    for (const entry of listing) {
      if (!identity.has(entry.path))
        identity.set(entry.path, identityOf(lstatSync(path.join(this.tree, entry.path))));
    }
    const kept: Kept[] = listing.map((entry) => ({ entry, ...identity.get(entry.path)! }));
    await writeFileAtomic(
      this.record,
      JSON.stringify({ root: identityOf(lstatSync(this.tree)), entries: kept } satisfies KeptRecord),
    );
  }

  /** Removes the copy. */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * The entry at `abs` (not followed), or undefined when there is none or it cannot be looked at.
 * A missing entry is the common case of a first sync: it costs no exception.
 */
function lstatOrUndefined(abs: string) {
  try {
    return lstatSync(abs, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/** An entry of the copy as the last sync recorded it, for an unchanged listing entry: nothing to do. */
function untouchedSinceRecorded(
  was: Kept | undefined,
  entry: SyncEntry,
  here: { ino: number; ctimeMs: number; size: number } | undefined,
): boolean {
  return (
    was !== undefined &&
    sameListing(was.entry, entry) &&
    sameIdentity(was, here) &&
    (entry.type !== "file" || here!.size === entry.size)
  );
}

function identityOf(stat: { ino: number; ctimeMs: number }): Identity {
  return { ino: stat.ino, ctimeMs: stat.ctimeMs };
}

function sameIdentity(was: Partial<Identity>, here: { ino: number; ctimeMs: number } | undefined): boolean {
  return here !== undefined && was.ino === here.ino && was.ctimeMs === here.ctimeMs;
}

function keptByPath(entries: readonly Kept[]): Map<string, Kept> {
  return new Map(entries.map((k) => [k.entry.path, k]));
}

function sameListing(a: SyncEntry, b: SyncEntry): boolean {
  return (
    a.type === b.type &&
    a.mode === b.mode &&
    a.size === b.size &&
    a.mtimeMs === b.mtimeMs &&
    a.link === b.link
  );
}
