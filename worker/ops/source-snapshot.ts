/**
 * A source layer (the build context, a `--build-context` directory) unpacked as its tar is
 * written, from the same bytes, so that the copies and RUN bind mounts reading it find it
 * unpacked. The bytes of a small file that the previous snapshot's tar holds with the same
 * sha256, mode and mtime are taken from that tar (`known`), so an unchanged file is not read
 * from the context again.
 *
 * Every file is written: a snapshot shares no inode with an older one, since a RUN that mounts
 * the context sees its files' link counts (the differential build test caught an unchanged file
 * linked from the previous snapshot showing 2 links where a fresh build shows 1). Anything the tar
 * holds that this cannot reproduce exactly (a hard link, a FIFO) abandons the snapshot: the layer
 * is then unpacked from its tar when a step needs it, as any layer is.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  lchownSync,
  lutimesSync,
  mkdirSync,
  openSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
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

  private constructor(
    temp: string,
    previous: { files: Record<string, string>; tar: Buffer | undefined } | undefined,
    record: string,
  ) {
    this.temp = temp;
    this.previousFiles = previous?.files ?? {};
    this.previousTar = previous?.tar;
    this.record = record;
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
    try {
      const { layer, files } = JSON.parse(await readFile(record, "utf8")) as SourceRecord;
      previous = { files: files ?? {}, tar: await readSmallBlob(content, layer) };
    } catch {
      // None yet: every file is read.
    }
    const temp = path.join(layers, `.tmp-source-${process.pid}-${randomBytes(6).toString("hex")}`);
    await mkdir(temp, { mode: 0o700 });
    return new SourceSnapshot(temp, previous, record);
  }

  directory(rel: string, mode: number, mtime: Date): void {
    this.attempt(() => {
      const dir = childPath(this.temp, rel);
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
      writeFileSync(file, content, { flag: "wx", mode: 0o600 });
      this.finishFile(file, mode, mtime);
    });
  }

  largeFile(rel: string, mode: number, mtime: Date): { write(chunk: Buffer): void; end(): void } {
    const file = childPath(this.temp, rel);
    let fd: number | undefined;
    this.attempt(() => {
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
      await mkdir(path.dirname(this.record), { recursive: true });
      const temp = `${this.record}.${process.pid}.tmp`;
      await writeFile(temp, JSON.stringify({ layer: diffId, files: this.files } satisfies SourceRecord));
      await rename(temp, this.record);
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
