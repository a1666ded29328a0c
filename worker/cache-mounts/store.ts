/**
 * The store's cache mounts (`RUN --mount=type=cache`): directories under `<store>/cache-mounts`
 * that outlive builds, one per mount identity. A mount's directory is named by a digest of its id
 * and, for a mount with a base (a mode, uid or gid, or a `from` stage it is seeded with), that base,
 * as BuildKit names them; it holds:
 * - `mount.json`: what the mount is (id, sharing, target, base) and when a build last used it, for
 *   `tbuild cache mounts`, for exports and for pruning by age;
 * - `data` (or, for a based mount, the generation `current` names: a step under `--no-cache`
 *   starts a new one, as BuildKit's re-run base): the content RUN steps see.
 *
 * A mount's content never takes part in a cache key: it is a cache, not an input.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../../oci/atomic-file.js";
import { digestOf } from "../../solver/digest.js";
import type { ExecMount } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";

export type CacheSharing = "shared" | "private" | "locked";

/** What a based mount starts from; null fields are not set. */
export interface CacheMountBase {
  mode: number | null;
  uid: number | null;
  gid: number | null;
  /** The `from` stage's layers (diff ids) and the path in it the mount is seeded from. */
  from: { layers: string[]; selector: string } | null;
}

/** A cache mount as `mount.json` records it. */
export interface CacheMountRecord {
  /** The directory's name: 32 hex digits of the identity's digest. */
  key: string;
  /** The `id=` of the mount (its target when none was given). */
  id: string;
  sharing: CacheSharing;
  /** Where the step that last used it mounted it. */
  target: string;
  base?: CacheMountBase;
  /** When a build last used it, or when it was imported (ms since the epoch). */
  lastUsed: number;
}

/** A cache mount of the store: its record, and the directory its content is in now. */
export interface CacheMountInfo extends CacheMountRecord {
  /** The content's directory; it may not exist yet (a mount made but never filled is empty). */
  data: string;
}

const KEY = /^[0-9a-f]{32}$/;
const GENERATION = /^data(-[0-9a-f]+)?$/;
const SHARINGS: readonly string[] = ["shared", "private", "locked"];

/** The directory name of a mount: the id alone, or the id and its base, as BuildKit keys them. */
export function cacheMountKey(id: string, base?: CacheMountBase): string {
  return digestOf(base ? { id, base } : { id }).slice(7, 39);
}

/**
 * What a RUN step's cache mount is (without when it was used): its id, sharing and target, and
 * its base when it has a mode, uid or gid, or a `from` input (whose layers `from` gives). The one
 * place a mount's identity is made: a step running it and a cache export naming it agree.
 */
export function cacheMountRecordOf(
  mount: Pick<ExecMount, "cache" | "target" | "mode" | "uid" | "gid" | "selector" | "input">,
  from: FsResult | undefined,
): Omit<CacheMountRecord, "lastUsed"> {
  const cache = mount.cache!;
  const based =
    from !== undefined || mount.mode !== undefined || mount.uid !== undefined || mount.gid !== undefined;
  const base: CacheMountBase | undefined = based
    ? {
        mode: mount.mode ?? null,
        uid: mount.uid ?? null,
        gid: mount.gid ?? null,
        from: from ? { layers: from.layers.map((l) => l.diffId), selector: mount.selector ?? "/" } : null,
      }
    : undefined;
  return {
    key: cacheMountKey(cache.id, base),
    id: cache.id,
    sharing: cache.sharing,
    target: mount.target,
    ...(base ? { base } : {}),
  };
}

export function isCacheMountKey(key: string): boolean {
  return KEY.test(key);
}

/** A record read from untrusted JSON (an imported archive, a registry): undefined when it is not one. */
export function parseCacheMountRecord(value: unknown): CacheMountRecord | undefined {
  const v = value as Partial<CacheMountRecord> | null | undefined;
  if (typeof v !== "object" || v === null) return undefined;
  if (typeof v.key !== "string" || !KEY.test(v.key)) return undefined;
  if (typeof v.id !== "string" || typeof v.target !== "string") return undefined;
  if (typeof v.sharing !== "string" || !SHARINGS.includes(v.sharing)) return undefined;
  const lastUsed = Number.isSafeInteger(v.lastUsed) && (v.lastUsed as number) >= 0 ? v.lastUsed! : 0;
  const base = parseBase(v.base);
  if (v.base !== undefined && base === undefined) return undefined;
  // The key is the identity's digest: a record whose key is not its own would seed another mount.
  if (cacheMountKey(v.id, base) !== v.key) return undefined;
  return {
    key: v.key,
    id: v.id,
    sharing: v.sharing as CacheSharing,
    target: v.target,
    lastUsed,
    ...(base ? { base } : {}),
  };
}

function parseBase(value: unknown): CacheMountBase | undefined {
  const b = value as Partial<CacheMountBase> | null | undefined;
  if (typeof b !== "object" || b === null) return undefined;
  const numberOrNull = (n: unknown) => n === null || (Number.isSafeInteger(n) && (n as number) >= 0);
  if (!numberOrNull(b.mode) || !numberOrNull(b.uid) || !numberOrNull(b.gid)) return undefined;
  let from: CacheMountBase["from"] = null;
  if (b.from !== null) {
    const f = b.from as { layers?: unknown; selector?: unknown } | undefined;
    if (
      typeof f !== "object" ||
      !Array.isArray(f.layers) ||
      !f.layers.every((l) => typeof l === "string") ||
      typeof f.selector !== "string"
    )
      return undefined;
    from = { layers: f.layers as string[], selector: f.selector };
  }
  return { mode: b.mode ?? null, uid: b.uid ?? null, gid: b.gid ?? null, from };
}

/** The cache mounts of one store. */
export class CacheMountStore {
  readonly dir: string;

  constructor(storeRoot: string) {
    this.dir = path.join(storeRoot, "cache-mounts");
  }

  /** The directory of the mount `key`. */
  mountDir(key: string): string {
    if (!KEY.test(key)) throw new Error(`not a cache mount key: ${JSON.stringify(key)}`);
    return path.join(this.dir, key);
  }

  /** Every mount of the store, most recently used first. A mount made before records were kept has id "" and lastUsed 0. */
  async list(): Promise<CacheMountInfo[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const mounts: CacheMountInfo[] = [];
    for (const key of names) {
      if (!KEY.test(key)) continue;
      const info = await this.get(key);
      if (info) mounts.push(info);
    }
    return mounts.sort((a, b) => b.lastUsed - a.lastUsed || (a.key < b.key ? -1 : 1));
  }

  /** The mount `key`, or undefined when the store has none. */
  async get(key: string): Promise<CacheMountInfo | undefined> {
    const dir = this.mountDir(key);
    const info = await stat(dir).catch(() => undefined);
    if (!info?.isDirectory()) return undefined;
    const record = parseCacheMountRecord(
      await readFile(path.join(dir, "mount.json"), "utf8").then(
        (text) => JSON.parse(text) as unknown,
        () => undefined,
      ),
    );
    const data = path.join(dir, await this.generation(key));
    if (record?.key === key) return { ...record, data };
    return { key, id: "", sharing: "shared", target: "", lastUsed: 0, data };
  }

  /**
   * The content directory of the mount `key` in use now: `data`, or for a based mount the
   * generation `current` names. With `fresh` (a based mount's step under `--no-cache`), a new
   * generation, recorded at once so that later builds use it.
   */
  async dataDir(key: string, { based = false, fresh = false } = {}): Promise<string> {
    const dir = this.mountDir(key);
    if (!based) return path.join(dir, "data");
    if (!fresh) return path.join(dir, await this.generation(key));
    const generation = `data-${randomBytes(6).toString("hex")}`;
    await writeFileAtomic(path.join(dir, "current"), `${generation}\n`, { makeDirectory: true });
    return path.join(dir, generation);
  }

  private async generation(key: string): Promise<string> {
    const recorded = (
      await readFile(path.join(this.mountDir(key), "current"), "utf8").catch(() => "")
    ).trim();
    return GENERATION.test(recorded) ? recorded : "data";
  }

  /** Records what the mount is and that it was used now (or at `record.lastUsed`). */
  async touch(record: Omit<CacheMountRecord, "lastUsed"> & { lastUsed?: number }): Promise<void> {
    const written: CacheMountRecord = { ...record, lastUsed: record.lastUsed ?? Date.now() };
    await writeFileAtomic(
      path.join(this.mountDir(record.key), "mount.json"),
      `${JSON.stringify(written)}\n`,
      {
        makeDirectory: true,
      },
    );
  }

  /**
   * Fills the mount `record.key` with what `fill` writes into the directory it is given (which
   * does not exist yet: `fill` makes it, whole, or fails), when the mount has no content yet;
   * a mount with content keeps it. Says which.
   */
  async seed(record: CacheMountRecord, fill: (dir: string) => Promise<void>): Promise<"seeded" | "kept"> {
    const data = await this.dataDir(record.key, { based: record.base !== undefined });
    if (await stat(data).catch(() => undefined)) return "kept";
    const building = `${data}.seed-${randomBytes(4).toString("hex")}`;
    // A mount first used in this store has no directory yet: `fill` makes only its own.
    await mkdir(path.dirname(data), { recursive: true });
    try {
      await fill(building);
      await rename(building, data);
    } catch (err) {
      await rm(building, { recursive: true, force: true });
      // Another build made it first: theirs is as good as ours.
      if (["ENOTEMPTY", "EEXIST"].includes((err as NodeJS.ErrnoException).code ?? "")) return "kept";
      throw err;
    }
    await this.touch(record);
    return "seeded";
  }

  /** Removes the mount `key` whole: its record and every generation of its content. */
  async remove(key: string): Promise<void> {
    const dir = this.mountDir(key);
    // Renamed away first, so that a kill midway never leaves a mount half there.
    const doomed = path.join(this.dir, `.removing-${key}-${randomBytes(4).toString("hex")}`);
    try {
      await rename(dir, doomed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    await rm(doomed, { recursive: true, force: true });
  }

  /**
   * What removals, imports and fills killed midway left (`.removing-*`, `.import-*`, `.tmp-*`; a content directory being made,
   * `data.` or `data-GEN.seed-` and a random suffix, GEN a based mount's generation). Only while no other tbuild process is alive: a
   * directory being made now looks the same.
   */
  async removeAbandoned(): Promise<void> {
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const dir = path.join(this.dir, name);
      if (/^\.(removing|import|tmp)-/.test(name)) await rm(dir, { recursive: true, force: true });
      if (!KEY.test(name)) continue;
      for (const part of await readdir(dir).catch(() => [] as string[])) {
        if (/^data(-[0-9a-f]+)?\.(seed-)?[0-9a-f]{8}$/.test(part))
          await rm(path.join(dir, part), { recursive: true, force: true });
      }
    }
  }
}
