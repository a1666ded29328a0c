/**
 * The local image store: names → manifests or indexes, kept where an OCI image layout keeps them,
 * in `<root>/index.json`, each name as the `org.opencontainers.image.ref.name` annotation (the full
 * normalized reference, e.g. `docker.io/library/busybox:latest`). So `skopeo inspect
 * oci:$TBUILD_ROOT:docker.io/library/busybox:latest` and `umoci` read the store as it is.
 *
 * Every change to index.json happens under a lock (proper-lockfile) and is written to a temp file,
 * flushed and renamed over the old one: readers never lock and never see half a file, and a kill at
 * any point leaves either the old or the new index.
 */
import { randomBytes } from "node:crypto";
import { lstat, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { TbuildError } from "../../errors/index.js";
import { writeFileAtomic } from "../atomic-file.js";
import { formatReference, type ImageReference, parseReference, repositoryName } from "../reference.js";
import {
  ANNOTATION_REF_NAME,
  type Descriptor,
  type Index,
  isIndexMediaType,
  isManifestMediaType,
  type Manifest,
  MediaType,
} from "../spec.js";
import { type ContentStore, DiskFullError, parseDigest } from "./content.js";
import { ownStart, processAlive } from "./process-liveness.js";

export interface ImageRecord {
  /** The full normalized reference, e.g. `docker.io/library/busybox:latest`. */
  name: string;
  /** The manifest or index the name points to (without the name annotation). */
  descriptor: Descriptor;
}

/** A name the store does not hold; says how to see what it holds and how to get it. */
export class ImageNotFoundError extends TbuildError {
  readonly imageName: string;

  constructor(name: string) {
    super(
      "E_IMAGE_UNKNOWN",
      `image ${name} is not in the local store: run 'tbuild images' to list the images there, or 'tbuild pull ${name}' to fetch it`,
    );
    this.imageName = name;
  }
}

/** A blob an image needs is not in the store (a partial copy, or removed by a concurrent collector). */
export class MissingContentError extends TbuildError {
  constructor(name: string, digest: string, what: string) {
    super(
      "E_MISSING_CONTENT",
      `cannot record ${name}: its ${what} ${digest} is not in the store (another tbuild may have just removed it); run the command again`,
    );
  }
}

/**
 * On a name's entry: the index its image was pulled from (a registry's name for several
 * platforms), so that another platform's image of the same index can be found for that name.
 */
export const ANNOTATION_PULLED_INDEX = "dev.tbuild.pulled-from-index";

/** The store's index.json is not an image index: something other than tbuild wrote it. */
export class CorruptStoreError extends TbuildError {
  constructor(file: string, reason: string) {
    super("E_STORE_CORRUPT", `the image store index ${file} is unreadable (${reason}); repair or remove it`);
  }
}

/** `busybox` → `docker.io/library/busybox:latest`; throws InvalidReferenceError. */
export function normalizeImageName(name: string): string {
  return formatReference(parseReference(name));
}

/**
 * How long a lock may go without being refreshed before another process may break it: a killed
 * tbuild stops refreshing, and its lock is taken over after this long.
 */
const LOCK_STALE_MS = 10_000;
/** How many times a lock another live process holds is looked at again (about 50 s in all). */
const LOCK_ATTEMPTS = 200;

export class ImageStore {
  readonly root: string;
  readonly content: ContentStore;
  readonly indexPath: string;

  constructor(root: string, content: ContentStore) {
    this.root = root;
    this.content = content;
    this.indexPath = path.join(root, "index.json");
  }

  /** Every named image, sorted by name. */
  async list(): Promise<ImageRecord[]> {
    const index = await this.readIndex();
    const records: ImageRecord[] = [];
    for (const entry of index.manifests) {
      const name = entry.annotations?.[ANNOTATION_REF_NAME];
      if (name !== undefined) records.push({ name, descriptor: withoutName(entry) });
    }
    return records.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * The image a user's name refers to, normalized first (`busybox` finds
   * `docker.io/library/busybox:latest`). A name with a digest also finds an image of that
   * repository stored under a tag, as `docker inspect busybox@sha256:…` does.
   */
  async get(name: string): Promise<ImageRecord | undefined> {
    const ref = parseReference(name);
    const normalized = formatReference(ref);
    const records = await this.list();
    const exact = records.find((r) => r.name === normalized);
    if (exact !== undefined || ref.digest === undefined) return exact;
    const repository = repositoryName(ref);
    const byDigest = records.find(
      (r) => r.descriptor.digest === ref.digest && repositoryOf(r.name) === repository,
    );
    return byDigest && { name: normalized, descriptor: byDigest.descriptor };
  }

  /**
   * Names a manifest or index already in the content store. Checked under the lock: the blob and
   * what it needs (a manifest's config and layers; an index's manifests that are present) must be
   * stored, so a name never points at an image the store cannot give back.
   */
  async put(name: string, descriptor: Descriptor): Promise<void> {
    const normalized = normalizeImageName(name);
    parseDigest(descriptor.digest);
    if (!isIndexMediaType(descriptor.mediaType) && !isManifestMediaType(descriptor.mediaType)) {
      throw new TbuildError(
        "E_NOT_AN_IMAGE",
        `cannot name ${descriptor.digest} ${normalized}: its media type ${descriptor.mediaType} is not an image manifest or index`,
      );
    }
    // Named so already (a rebuild that changed nothing): nothing to write.
    const current = (await this.readIndex()).manifests.find(
      (m) => m.annotations?.[ANNOTATION_REF_NAME] === normalized,
    );
    if (
      current?.digest === descriptor.digest &&
      current.mediaType === descriptor.mediaType &&
      current.size === descriptor.size &&
      descriptor.annotations === undefined
    ) {
      return;
    }
    await this.withLock(async () => {
      await this.checkComplete(normalized, descriptor);
      const index = await this.readIndex();
      index.manifests = index.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== normalized);
      index.manifests.push({
        ...descriptor,
        annotations: { ...descriptor.annotations, [ANNOTATION_REF_NAME]: normalized },
      });
      await this.writeIndex(index);
    });
  }

  /** Removes a name; false when the store had no such name. The blobs stay until collectGarbage. */
  async remove(name: string): Promise<boolean> {
    const normalized = normalizeImageName(name);
    return this.withLock(async () => {
      const index = await this.readIndex();
      const kept = index.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== normalized);
      if (kept.length === index.manifests.length) return false;
      index.manifests = kept;
      await this.writeIndex(index);
      return true;
    });
  }

  /**
   * Mark and sweep: deletes the blobs no entry of index.json reaches (through indexes, manifests,
   * configs and layers), no image of `keepImages` reaches (the unnamed images kept containers were
   * made from) and no other live tbuild process has leased. Returns what was freed.
   *
   * The order matters for safety beside concurrent writers: blobs are listed first, leases read
   * second. A writer leases a blob before renaming it into place, so any blob in the listing that a
   * writer still needs already has its lease on disk when the leases are read. The index lock is
   * held throughout, so no name can be added half-way through the mark.
   */
  async collectGarbage(
    options: { keep?: () => Iterable<string>; keepImages?: readonly Descriptor[] } = {},
  ): Promise<{ removed: number; bytes: number }> {
    return this.withLock(async () => {
      const stored: { digest: string; size: number }[] = [];
      for await (const blob of this.content.list()) stored.push(blob);
      const live = await this.content.liveLeases();
      // Blobs others rely on (the build cache's layers), read after the listing like the leases.
      for (const digest of options.keep?.() ?? []) live.add(digest);
      const index = await this.readIndex();
      for (const entry of [...index.manifests, ...(options.keepImages ?? [])]) await this.mark(entry, live);
      let removed = 0;
      let bytes = 0;
      for (const blob of stored) {
        if (live.has(blob.digest)) continue;
        if (await this.content.delete(blob.digest)) {
          removed++;
          bytes += blob.size;
        }
      }
      await this.content.cleanIngest();
      return { removed, bytes };
    });
  }

  /** Adds a descriptor and everything it reaches to `live`. Missing children are tolerated. */
  private async mark(descriptor: Descriptor, live: Set<string>): Promise<void> {
    if (live.has(descriptor.digest)) return;
    live.add(descriptor.digest);
    if (!isIndexMediaType(descriptor.mediaType) && !isManifestMediaType(descriptor.mediaType)) return;
    const document = await this.readDocument(descriptor);
    if (document === undefined) return;
    if (Array.isArray(document.manifests)) {
      for (const child of document.manifests) {
        if (typeof child?.digest === "string") await this.mark(child, live);
      }
    }
    if (typeof document.config?.digest === "string") live.add(document.config.digest);
    if (Array.isArray(document.layers)) {
      for (const layer of document.layers) if (typeof layer?.digest === "string") live.add(layer.digest);
    }
  }

  /** A manifest or index, or undefined when it is missing or not a JSON object (a damaged entry reaches nothing more). */
  private async readDocument(descriptor: Descriptor): Promise<Partial<Manifest & Index> | undefined> {
    try {
      if ((await this.content.size(descriptor.digest)) === undefined) return undefined;
      const document = await this.content.readJson<Partial<Manifest & Index> | null>(descriptor.digest);
      return typeof document === "object" && document !== null ? document : undefined;
    } catch {
      return undefined;
    }
  }

  private async checkComplete(name: string, descriptor: Descriptor, depth = 0): Promise<void> {
    const size = await this.content.size(descriptor.digest);
    if (size === undefined) {
      // An index may list platforms that were not pulled; only the top blob must be here.
      if (depth > 0) return;
      const what = isIndexMediaType(descriptor.mediaType) ? "index" : "manifest";
      throw new MissingContentError(name, descriptor.digest, what);
    }
    await this.content.lease(descriptor.digest);
    const document = await this.content.readJson<Partial<Manifest & Index>>(descriptor.digest);
    if (isIndexMediaType(descriptor.mediaType)) {
      for (const child of document.manifests ?? []) {
        if (isIndexMediaType(child.mediaType) || isManifestMediaType(child.mediaType)) {
          await this.checkComplete(name, child, depth + 1);
        }
      }
      return;
    }
    const needed: [Descriptor | undefined, string][] = [
      [document.config, "config"],
      ...(document.layers ?? []).map((layer): [Descriptor, string] => [layer, "layer"]),
    ];
    for (const [blob, what] of needed) {
      if (blob === undefined) continue;
      // A foreign layer (urls) is fetched from elsewhere by design; a present-or-not check is not ours to make.
      if (blob.mediaType === MediaType.dockerForeignLayerGzip) continue;
      if (!(await this.content.has(blob.digest))) throw new MissingContentError(name, blob.digest, what);
    }
  }

  async readIndex(): Promise<Index> {
    let text: string;
    try {
      text = await readFile(this.indexPath, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
      }
      throw err;
    }
    let index: Index;
    try {
      index = JSON.parse(text) as Index;
    } catch (err) {
      throw new CorruptStoreError(this.indexPath, (err as Error).message);
    }
    if (index?.schemaVersion !== 2 || !Array.isArray(index.manifests)) {
      throw new CorruptStoreError(this.indexPath, "it is not an OCI image index");
    }
    return index;
  }

  private async writeIndex(index: Index): Promise<void> {
    await writeStoreFile(this.indexPath, `${JSON.stringify(index, null, 2)}\n`, this.content.ingestDir);
  }

  /**
   * Runs `fn` holding the store's lock. A lock whose holder was killed is taken over: at once when
   * its owner record (below) names a process that is gone, else once it is stale (its holder
   * refreshes it while it lives).
   */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    let compromised: Error | undefined;
    let release: () => Promise<void>;
    // Loaded when index.json is changed, not by every command that reads it.
    const { default: lockfile } = await import("proper-lockfile");
    for (let attempt = 0; ; attempt++) {
      try {
        release = await lockfile.lock(this.indexPath, {
          realpath: false,
          stale: LOCK_STALE_MS,
          update: LOCK_STALE_MS / 4,
          onCompromised: (err) => {
            compromised = err;
          },
        });
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== "ELOCKED") {
          throw new TbuildError(
            "E_STORE_UNWRITABLE",
            `cannot change the image store ${this.root} (${code ?? (err as Error).message}); set TBUILD_ROOT to a store you can write`,
            { cause: err },
          );
        }
        if (await this.removeDeadLock()) continue;
        if (attempt >= LOCK_ATTEMPTS) {
          throw new TbuildError(
            "E_STORE_LOCKED",
            `the image store ${this.root} stays locked by another tbuild (${(err as Error).message}); wait for it to finish and run again`,
            { cause: err },
          );
        }
        // Nothing announces a release: look again a little later each time.
        await sleep(Math.min(250, 10 * 1.2 ** attempt));
      }
    }
    await this.writeLockOwner();
    try {
      const result = await fn();
      if (compromised !== undefined) {
        throw new TbuildError(
          "E_STORE_LOCKED",
          `lost the lock of the image store ${this.root} while working (${compromised.message}); run again`,
        );
      }
      return result;
    } finally {
      await rm(this.lockOwnerPath, { force: true }).catch(() => {});
      await release().catch(() => {});
    }
  }

  /** Who holds the lock `<index.json>.lock` (a directory): a file beside it, written once it is taken. */
  private get lockOwnerPath(): string {
    return `${this.indexPath}.lock-owner`;
  }

  /**
   * Records this process as the holder of the lock just taken, with the lock directory's identity
   * (inode and birth time): a record left by an earlier holder can never pass for this lock's.
   */
  private async writeLockOwner(): Promise<void> {
    const lock = await lstat(`${this.indexPath}.lock`, { bigint: true });
    await writeFileAtomic(
      this.lockOwnerPath,
      `${process.pid} ${ownStart()} ${lock.ino} ${lock.birthtimeNs}\n`,
    );
  }

  /**
   * Removes the lock when its owner record names this very lock and a process that is gone (killed
   * while it held it); true when it did. The lock is moved aside first and checked again, so that a
   * lock another process took meanwhile is never removed.
   */
  private async removeDeadLock(): Promise<boolean> {
    const lockDir = `${this.indexPath}.lock`;
    const identity = (st: { ino: bigint; birthtimeNs: bigint }) => `${st.ino} ${st.birthtimeNs}`;
    let owner: string[];
    let lock: string;
    try {
      owner = (await readFile(this.lockOwnerPath, "utf8")).trim().split(" ");
      lock = identity(await lstat(lockDir, { bigint: true }));
    } catch {
      return false;
    }
    const [pid, start, ino, born] = owner;
    if (`${ino} ${born}` !== lock || (await processAlive(Number(pid), start ?? ""))) return false;
    const aside = `${lockDir}.dead-${process.pid}-${randomBytes(4).toString("hex")}`;
    try {
      await rename(lockDir, aside);
    } catch {
      return false; // Taken over or released meanwhile.
    }
    if (identity(await lstat(aside, { bigint: true })) !== lock) {
      // Another process's new lock: put back (unless yet another was made since), and wait for it.
      if (!(await lstat(lockDir).catch(() => undefined))) await rename(aside, lockDir).catch(() => {});
      return false;
    }
    await rm(aside, { recursive: true, force: true });
    return true;
  }
}

/**
 * A store file written whole or not at all, durably (writeFileAtomic), its temp file in the
 * store's ingest directory; a full disk is DiskFullError.
 */
export async function writeStoreFile(file: string, data: string | Uint8Array, ingestDir: string) {
  try {
    await writeFileAtomic(file, data, { tempDir: ingestDir, durable: true, makeDirectory: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") throw new DiskFullError(path.dirname(file), err);
    throw err;
  }
}

function withoutName(entry: Descriptor): Descriptor {
  const { annotations, ...rest } = entry;
  if (annotations === undefined) return rest;
  const { [ANNOTATION_REF_NAME]: _name, ...others } = annotations;
  return Object.keys(others).length > 0 ? { ...rest, annotations: others } : rest;
}

function repositoryOf(name: string): string | undefined {
  try {
    return repositoryName(parseReference(name) as ImageReference);
  } catch {
    return undefined;
  }
}
