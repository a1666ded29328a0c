/**
 * One registry cache ref `REPO:TAG` written by several stores (the workers of a pool, CI runners)
 * without any writer losing its cache to another's, where buildx's last writer wins.
 *
 * - Each store is one writer, named by a random id made once and kept in `<store>/cache/writer-id`.
 * - A writer pushes its own cache under its own tag, `TAG--tbuild-cache-<16 hex of the id's
 *   sha256>` (when TAG is too long for that, its first characters and a hash of it stand for
 *   it). `--tbuild-cache-` is reserved: `--cache-to` refuses a TAG holding it (and a digest), so
 *   no writer tag is ever another ref's TAG.
 * - Then it replaces `REPO:TAG` with the merge of every writer's cache (a cache manifest like any
 *   other, readable alone), whose WRITERS_ANNOTATION lists the writers' tags with the manifest
 *   digest merged from each. A registry has no locks: the writer reads the index and the tag list,
 *   writes, reads the index again, and starts over when a concurrent writer's index left it out.
 * - An importer reads the index, and also the tag list for writer tags of TAG that the index lost
 *   in a race, and merges what the index does not already hold.
 */
import { createHash, randomBytes } from "node:crypto";
import { link, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import { writeFileAtomic } from "../oci/atomic-file.js";
import { makeDirectories } from "../oci/make-directories.js";
import { parseReference } from "../oci/reference.js";
import type { CacheDescription, CachedMount, ExportedRecord } from "./cache-description.js";
import type { LayerRef } from "./worker.js";

/** What separates a ref's tag from a writer's id in the writer's tag. */
export const WRITER_TAG_INFIX = "--tbuild-cache-";
/** The manifest annotation at `REPO:TAG` naming the writers merged there: JSON `{ tag: digest }`. */
export const WRITERS_ANNOTATION = "dev.tbuild.cache.writers";
/** How many writers' caches one ref merges: a bound on the reads of an export and an import. */
export const MAX_CACHE_WRITERS = 64;

const MAX_TAG_LENGTH = 128;
const WRITER_ID_LENGTH = 16;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** The tag a writer's own cache goes under, for the ref tag `tag`. */
export function writerTag(tag: string, writer: string): string {
  return `${writerTagBase(tag)}${WRITER_TAG_INFIX}${writer}`;
}

/** Whether `candidate` is some writer's tag of the ref tag `tag`. */
export function isWriterTagOf(tag: string, candidate: string): boolean {
  const prefix = `${writerTagBase(tag)}${WRITER_TAG_INFIX}`;
  return (
    candidate.startsWith(prefix) &&
    /^[0-9a-f]+$/.test(candidate.slice(prefix.length)) &&
    candidate.length === prefix.length + WRITER_ID_LENGTH
  );
}

function writerTagBase(tag: string): string {
  const room = MAX_TAG_LENGTH - WRITER_TAG_INFIX.length - WRITER_ID_LENGTH;
  if (tag.length <= room) return tag;
  const hash = createHash("sha256").update(tag).digest("hex").slice(0, 12);
  return `${tag.slice(0, room - hash.length - 1)}-${hash}`;
}

/**
 * Refuses a `--cache-to` registry ref that cannot be shared by writers: a digest (a cache is
 * written under a tag), or a tag that could be taken for a writer's.
 */
export function checkCacheRef(reference: string, spec: string): void {
  const ref = parseReference(reference);
  if (ref.digest !== undefined) {
    throw new UsageError(
      `--cache-to ${spec}: a registry cache is written under a tag, not a digest (ref=REPOSITORY:TAG)`,
    );
  }
  if (ref.tag?.includes(WRITER_TAG_INFIX)) {
    throw new UsageError(
      `--cache-to ${spec}: tags holding "${WRITER_TAG_INFIX}" name the caches of single writers; name the shared ref with another tag`,
    );
  }
}

/** The writers index of a cache manifest's annotations: valid writer tags of `tag` and digests only, at most MAX_CACHE_WRITERS. */
export function writersIn(annotations: unknown, tag: string): Map<string, string> {
  const writers = new Map<string, string>();
  const text = (annotations as Record<string, unknown> | undefined)?.[WRITERS_ANNOTATION];
  if (typeof text !== "string") return writers;
  let listed: unknown;
  try {
    listed = JSON.parse(text);
  } catch {
    return writers;
  }
  if (listed === null || typeof listed !== "object" || Array.isArray(listed)) return writers;
  for (const [writer, digest] of Object.entries(listed)) {
    if (writers.size >= MAX_CACHE_WRITERS) break;
    if (isWriterTagOf(tag, writer) && typeof digest === "string" && DIGEST.test(digest))
      writers.set(writer, digest);
  }
  return writers;
}

/** The annotations naming `writers` (sorted, so that the same writers give the same manifest). */
export function writersAnnotations(writers: Map<string, string>): Record<string, string> {
  const sorted = Object.fromEntries([...writers].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return { [WRITERS_ANNOTATION]: JSON.stringify(sorted) };
}

/**
 * The descriptions of several writers as one: a key's first record wins (its result is as good as
 * any other's), every other key is kept; equal layers become one object, so that they are written
 * once. Cache mounts likewise, by mount key: one blob per mount, the first description's (a
 * writer's own, merged first, is its newest content).
 */
export function mergeCacheDescriptions(descriptions: CacheDescription[]): CacheDescription {
  const byKey = new Map<string, ExportedRecord>();
  const layers = new Map<string, LayerRef>();
  const canonical = (layer: LayerRef) => {
    const known = layers.get(layer.descriptor.digest);
    if (known) return known;
    layers.set(layer.descriptor.digest, layer);
    return layer;
  };
  for (const description of descriptions) {
    for (const record of description.records) {
      if (byKey.has(record.key)) continue;
      byKey.set(record.key, { ...record, layers: record.layers.map(canonical) });
    }
  }
  const records = [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const mounts = new Map<string, CachedMount>();
  for (const description of descriptions) {
    for (const mount of description.mounts ?? []) {
      if (!mounts.has(mount.record.key)) mounts.set(mount.record.key, mount);
    }
  }
  const sortedMounts = [...mounts.values()].sort((a, b) =>
    a.record.key < b.record.key ? -1 : a.record.key > b.record.key ? 1 : 0,
  );
  return { records, ...(sortedMounts.length > 0 ? { mounts: sortedMounts } : {}) };
}

/**
 * The writer name of one part (a platform) of a build made by several at once from `writer`'s
 * store: a writer of its own, the same for that part on every build, so that its tag is replaced
 * by its next export and never added to.
 */
export function partWriter(writer: string, part: string): string {
  return createHash("sha256").update(`${writer}\n${part}`).digest("hex").slice(0, WRITER_ID_LENGTH);
}

/**
 * The store's writer name (16 hex digits), made on its first registry cache export and kept in
 * `<store>/cache/writer-id`; builds exporting at once from one store agree on it. A copied store
 * shares it: delete the file in the copy to make it a writer of its own.
 */
export async function storeCacheWriter(storeRoot: string): Promise<string> {
  const file = path.join(storeRoot, "cache", "writer-id");
  const read = () =>
    readFile(file, "utf8").then(
      (text) => (/^[0-9a-f]{32}$/.test(text.trim()) ? text.trim() : undefined),
      (err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return undefined;
        throw err;
      },
    );
  const writerOf = (id: string) => createHash("sha256").update(id).digest("hex").slice(0, WRITER_ID_LENGTH);
  try {
    const known = await read();
    if (known !== undefined) return writerOf(known);
    await makeDirectories(path.dirname(file));
    const id = randomBytes(16).toString("hex");
    // Linked into place, never renamed: of two builds making it at once, the first one's stands.
    const temp = `${file}.${process.pid}-${randomBytes(6).toString("hex")}.tmp`;
    await writeFile(temp, `${id}\n`, { flag: "wx" });
    try {
      await link(temp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      // A damaged id (not ours to read) is replaced whole.
      if ((await read()) === undefined) await writeFileAtomic(file, `${id}\n`);
    } finally {
      await rm(temp, { force: true });
    }
    const made = await read();
    if (made === undefined) throw new Error(`${file} holds no writer id`);
    return writerOf(made);
  } catch (err) {
    throw new TbuildError(
      "E_CACHE_EXPORT",
      `cannot read or make this store's cache writer id at ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); check that the store is writable`,
      { cause: err },
    );
  }
}
