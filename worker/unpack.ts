/**
 * Unpacking a layer tar into a directory that overlayfs can stack: files, directories, links,
 * ownership, permission bits (setuid, setgid, sticky), mtimes, FIFOs and devices (as real root);
 * OCI whiteouts become overlayfs whiteouts (0:0 character devices, which the kernel lets even a user
 * namespace create), and an opaque directory (`.wh..wh..opq`) becomes a whiteout for every entry of
 * the layers below that it hides. Overlayfs would rather see an opaque xattr, but it must be
 * `trusted.overlay.opaque` as real root and `user.overlay.opaque` (with `userxattr`) in a user
 * namespace, and Node has no xattr calls; whiteouts work under both, with any mount options. This
 * is why an unpacked layer depends on the layers below it, and is keyed by chain ID.
 *
 * A layer is untrusted input: an entry with `..`, an absolute path, a path through a symbolic link
 * the layer itself planted, or a hard link out of the layer is refused with HostileLayerError, and
 * nothing is ever written through a symbolic link (parents are checked with lstat, files opened
 * with O_NOFOLLOW). The layer is unpacked into a private temp directory that is renamed into
 * place only when complete: a failure or a kill leaves nothing half-visible.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import { chmod, copyFile, lchown, link, lutimes, mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { TbuildError } from "../errors/index.js";
import { readTarEntries, sniffTarCompression, type TarReadEntry } from "../oci/archive/tar-reader.js";
import { decompressor } from "../oci/layer.js";
import {
  entryComponents,
  HostileLayerError,
  hardLinkMissing,
  hardLinkTarget,
  hardLinkToDirectory,
  InvalidLayerError,
  ownParentError,
  rootNotDirectory,
  type Whiteout,
  whiteoutOf,
} from "../oci/layer-entry.js";
import { LowerView } from "./snapshot/lower-view.js";

export { HostileLayerError, InvalidLayerError };

const run = promisify(execFile);

/** The times of a directory a layer implies where nothing below is one: the epoch, not the time of unpacking. */
const IMPLIED_TIME = new Date(0);

export interface UnpackOptions {
  /** In a user namespace: device nodes cannot be created there, and are skipped with a warning. */
  rootless: boolean;
  signal?: AbortSignal;
  warn?(message: string): void;
  /**
   * The unpacked layers below this one, lowest first: what an opaque directory hides, what
   * metadata a directory the layer implies (without an entry of its own) inherits, and where a
   * hard link to a file of a lower layer finds it.
   */
  lowers?: readonly string[];
  /** The sha256 of the uncompressed tar (the layer's diff_id), checked before the layer becomes visible. */
  diffId?: string;
  /** Names the layer in errors: `layer sha256:…`. */
  what?: string;
}

interface DirTimes {
  atime: Date;
  mtime: Date;
}

/** Chunks of a tar, whatever its compression: gzip and zstd are recognized by their magic bytes. */
async function* decompressed(
  source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
): AsyncGenerator<Buffer> {
  const { compression, chunks } = await sniffTarCompression(source);
  if (compression === "none") {
    yield* chunks;
    return;
  }
  const inflate = decompressor(compression);
  const piping = pipeline(Readable.from(chunks), inflate);
  // Its failure reaches the loop below through `inflate`, which the pipeline destroys.
  piping.catch(() => {});
  try {
    for await (const chunk of inflate) yield chunk as Buffer;
  } finally {
    inflate.destroy();
  }
}

/** Hashes what flows through, for the diff_id check. */
class Sha256Stream extends Transform {
  readonly hash = createHash("sha256");
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    callback(null, chunk);
  }
}

async function lstatOrUndefined(file: string) {
  try {
    return lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Creates overlayfs whiteouts. Node has no mknod(2); one shell creates many, with coreutils' mknod. */
export async function makeWhiteouts(paths: string[]): Promise<void> {
  const BATCH = 500;
  for (let i = 0; i < paths.length; i += BATCH) {
    await run("sh", [
      "-ec",
      'for p do mknod "$p" c 0 0; done',
      "tbuild-whiteouts",
      ...paths.slice(i, i + BATCH),
    ]);
  }
}

/** Creates a device node or FIFO (coreutils' mknod/mkfifo: Node has no mknod(2)). */
export async function makeSpecialFile(
  file: string,
  type: "CharacterDevice" | "BlockDevice" | "FIFO",
  devmaj = 0,
  devmin = 0,
): Promise<void> {
  if (type === "FIFO") await run("mkfifo", ["--", file]);
  else
    await run("mknod", ["--", file, type === "CharacterDevice" ? "c" : "b", String(devmaj), String(devmin)]);
}

/** lchown, with a clear error when the id is not mapped in this user namespace. */
export async function setOwner(file: string, uid: number, gid: number, name: string): Promise<void> {
  try {
    await lchown(file, uid, gid);
  } catch (err) {
    throw ownerError(err, uid, gid, name);
  }
}

/** setOwner for the unpacker's hot path: a file descriptor (fchown) or a path (lchown), synchronously. */
function setOwnerSync(target: number | string, uid: number, gid: number, name: string): void {
  try {
    if (typeof target === "number") fchownSync(target, uid, gid);
    else lchownSync(target, uid, gid);
  } catch (err) {
    throw ownerError(err, uid, gid, name);
  }
}

function ownerError(err: unknown, uid: number, gid: number, name: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EINVAL") {
    return new TbuildError(
      "E_ID_NOT_MAPPED",
      `${name} is owned by ${uid}:${gid}, which this user namespace does not map (it maps uids and gids 0-65535); give the user a larger subordinate range in /etc/subuid and /etc/subgid`,
      { cause: err },
    );
  }
  if (code === "EPERM") {
    return new TbuildError(
      "E_NO_WORKER_PRIVILEGES",
      `cannot give ${name} its owner ${uid}:${gid}: this process is neither root nor in tbuild's user namespace`,
      { cause: err },
    );
  }
  return err;
}

class LayerUnpacker {
  private readonly root: string;
  private readonly options: UnpackOptions;
  private readonly lowerView: LowerView;
  /** Relative paths known to be real directories of this layer (never symlinks). */
  private readonly knownDirs = new Set<string>([""]);
  /**
   * Every path this unpack has created: the temp directory started empty, so any other path is
   * known to be free without asking the file system (a failed lstat per entry is costly).
   */
  private readonly present = new Set<string>();
  private readonly dirTimes = new Map<string, DirTimes>();
  private readonly whiteouts = new Set<string>();
  private readonly opaque = new Set<string>();
  private rootHasEntry = false;
  private xattrCount = 0;
  private xattrExample = "";
  private readonly skippedDevices: string[] = [];

  constructor(root: string, options: UnpackOptions) {
    this.root = root;
    this.options = options;
    this.lowerView = new LowerView(options.lowers ?? []);
  }

  private abs(rel: string): string {
    return rel === "" ? this.root : path.join(this.root, rel);
  }

  /** Makes sure every parent of `rel` is a real directory of this layer, creating implied ones. */
  private async ensureParents(parts: string[], raw: string): Promise<void> {
    let rel = "";
    for (const part of parts.slice(0, -1)) {
      rel = rel === "" ? part : `${rel}/${part}`;
      if (this.knownDirs.has(rel)) continue;
      const stat = this.present.has(rel) ? await lstatOrUndefined(this.abs(rel)) : undefined;
      if (stat && !stat.isDirectory()) {
        throw ownParentError(raw, rel, stat.isSymbolicLink() ? "symlink" : "other");
      }
      // Not in this layer: a directory it implies, over whatever the layers below hold here.
      if (!stat) await this.makeImpliedDir(rel);
      this.knownDirs.add(rel);
    }
  }

  /**
   * A directory the layer's entries need but do not list: it takes the metadata of the same
   * directory below (overlayfs shows the topmost layer's), or root's 0755 when there is none.
   */
  private async makeImpliedDir(rel: string): Promise<void> {
    const file = this.abs(rel);
    mkdirSync(file);
    this.present.add(rel);
    const whitedOut = this.whiteouts.delete(rel);
    // Deleted, then written into: the directory is new, so what was below must stay hidden.
    if (whitedOut) this.opaque.add(rel);
    const below = whitedOut ? undefined : await this.lowerView.lookup(rel);
    // Synchronously, as applyMetadata: an entry thousands of directories deep implies them all.
    if (below?.stat.isDirectory()) {
      lchownSync(file, Number(below.stat.uid), Number(below.stat.gid));
      chmodSync(file, Number(below.stat.mode & 0o7777n));
      this.dirTimes.set(rel, { atime: below.stat.atime, mtime: below.stat.mtime });
    } else {
      // As the exporters make it (0755, root's, the epoch): what runs is what is exported.
      chmodSync(file, 0o755);
      this.dirTimes.set(rel, { atime: IMPLIED_TIME, mtime: IMPLIED_TIME });
    }
  }

  /** Clears the way for a new entry at `rel`: whatever an earlier entry of this layer put there goes. */
  private async clear(rel: string, keepDirectory: boolean): Promise<void> {
    if (!this.present.has(rel)) return;
    const file = this.abs(rel);
    const stat = await lstatOrUndefined(file);
    if (!stat) return;
    if (keepDirectory && stat.isDirectory()) return;
    await rm(file, { recursive: true, force: true });
    this.present.delete(rel);
    if (!stat.isDirectory()) return;
    for (const created of this.present) {
      if (created.startsWith(`${rel}/`)) this.present.delete(created);
    }
    for (const known of this.knownDirs) {
      if (known === rel || known.startsWith(`${rel}/`)) this.knownDirs.delete(known);
    }
    for (const dir of this.dirTimes.keys()) {
      if (dir === rel || dir.startsWith(`${rel}/`)) this.dirTimes.delete(dir);
    }
    // What the layer whited out or made opaque inside the directory went with it.
    for (const marks of [this.whiteouts, this.opaque]) {
      for (const marked of marks) if (marked === rel || marked.startsWith(`${rel}/`)) marks.delete(marked);
    }
  }

  /**
   * Owner, mode and times of a new entry. Synchronous, as are the calls that create entries: a
   * layer is mostly small files, and a round trip through libuv's thread pool per call costs
   * several times the call itself (unpacking 2,000 small files took over a second that way).
   */
  private applyMetadata(rel: string, entry: TarReadEntry, kind: "dir" | "symlink" | "other"): void {
    const file = this.abs(rel);
    this.present.add(rel);
    setOwnerSync(file, entry.uid, entry.gid, entry.path);
    // After chown, which clears setuid and setgid bits.
    if (kind !== "symlink") chmodSync(file, entry.mode & 0o7777);
    const atime = entry.atime ?? entry.mtime;
    if (kind === "dir") this.dirTimes.set(rel, { atime, mtime: entry.mtime });
    else lutimesSync(file, atime, entry.mtime);
  }

  /**
   * A regular file: created exclusively (never through a symlink), written as its content arrives
   * (a file may be far larger than memory: a layer of 2 MB can hold 2 GiB of zeros), and given its
   * metadata through one descriptor.
   */
  private async writeFile(rel: string, entry: TarReadEntry): Promise<void> {
    const fd = openSync(
      this.abs(rel),
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    this.present.add(rel);
    try {
      for await (const chunk of entry.body) {
        let offset = 0;
        while (offset < chunk.length) offset += writeSync(fd, chunk, offset);
      }
      setOwnerSync(fd, entry.uid, entry.gid, entry.path);
      // After chown, which clears setuid and setgid bits.
      fchmodSync(fd, entry.mode & 0o7777);
      futimesSync(fd, entry.atime ?? entry.mtime, entry.mtime);
    } finally {
      closeSync(fd);
    }
  }

  async apply(entry: TarReadEntry): Promise<void> {
    const parts = entryComponents(entry.path);
    if (entry.xattrs.size > 0) {
      this.xattrCount += entry.xattrs.size;
      this.xattrExample ||= `${[...entry.xattrs.keys()][0]} on ${entry.path}`;
    }
    const whiteout = whiteoutOf(parts.at(-1) ?? "", entry.path);
    if (whiteout) return this.applyWhiteout(parts, whiteout, entry);
    const rel = parts.join("/");
    if (rel === "") {
      if (entry.type !== "Directory") throw rootNotDirectory(entry.path);
      this.rootHasEntry = true;
      await this.applyMetadata("", entry, "dir");
      return;
    }
    await this.ensureParents(parts, entry.path);
    if (this.whiteouts.delete(rel) && entry.type === "Directory") {
      // Deleted and created again by the same layer: a new, empty directory.
      this.opaque.add(rel);
    }
    const file = this.abs(rel);
    switch (entry.type) {
      case "Directory": {
        await this.clear(rel, true);
        if (!this.present.has(rel)) mkdirSync(file);
        this.knownDirs.add(rel);
        this.applyMetadata(rel, entry, "dir");
        return;
      }
      case "File": {
        await this.clear(rel, false);
        await this.writeFile(rel, entry);
        return;
      }
      case "SymbolicLink": {
        await this.clear(rel, false);
        symlinkSync(entry.linkpath, file);
        this.applyMetadata(rel, entry, "symlink");
        return;
      }
      case "Link":
        return this.applyHardLink(rel, entry);
      case "CharacterDevice":
      case "BlockDevice":
        if (this.options.rootless) {
          this.skippedDevices.push(entry.path);
          return;
        }
        await this.clear(rel, false);
        await makeSpecialFile(file, entry.type, entry.devmaj, entry.devmin);
        this.applyMetadata(rel, entry, "other");
        return;
      case "FIFO":
        await this.clear(rel, false);
        await makeSpecialFile(file, "FIFO");
        this.applyMetadata(rel, entry, "other");
        return;
    }
  }

  private async applyWhiteout(parts: string[], whiteout: Whiteout, entry: TarReadEntry): Promise<void> {
    const dir = parts.slice(0, -1).join("/");
    await this.ensureParents(parts, entry.path);
    if (whiteout.kind === "opaque") {
      this.opaque.add(dir);
      return;
    }
    if (whiteout.kind === "aufs") {
      this.options.warn?.(`skipped ${entry.path}: aufs metadata, which OCI layers do not use`);
      return;
    }
    const rel = dir === "" ? whiteout.name : `${dir}/${whiteout.name}`;
    // What this layer wrote at `rel` stays (it hides the layers below by itself); a directory
    // it made hides theirs only as the whiteout asks: it becomes opaque.
    if (this.present.has(rel)) {
      if ((await lstatOrUndefined(this.abs(rel)))?.isDirectory()) this.opaque.add(rel);
      return;
    }
    this.whiteouts.add(rel);
  }

  private async applyHardLink(rel: string, entry: TarReadEntry): Promise<void> {
    const targetParts = hardLinkTarget(entry.path, entry.linkpath);
    const targetRel = targetParts.join("/");
    // The target's parents are looked up as an entry's are: a link through a symbolic link the
    // layer planted would link a file from anywhere on the host into the layer.
    let prefix = "";
    let inLayer = true;
    for (const part of targetParts.slice(0, -1)) {
      prefix = prefix === "" ? part : `${prefix}/${part}`;
      if (this.knownDirs.has(prefix)) continue;
      const stat = this.present.has(prefix) ? await lstatOrUndefined(this.abs(prefix)) : undefined;
      if (stat && !stat.isDirectory()) {
        throw ownParentError(entry.path, prefix, stat.isSymbolicLink() ? "symlink" : "other", entry.linkpath);
      }
      if (!stat) {
        inLayer = false;
        break;
      }
    }
    const target = this.abs(targetRel);
    const targetStat = inLayer && this.present.has(targetRel) ? await lstatOrUndefined(target) : undefined;
    if (targetStat?.isDirectory()) throw hardLinkToDirectory(entry.path);
    const file = this.abs(rel);
    if (targetStat) {
      // Linked before the way is cleared: the target may be what is cleared (a link to itself,
      // or to a file inside the directory the link replaces).
      const linked = `${file}.tbuild-link-${randomBytes(6).toString("hex")}`;
      await link(target, linked);
      await this.clear(rel, false);
      await rename(linked, file);
      this.present.add(rel);
      return;
    }
    // A link to an entry of a layer below, unless this layer hid it (before the way is cleared,
    // which may take the marks that hide it): layers cannot share inodes, so it becomes a copy.
    const below = this.hidesBelow(targetRel) ? undefined : await this.lowerView.lookup(targetRel);
    if (below === undefined) throw hardLinkMissing(entry.path, entry.linkpath);
    const { stat } = below;
    if (stat.isDirectory()) throw hardLinkToDirectory(entry.path);
    await this.clear(rel, false);
    if (stat.isFile()) {
      await copyFile(below.source, file, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
    } else if (stat.isSymbolicLink()) {
      symlinkSync(readlinkSync(below.source), file);
    } else if (stat.isFIFO()) {
      await makeSpecialFile(file, "FIFO");
    } else if (stat.isCharacterDevice() || stat.isBlockDevice()) {
      if (this.options.rootless) {
        this.skippedDevices.push(entry.path);
        return;
      }
      const rdev = Number(stat.rdev);
      const type = stat.isCharacterDevice() ? "CharacterDevice" : "BlockDevice";
      await makeSpecialFile(
        file,
        type,
        Math.floor(rdev / 256) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
      );
    } else {
      throw hardLinkMissing(entry.path, entry.linkpath);
    }
    this.present.add(rel);
    await lchown(file, Number(stat.uid), Number(stat.gid));
    if (!stat.isSymbolicLink()) await chmod(file, Number(stat.mode & 0o7777n));
    await lutimes(file, stat.atime, stat.mtime);
  }

  /** Whether this layer hides what the layers below hold at `rel`: a whiteout of it or of a parent, or an opaque parent. */
  private hidesBelow(rel: string): boolean {
    let prefix = "";
    if (this.opaque.has("")) return true;
    for (const part of rel.split("/")) {
      prefix = prefix === "" ? part : `${prefix}/${part}`;
      if (this.whiteouts.has(prefix) || this.opaque.has(prefix)) return true;
    }
    return false;
  }

  /** Whiteouts for everything below that an opaque directory hides, recursing into directories it keeps. */
  private async hideBelow(rel: string, out: string[]): Promise<void> {
    for (const [name, below] of await this.lowerView.list(rel)) {
      const child = rel === "" ? name : `${rel}/${name}`;
      const here = this.present.has(child) ? await lstatOrUndefined(this.abs(child)) : undefined;
      if (!here) out.push(this.abs(child));
      else if (here.isDirectory() && below.stat.isDirectory()) await this.hideBelow(child, out);
    }
  }

  async finish(): Promise<void> {
    const whiteoutPaths: string[] = [];
    for (const rel of [...this.opaque].sort()) {
      const here = await lstatOrUndefined(this.abs(rel));
      if (here?.isDirectory() && !here.isSymbolicLink()) await this.hideBelow(rel, whiteoutPaths);
    }
    for (const rel of this.whiteouts) {
      if (!this.present.has(rel)) whiteoutPaths.push(this.abs(rel));
    }
    const unique = [...new Set(whiteoutPaths)].sort();
    await makeWhiteouts(unique);
    if (!this.rootHasEntry) {
      const below = await this.lowerView.lookup("");
      if (below) {
        await lchown(this.root, Number(below.stat.uid), Number(below.stat.gid));
        await chmod(this.root, Number(below.stat.mode & 0o7777n));
        this.dirTimes.set("", { atime: below.stat.atime, mtime: below.stat.mtime });
      } else {
        await chmod(this.root, 0o755);
      }
    }
    // Deepest first: setting a directory's times must come after every change inside it.
    const dirs = [...this.dirTimes.keys()].sort(
      (a, b) => b.split("/").length - a.split("/").length || (a < b ? 1 : -1),
    );
    for (const rel of dirs) {
      const times = this.dirTimes.get(rel)!;
      lutimesSync(this.abs(rel), times.atime, times.mtime);
    }
    if (this.skippedDevices.length > 0) {
      this.options.warn?.(
        `skipped ${this.skippedDevices.length} device node${this.skippedDevices.length === 1 ? "" : "s"} (${this.skippedDevices.slice(0, 3).join(", ")}${this.skippedDevices.length > 3 ? ", ..." : ""}): a user namespace cannot create devices`,
      );
    }
    if (this.xattrCount > 0) {
      this.options.warn?.(
        `skipped ${this.xattrCount} extended attribute${this.xattrCount === 1 ? "" : "s"} (${this.xattrExample}): tbuild does not set extended attributes yet`,
      );
    }
  }
}

/**
 * Unpacks a layer tar (gzip, zstd or uncompressed) into `dir`, which must not exist: into a
 * sibling temp directory first, renamed to `dir` when complete. Throws HostileLayerError, with
 * nothing left behind, for an entry that would write outside the layer.
 */
export async function unpackLayer(
  tar: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
  dir: string,
  options: UnpackOptions,
): Promise<void> {
  const target = path.resolve(dir);
  if (await lstatOrUndefined(target)) {
    throw new TbuildError("E_UNPACK_TARGET_EXISTS", `cannot unpack a layer into ${target}: it exists`);
  }
  const temp = path.join(
    path.dirname(target),
    `.tmp-${path.basename(target)}-${process.pid}-${randomBytes(6).toString("hex")}`,
  );
  await mkdir(temp, { mode: 0o700 });
  try {
    const unpacker = new LayerUnpacker(temp, options);
    const hashing = options.diffId ? new Sha256Stream() : undefined;
    let bytes: AsyncIterable<Uint8Array> = decompressed(tar);
    if (hashing) {
      const source = bytes;
      const piping = pipeline(Readable.from(source), hashing);
      piping.catch(() => {});
      bytes = hashing;
    }
    const skipped = (entryPath: string, reason: string) => options.warn?.(`skipped ${entryPath}: ${reason}`);
    for await (const entry of readTarEntries(bytes, {
      onSkip: skipped,
      ...(options.what ? { what: options.what } : {}),
    })) {
      options.signal?.throwIfAborted();
      try {
        await unpacker.apply(entry);
      } catch (err) {
        // A path beyond PATH_MAX, or a name beyond NAME_MAX: the layer is broken, not tbuild.
        if ((err as NodeJS.ErrnoException).code === "ENAMETOOLONG") {
          throw new InvalidLayerError(entry.path, "is too long for the file system (ENAMETOOLONG)");
        }
        throw err;
      }
    }
    options.signal?.throwIfAborted();
    if (hashing && options.diffId) {
      const actual = `sha256:${hashing.hash.digest("hex")}`;
      if (actual !== options.diffId) {
        throw new TbuildError(
          "E_DIGEST_MISMATCH",
          `${options.what ?? "the layer"}'s uncompressed content has digest ${actual}, not its diff_id ${options.diffId}; it was not unpacked`,
        );
      }
    }
    await unpacker.finish();
    try {
      await rename(temp, target);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another process unpacked the same layer meanwhile: its copy is as good as ours.
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      await rm(temp, { recursive: true, force: true });
    }
  } catch (err) {
    // A layer refused early is not read to its end: its source (a blob file, a download) is closed.
    (tar as { destroy?: () => void }).destroy?.();
    // Synchronously: a layer refused for a path beyond PATH_MAX leaves a tree some 2,000
    // directories deep, and the asynchronous rm sends each of its thousands of calls through
    // libuv's thread pool: 1.8 s of CPU for that tree where rmSync takes 0.2 s.
    try {
      rmSync(temp, { recursive: true, force: true });
    } catch {
      // Best effort, as before: the layer's own error is the one to report.
    }
    if (options.what && err instanceof HostileLayerError)
      throw new HostileLayerError(err.entry, err.reason, options.what);
    if (options.what && err instanceof InvalidLayerError)
      throw new InvalidLayerError(err.entry, err.reason, options.what);
    throw err;
  }
}
