/**
 * Cache mounts moved out of a store and into another (`tbuild cache export|import`), as a plain
 * directory or an archive (`.tar`, `.tar.zst`/`.tzst`, `.tar.gz`/`.tgz`): an index file,
 * INDEX_NAME, listing what each mount is, and each mount's content in a directory named by its
 * key, with owners, modes, times and links kept. A directory export is that archive unpacked.
 *
 * Import seeds: a mount the store already has keeps its content, as a build's own mount is at
 * least as warm as a copy of it; an imported mount counts as used now, so that pruning by age does
 * not take it before a build could.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { lstat, mkdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { directorySize } from "../../build/gc.js";
import { TAR_END } from "../../oci/archive/tar.js";
import { replaceFile } from "../../oci/atomic-file.js";
import {
  CacheMountArchiveError,
  ChunkPool,
  FRAME_BYTES,
  packTree,
  type TreeSize,
  TreeTarWriter,
  unpackTree,
  zstdFrames,
} from "./archive.js";
import {
  type CacheMountInfo,
  type CacheMountRecord,
  CacheMountStore,
  parseCacheMountRecord,
} from "./store.js";

/** The index of an export: its name, in a directory or as an archive's first entry. */
export const INDEX_NAME = "tbuild-cache-mounts.json";

interface BundleIndex {
  version: 1;
  mounts: Omit<CacheMountRecord, "lastUsed">[];
}

export type BundleFormat = "directory" | "tar" | "tar.zst" | "tar.gz";

/** What an output path names: `-` is a tar on stdout; otherwise its extension says, and a name without one is a directory. */
export function bundleFormatOf(output: string): BundleFormat {
  if (output === "-" || /\.tar$/.test(output)) return "tar";
  if (/\.(tar\.zst|tzst)$/.test(output)) return "tar.zst";
  if (/\.(tar\.gz|tgz)$/.test(output)) return "tar.gz";
  return "directory";
}

/** One exported mount, as reported. */
export interface MovedMount {
  record: Omit<CacheMountRecord, "lastUsed">;
  bytes: number;
  /** Import only: the store had it, and kept its own content. */
  kept?: boolean;
}

const recordOf = ({
  key,
  id,
  sharing,
  target,
  base,
}: CacheMountInfo): Omit<CacheMountRecord, "lastUsed"> => ({
  key,
  id,
  sharing,
  target,
  ...(base ? { base } : {}),
});

/**
 * The archive of `mounts`: the index, then each mount's tree under its key, its size counted in
 * `moved`; written by one TreeTarWriter (of `pool`, when given), so that its chunks keep their size
 * from one mount to the next.
 */
async function* bundleTar(
  mounts: CacheMountInfo[],
  moved: MovedMount[],
  pool?: ChunkPool,
): AsyncGenerator<Buffer> {
  const index: BundleIndex = { version: 1, mounts: mounts.map(recordOf) };
  const text = Buffer.from(`${JSON.stringify(index, null, 2)}\n`);
  const now = new Date(Math.floor(Date.now() / 1000) * 1000);
  const writer = new TreeTarWriter(pool);
  writer.content(
    { path: INDEX_NAME, type: "File", mode: 0o644, uid: 0, gid: 0, size: text.length, mtime: now },
    text,
  );
  for (const [i, mount] of mounts.entries()) {
    const size: TreeSize = { bytes: 0 };
    yield* packTree(mount.data, `${mount.key}/`, undefined, size, writer);
    moved[i]!.bytes = size.bytes;
  }
  writer.bytes(TAR_END);
  yield* writer.rest();
}

/**
 * Writes `mounts` to `output` (a directory, an archive file, or `-` with `stdout`). A file is
 * replaced whole or not at all; in a directory, each mount's directory is replaced.
 */
export async function exportCacheMounts(
  mounts: CacheMountInfo[],
  output: string,
  options: { stdout?: NodeJS.WritableStream; rootless: boolean; signal?: AbortSignal },
): Promise<MovedMount[]> {
  const format = bundleFormatOf(output);
  const moved: MovedMount[] = mounts.map((m) => ({ record: recordOf(m), bytes: 0 }));
  if (output === "-") {
    await pipeline(Readable.from(bundleTar(mounts, moved)), options.stdout!, { end: false });
    return moved;
  }
  if (format === "directory") {
    await mkdir(output, { recursive: true });
    for (const [i, mount] of mounts.entries()) {
      const dest = path.join(output, mount.key);
      const size: TreeSize = { bytes: 0 };
      const doomed = `${dest}.old-${randomBytes(4).toString("hex")}`;
      await rename(dest, doomed).catch(() => {});
      await unpackTree(
        Readable.from(
          (async function* () {
            yield* packTree(mount.data, "", undefined, size);
            yield TAR_END;
          })(),
        ),
        dest,
        {
          rootless: options.rootless,
          what: `cache mount ${mount.id}`,
          ...(options.signal ? { signal: options.signal } : {}),
        },
      );
      await rm(doomed, { recursive: true, force: true });
      moved[i]!.bytes = size.bytes;
    }
    const index: BundleIndex = { version: 1, mounts: mounts.map(recordOf) };
    await replaceFile(path.join(output, INDEX_NAME), async (temp) => {
      await pipeline(Readable.from([`${JSON.stringify(index, null, 2)}\n`]), createWriteStream(temp));
    });
    return moved;
  }
  // Chunks of a frame each, given back to the pool by zstdFrames; elsewhere chunks are kept.
  const pool = format === "tar.zst" ? new ChunkPool(FRAME_BYTES) : undefined;
  const tar = bundleTar(mounts, moved, pool);
  const compressed =
    format === "tar.zst"
      ? [Readable.from(zstdFrames(tar, pool))]
      : format === "tar.gz"
        ? [Readable.from(tar), createGzip({ chunkSize: 1 << 20 })]
        : [Readable.from(tar)];
  await replaceFile(output, async (temp) => {
    await pipeline([...compressed, createWriteStream(temp)], {
      ...(options.signal ? { signal: options.signal } : {}),
    });
  });
  return moved;
}

/**
 * Seeds the store's cache mounts from `input` (a directory or an archive, as exportCacheMounts
 * writes them; `-`: an archive on `options.stdin`). An archive is unpacked whole into the store first, then each mount is moved into
 * place; nothing of a refused archive stays.
 */
export async function importCacheMounts(
  storeRoot: string,
  input: string,
  options: {
    rootless: boolean;
    warn?(message: string): void;
    signal?: AbortSignal;
    /** Where `-` reads from: an archive. */
    stdin?: NodeJS.ReadableStream;
  },
): Promise<MovedMount[]> {
  const store = new CacheMountStore(storeRoot);
  await mkdir(store.dir, { recursive: true });
  const fromStdin = input === "-";
  const info = fromStdin
    ? undefined
    : await lstat(input).catch((err: NodeJS.ErrnoException) => {
        throw new CacheMountArchiveError(
          `cannot read ${input} (${err.code ?? err.message}): name a directory or an archive tbuild cache export wrote`,
          err,
        );
      });
  const what = `the cache mounts of ${input}`;
  const unpackOptions = {
    rootless: options.rootless,
    what,
    ...(options.warn ? { warn: options.warn } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
  let source = input;
  let unpacked: string | undefined;
  /** Each unpacked mount's size, by key: counted while unpacking rather than by walking it again. */
  const sizes = new Map<string, number>();
  if (!info?.isDirectory()) {
    unpacked = path.join(store.dir, `.import-${randomBytes(6).toString("hex")}`);
    const archive = fromStdin ? options.stdin! : createReadStream(input, { highWaterMark: 1 << 20 });
    await unpackTree(archive, unpacked, {
      ...unpackOptions,
      what: fromStdin ? "the cache mounts on stdin" : what,
      sizes,
    });
    source = unpacked;
  }
  try {
    const records = await readIndex(source, input);
    const moved: MovedMount[] = [];
    for (const record of records) {
      const from = path.join(source, record.key);
      if (!(await lstat(from).catch(() => undefined))?.isDirectory()) {
        throw new CacheMountArchiveError(
          `${input} lists cache mount ${record.id} (${record.key}) but holds no directory for it`,
        );
      }
      const bytes = unpacked !== undefined ? (sizes.get(record.key) ?? 0) : await directorySize(from);
      const outcome = await store.seed({ ...record, lastUsed: Date.now() }, async (dir) => {
        if (unpacked !== undefined) await rename(from, dir);
        else
          await unpackTree(
            Readable.from(
              (async function* () {
                yield* packTree(from);
                yield TAR_END;
              })(),
            ),
            dir,
            { ...unpackOptions, what: `cache mount ${record.id} of ${input}` },
          );
      });
      moved.push({ record, bytes, ...(outcome === "kept" ? { kept: true } : {}) });
    }
    return moved;
  } finally {
    if (unpacked !== undefined) await rm(unpacked, { recursive: true, force: true });
  }
}

async function readIndex(dir: string, input: string): Promise<Omit<CacheMountRecord, "lastUsed">[]> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path.join(dir, INDEX_NAME), "utf8"));
  } catch (err) {
    throw new CacheMountArchiveError(
      `${input} is no export of cache mounts: its ${INDEX_NAME} cannot be read (${(err as Error).message})`,
      err,
    );
  }
  const mounts = (value as Partial<BundleIndex> | null)?.mounts;
  if ((value as Partial<BundleIndex> | null)?.version !== 1 || !Array.isArray(mounts)) {
    throw new CacheMountArchiveError(
      `${input}: its ${INDEX_NAME} is not version 1 of tbuild's cache mount index`,
    );
  }
  const records: Omit<CacheMountRecord, "lastUsed">[] = [];
  const seen = new Set<string>();
  for (const entry of mounts) {
    const record = parseCacheMountRecord({ ...(entry as object), lastUsed: 0 });
    if (!record)
      throw new CacheMountArchiveError(
        `${input}: its ${INDEX_NAME} lists a mount that is not valid: ${JSON.stringify(entry).slice(0, 200)}`,
      );
    if (seen.has(record.key)) continue;
    seen.add(record.key);
    const { lastUsed: _, ...rest } = record;
    records.push(rest);
  }
  return records;
}
