/**
 * A source layer (the build context, a `--build-context` directory) unpacked as its tar is
 * written, from the same bytes, so that the copies and RUN bind mounts reading it find it
 * unpacked. The bytes of a small file that the previous snapshot's tar holds with the same
 * sha256, mode and mtime are taken from that tar (`known`), so an unchanged file is not read
 * from the context again.
 *
 * When nothing can be reading the previous snapshot (Snapshotter.claimLayer), it is taken and
 * updated in place: a file whose sha256, mode, mtime and size are those the previous record and
 * the disk say it has is left as it is, everything else is written as a new snapshot writes it,
 * and what the new tar does not hold is removed. So editing one file of a large context writes
 * one file, not all of them. The result is the tree a new snapshot would be, entry for entry
 * (test/worker/source-snapshot-update.test.ts compares the two): no inode is shared with any
 * other directory, so every file has one link, as in a fresh build (the differential build test
 * caught hard links to an older snapshot showing 2 links in a RUN where a fresh build shows 1).
 *
 * Anything the tar holds that this cannot reproduce exactly (a hard link, a FIFO) abandons the
 * snapshot: the layer is then unpacked from its tar when a step needs it, as any layer is.
 */

import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { mkdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../../oci/atomic-file.js";
import type { ContentStore } from "../../oci/store/content.js";
import { childPath } from "../child-path.js";
import type { Snapshotter } from "../snapshot/index.js";
import type { TreeSink } from "./context-walk.js";

interface PendingDirectory {
  dir: string;
  mode: number;
  mtime: Date;
}

/** What `<snapshots>/sources/<source>.json` records of a source's latest snapshot. */
interface SourceRecord {
  /** Its diff ID: the unpacked layer it is, and the digest of its (uncompressed) tar. */
  layer: string;
  /**
   * Each small file's sha256 (hex), mode (octal), mtime (ms) and where its content starts in the
   * tar, space-separated, by path.
   */
  files?: Record<string, string>;
}

/** A previous tar larger than this is not read into memory: its files are read again instead. */
const PREVIOUS_TAR_BYTES = 64 << 20;

export class SourceSnapshot implements TreeSink {
  private readonly temp: string;
  /** What the previous snapshot of this source recorded of its files. */
  private readonly previousFiles: Record<string, string>;
  /** The previous snapshot's tar, when the store still has it and it is small enough. */
  private readonly previousTar: Buffer | undefined;
  /** What this snapshot's small files are, by path (see SourceRecord), for the next one. */
  private readonly files: Record<string, string> = {};
  private readonly record: string;
  private readonly directories: PendingDirectory[] = [];
  private abandoned = false;
  private failure: unknown;
  /**
   * Set when `temp` holds the previous snapshot, taken to be updated in place: the paths the new
   * tar holds, so that finish removes the others.
   */
  private readonly kept: Set<string> | undefined;
  /** The directories this snapshot made or kept, as directories: where its entries may go. */
  private readonly madeDirs = new Set<string>([""]);

  private constructor(
    temp: string,
    previous: { files: Record<string, string>; tar: Buffer | undefined } | undefined,
    record: string,
    updating: boolean,
  ) {
    this.temp = temp;
    this.previousFiles = previous?.files ?? {};
    this.previousTar = previous?.tar;
    this.record = record;
    this.kept = updating ? new Set() : undefined;
  }

  /**
   * Starts the snapshot of the source named `sourceKey` (the same directory read with the same
   * selection) in a temp directory beside the snapshotter's layers.
   */
  static async start(
    snapshotter: Snapshotter,
    sourceKey: string,
    content: ContentStore,
  ): Promise<SourceSnapshot> {
    const layers = snapshotter.layersDir;
    await mkdir(layers, { recursive: true, mode: 0o700 });
    const record = path.join(snapshotter.root, "sources", `${sourceKey}.json`);
    let previous: { files: Record<string, string>; tar: Buffer | undefined } | undefined;
    let previousLayer: string | undefined;
    try {
      const { layer, files } = JSON.parse(await readFile(record, "utf8")) as SourceRecord;
      previous = { files: files ?? {}, tar: await readSmallBlob(content, layer) };
      previousLayer = layer;
    } catch {
      // None yet: every file is read.
    }
    const temp = path.join(layers, `.tmp-source-${process.pid}-${randomBytes(6).toString("hex")}`);
    // A source layer is a stack of one: its chain ID is its diff ID.
    const updating = previousLayer !== undefined && (await snapshotter.claimLayer(previousLayer, temp));
    if (!updating) await mkdir(temp, { mode: 0o700 });
    return new SourceSnapshot(temp, previous, record, updating);
  }

  directory(rel: string, mode: number, mtime: Date): void {
    this.attempt(() => {
      const dir = childPath(this.temp, rel);
      this.madeDirs.add(rel);
      if (this.claim(rel)) {
        const st = lstatSync(dir, { throwIfNoEntry: false });
        if (st?.isDirectory()) {
          this.directories.push({ dir, mode, mtime });
          return;
        }
        if (st) rmSync(dir);
      }
      mkdirSync(dir, { mode: 0o700 });
      // Its own metadata last, once its entries are made (making them moves its mtime).
      this.directories.push({ dir, mode, mtime });
    });
  }

  /**
   * The content of the small file `rel` as the previous snapshot's tar holds it, if that file had
   * this sha256 (hex), mode, mtime and size: what a new tar of the source can take instead of
   * reading the file.
   */
  known(rel: string, sha256: string, mode: number, mtime: Date, size: number): Buffer | undefined {
    const before = this.previousFiles[rel];
    if (this.previousTar === undefined || before === undefined) return undefined;
    const offset = recordOffset(before, made(sha256, mode, mtime));
    if (offset === undefined || offset + size > this.previousTar.length) return undefined;
    return this.previousTar.subarray(offset, offset + size);
  }

  file(rel: string, mode: number, mtime: Date, content: Buffer, offset: number, sha256?: string): void {
    this.attempt(() => {
      const file = childPath(this.temp, rel);
      const identity = made(sha256 ?? createHash("sha256").update(content).digest("hex"), mode, mtime);
      this.files[rel] = `${identity} ${offset}`;
      if (this.claim(rel)) {
        if (this.unchanged(rel, file, identity, mode, mtime, content.length)) return;
        rmSync(file, { recursive: true, force: true });
      }
      writeFileSync(file, content, { flag: "wx", mode: 0o600 });
      this.finishFile(file, mode, mtime);
    });
  }

  largeFile(rel: string, mode: number, mtime: Date): { write(chunk: Buffer): void; end(): void } {
    const file = childPath(this.temp, rel);
    let fd: number | undefined;
    this.attempt(() => {
      if (this.claim(rel)) rmSync(file, { recursive: true, force: true });
      fd = openSync(file, "wx", 0o600);
    });
    return {
      write: (chunk) => this.attempt(() => fd !== undefined && writeSync(fd, chunk)),
      end: () =>
        this.attempt(() => {
          if (fd === undefined) return;
          closeSync(fd);
          fd = undefined;
          this.finishFile(file, mode, mtime);
        }),
    };
  }

  symlink(rel: string, target: string, mtime: Date): void {
    this.attempt(() => {
      const file = childPath(this.temp, rel);
      if (this.claim(rel)) rmSync(file, { recursive: true, force: true });
      symlinkSync(target, file);
      lchownSync(file, 0, 0);
      lutimesSync(file, mtime, mtime);
    });
  }

  other(): void {
    this.abandoned = true;
  }

  /**
   * Once the tar is written: the snapshot becomes the unpacked layer `diffId` (a source layer is a
   * stack of one, whose chain ID is its diff ID), and its record the one the next snapshot of this
   * source takes unchanged files' bytes from. False when it was abandoned; nothing of it is left then.
   */
  async finish(snapshotter: Snapshotter, diffId: string): Promise<boolean> {
    if (this.abandoned) {
      await this.discard();
      return false;
    }
    try {
      if (this.kept) {
        removeUnkept(this.temp, "", this.kept);
        // The root as a new snapshot's is (a COPY of the whole source gives its destination the
        // root's times): made now, mode 0700, by root.
        lchownSync(this.temp, 0, 0);
        chmodSync(this.temp, 0o700);
        const now = new Date();
        lutimesSync(this.temp, now, now);
      }
      for (const { dir, mode, mtime } of this.directories.reverse()) {
        lchownSync(dir, 0, 0);
        chmodSync(dir, mode);
        lutimesSync(dir, mtime, mtime);
      }
      const target = snapshotter.layerDir(diffId);
      try {
        await rename(this.temp, target);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // Unpacked already (an earlier build, or another process meanwhile): that one is as good.
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
        await this.discard();
      }
      await writeFileAtomic(
        this.record,
        JSON.stringify({ layer: diffId, files: this.files } satisfies SourceRecord),
        { makeDirectory: true },
      );
      return true;
    } catch (err) {
      await this.discard();
      throw err;
    }
  }

  /** Removes the temp directory (a failed build's, or an abandoned snapshot's). */
  async discard(): Promise<void> {
    await rm(this.temp, { recursive: true, force: true });
  }

  /** Why the snapshot was abandoned, if a file system call failed (the tar itself is unaffected). */
  get error(): unknown {
    return this.failure;
  }

  /**
   * When updating the previous snapshot: notes `rel` as one of the new tree's paths (so finish
   * keeps it), after checking that it goes into a directory this snapshot made or kept as one. A
   * new snapshot could write nowhere else (the parent would not exist), and an updated one must
   * not either: the previous tree may have a symlink there, which a write would follow.
   */
  private claim(rel: string): boolean {
    if (!this.kept) return false;
    const slash = rel.lastIndexOf("/");
    const parent = slash < 0 ? "" : rel.slice(0, slash);
    if (!this.madeDirs.has(parent)) throw new Error(`${rel}: its directory is not part of the snapshot`);
    this.kept.add(rel);
    return true;
  }

  /**
   * Whether the previous snapshot's `file` is already what this one writes there: the previous
   * record gave it this sha256, mode and mtime, and the disk agrees on type, owner, mode, mtime,
   * size and a single link.
   */
  private unchanged(
    rel: string,
    file: string,
    identity: string,
    mode: number,
    mtime: Date,
    size: number,
  ): boolean {
    const before = this.previousFiles[rel];
    if (before === undefined || recordOffset(before, identity) === undefined) return false;
    const st = lstatSync(file, { throwIfNoEntry: false });
    return (
      st?.isFile() === true &&
      st.nlink === 1 &&
      st.uid === 0 &&
      st.gid === 0 &&
      (st.mode & 0o7777) === mode &&
      st.mtimeMs === mtime.getTime() &&
      st.size === size
    );
  }

  /** Owner, then mode (a chown clears setuid/setgid bits), then times. */
  private finishFile(file: string, mode: number, mtime: Date): void {
    lchownSync(file, 0, 0);
    chmodSync(file, mode);
    lutimesSync(file, mtime, mtime);
  }

  /** A failing call abandons the snapshot, never the tar being written beside it. */
  private attempt(work: () => unknown): void {
    if (this.abandoned) return;
    try {
      work();
    } catch (err) {
      this.abandoned = true;
      this.failure = err;
    }
  }
}

/** Removes what is below `dir/rel` and not in `kept` (relative paths), deepest first. */
function removeUnkept(dir: string, rel: string, kept: ReadonlySet<string>): void {
  for (const entry of readdirSync(childPath(dir, rel), { withFileTypes: true })) {
    const child = rel === "" ? entry.name : `${rel}/${entry.name}`;
    if (!kept.has(child)) rmSync(childPath(dir, child), { recursive: true, force: true });
    else if (entry.isDirectory()) removeUnkept(dir, child, kept);
  }
}

/** A file's identity in a source record: sha256 (hex), mode (octal) and mtime (ms). */
function made(sha256: string, mode: number, mtime: Date): string {
  return `${sha256} ${mode.toString(8)} ${mtime.getTime()}`;
}

/** The whole blob, if the store has it and it is no larger than PREVIOUS_TAR_BYTES. */
async function readSmallBlob(content: ContentStore, digest: string): Promise<Buffer | undefined> {
  try {
    const size = await content.size(digest);
    if (size === undefined || size > PREVIOUS_TAR_BYTES) return undefined;
    return await content.readBytes(digest);
  } catch {
    return undefined; // Pruned meanwhile: the files are read instead.
  }
}

/** The tar offset a record's file entry gives after `identity`, if the entry has that identity. */
function recordOffset(entry: string, identity: string): number | undefined {
  if (!entry.startsWith(identity) || entry[identity.length] !== " ") return undefined;
  const offset = Number(entry.slice(identity.length + 1));
  return Number.isSafeInteger(offset) && offset >= 0 ? offset : undefined;
}
