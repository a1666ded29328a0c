/**
 * The build cache index: cache key → the layers a step produced, plus what the key was made of
 * (for `--explain`). One SQLite database in the store root (`node:sqlite`): each write is a
 * transaction, so a build killed at any point leaves an index the next build can use; a result
 * is recorded only after its layers are in the content store.
 *
 * A result's layers are kept as a stack: each layer once, on top of the stack below it, so that
 * the records of a 3,000-step build, each holding every layer below it, take one row per layer
 * and not a list of 3,000 layers each (1.4 GB).
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { sha256Digest } from "./digest.js";
import type { FsResult, LayerRef } from "./worker.js";

/** What a cache key is computed from. */
export interface KeyMaterial {
  /** The vertex's op, without its inputs. */
  op: unknown;
  /** The cache keys of its inputs, in order. */
  inputs: string[];
  /** The worker's content key (file checksums of a context selection, ...). */
  content?: string;
  /**
   * Set on the material of a second ("slow") key: its inputs are the checksums of what the step
   * reads of build results, and the slow keys of its other inputs (see solve.ts).
   */
  slow?: true;
}

/** How stale a record's last-used time may be before a hit refreshes it. */
const LAST_USED_GRANULARITY_MS = 60_000;

export interface CacheRecord {
  key: string;
  result: FsResult;
  material: KeyMaterial;
  /** Display name of the step that made it (for --explain and `tbuild du`). */
  name: string;
  /**
   * The step's second ("slow") key when the result was made: what the steps built on it take as
   * this input's key in their own second keys. Absent in records made before there were such
   * keys: the record's own key stands for it.
   */
  slowKey?: string;
  created: number;
  lastUsed: number;
}

export class CacheIndex {
  private readonly db: DatabaseSync;
  readonly file: string;

  constructor(file: string) {
    this.file = file;
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new DatabaseSync(file, { timeout: 10_000 });
    const db = this.db;
    retryBusy(() =>
      db.exec(`
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      CREATE TABLE IF NOT EXISTS results (
        key TEXT PRIMARY KEY,
        result TEXT NOT NULL,
        material TEXT NOT NULL,
        name TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_used INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS results_by_name ON results (name);
      CREATE TABLE IF NOT EXISTS layer_stacks (
        id TEXT PRIMARY KEY,
        below TEXT,
        layer TEXT NOT NULL
      );
    `),
    );
  }

  /** The build cache of the store at `storeRoot`. */
  static forStore(storeRoot: string): CacheIndex {
    return new CacheIndex(path.join(storeRoot, "cache", "index.db"));
  }

  /** Every blob some record's result needs: garbage collection of images must keep them. */
  blobs(): Set<string> {
    const blobs = new Set<string>();
    for (const record of this.all())
      for (const layer of record.result.layers) blobs.add(layer.descriptor.digest);
    return blobs;
  }

  /** When the result under `key` was made (ms since the epoch), without counting it as used. */
  createdAt(key: string): number | undefined {
    return retryBusy(() => {
      const row = this.db.prepare("SELECT created FROM results WHERE key = ?").get(key) as
        | { created: number }
        | undefined;
      return row?.created;
    });
  }

  get(key: string): CacheRecord | undefined {
    return retryBusy(() => {
      const row = this.db.prepare("SELECT * FROM results WHERE key = ?").get(key) as Row | undefined;
      if (!row) return undefined;
      // Refreshed at most once a minute (GC counts hours): a rebuild right after a build writes
      // nothing, and so does not make closing the database write it to disk again.
      const now = Date.now();
      if (row.last_used < now - LAST_USED_GRANULARITY_MS) {
        try {
          this.db.prepare("UPDATE results SET last_used = ? WHERE key = ?").run(now, key);
        } catch (err) {
          // Only garbage collection reads it: a store busy with other builds may skip it.
          if (!isBusy(err)) throw err;
        }
      }
      return this.fromRow(row, (id) => this.readStack(id));
    });
  }

  /**
   * Records `result` under `key`, made at `created` (now unless given: a result taken from
   * another record or an imported cache keeps the time it was made). A record that is there
   * already takes the new result and its time: the step was made again.
   */
  put(
    key: string,
    result: FsResult,
    material: KeyMaterial,
    name: string,
    slowKey?: string,
    created?: number,
  ): void {
    retryBusy(() => {
      const now = Date.now();
      // Immediate: the stack rows it finds must still be there when it commits.
      this.db.exec("BEGIN IMMEDIATE");
      try {
        const stack = this.writeStack(result.layers);
        this.db
          .prepare(
            `INSERT INTO results (key, result, material, name, created, last_used) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT(key) DO UPDATE SET result = excluded.result, created = excluded.created, last_used = excluded.last_used`,
          )
          .run(
            key,
            JSON.stringify({ stack, ...(slowKey !== undefined ? { slowKey } : {}) }),
            JSON.stringify(material),
            name,
            created ?? now,
            now,
          );
        this.db.exec("COMMIT");
      } catch (err) {
        this.db.exec("ROLLBACK");
        throw err;
      }
    });
  }

  /** Earlier records of a step with this display name, newest first: the candidates `--explain` compares with. */
  recordsNamed(name: string, limit = 20): CacheRecord[] {
    return retryBusy(() => {
      const rows = this.db
        .prepare("SELECT * FROM results WHERE name = ? ORDER BY last_used DESC LIMIT ?")
        .all(name, limit) as unknown as Row[];
      return rows.map((row) => this.fromRow(row, (id) => this.readStack(id)));
    });
  }

  /** Every record, for garbage collection and `tbuild du`. */
  all(): CacheRecord[] {
    return retryBusy(() => {
      const stacks = this.allStacks();
      return (this.db.prepare("SELECT * FROM results").all() as unknown as Row[]).map((row) =>
        this.fromRow(row, stacks),
      );
    });
  }

  /** Removes the records, and the layers of stacks no record left holds. */
  remove(keys: string[]): void {
    retryBusy(() => {
      const statement = this.db.prepare("DELETE FROM results WHERE key = ?");
      this.db.exec("BEGIN IMMEDIATE");
      try {
        for (const key of keys) statement.run(key);
        this.removeUnheldStacks();
        this.db.exec("COMMIT");
      } catch (err) {
        this.db.exec("ROLLBACK");
        throw err;
      }
    });
  }

  /**
   * Which stack row is the top of which layers, by the layer object and the stack below it: a
   * build puts each step's result, whose layers are those of its input plus one, and so finds all
   * but the new layer here instead of hashing them again.
   */
  private readonly knownStacks = new WeakMap<LayerRef, Map<string, string>>();

  /**
   * Stores the stack of `layers` (the rows it lacks), in put's transaction; its id, or null for
   * no layers.
   */
  private writeStack(layers: readonly LayerRef[]): string | null {
    // The longest part of it this index stored before...
    let start = 0;
    let below: string | null = null;
    for (; start < layers.length; start++) {
      const id: string | undefined = this.knownStacks.get(layers[start]!)?.get(below ?? "");
      if (id === undefined) break;
      below = id;
    }
    // ...unless another process's garbage collection removed it since. Collection keeps a row
    // only with every row below it, so the top one tells.
    if (below !== null && !this.db.prepare("SELECT 1 FROM layer_stacks WHERE id = ?").get(below)) {
      start = 0;
      below = null;
    }
    const insert = this.db.prepare("INSERT OR IGNORE INTO layer_stacks (id, below, layer) VALUES (?, ?, ?)");
    for (const layer of layers.slice(start)) {
      const json = JSON.stringify({ descriptor: layer.descriptor, diffId: layer.diffId });
      const id: string = sha256Digest(`${below ?? ""}\n${json}`);
      insert.run(id, below, json);
      let known = this.knownStacks.get(layer);
      if (!known) {
        known = new Map();
        this.knownStacks.set(layer, known);
      }
      known.set(below ?? "", id);
      below = id;
    }
    return below;
  }

  /** The layers of the stack `id`, lowest first, in one query. */
  private readStack(id: string): LayerRef[] {
    const rows = this.db
      .prepare(
        `WITH RECURSIVE stack (id, below, layer, depth) AS (
           SELECT id, below, layer, 0 FROM layer_stacks WHERE id = ?
           UNION ALL
           SELECT s.id, s.below, s.layer, stack.depth + 1 FROM layer_stacks s JOIN stack ON s.id = stack.below)
         SELECT layer FROM stack ORDER BY depth DESC`,
      )
      .all(id) as { layer: string }[];
    return rows.map((row) => JSON.parse(row.layer) as LayerRef);
  }

  /** Every stack, for reading every record: each layer row is read and parsed once. */
  private allStacks(): (id: string) => LayerRef[] {
    const rows = new Map<string, { below: string | null; layer: LayerRef }>();
    for (const row of this.db.prepare("SELECT id, below, layer FROM layer_stacks").all() as {
      id: string;
      below: string | null;
      layer: string;
    }[]) {
      rows.set(row.id, { below: row.below, layer: JSON.parse(row.layer) as LayerRef });
    }
    return (id) => {
      const layers: LayerRef[] = [];
      for (let at: string | null = id; at !== null; ) {
        const row = rows.get(at);
        if (!row) break;
        layers.push(row.layer);
        at = row.below;
      }
      return layers.reverse();
    };
  }

  private removeUnheldStacks(): void {
    this.db.exec(`
      DELETE FROM layer_stacks WHERE id NOT IN (
        WITH RECURSIVE held (id) AS (
          SELECT json_extract(result, '$.stack') FROM results WHERE json_extract(result, '$.stack') IS NOT NULL
          UNION
          SELECT s.below FROM layer_stacks s JOIN held ON s.id = held.id WHERE s.below IS NOT NULL)
        SELECT id FROM held)
    `);
  }

  private fromRow(row: Row, stackOf: (id: string) => LayerRef[]): CacheRecord {
    const stored = JSON.parse(row.result) as { stack?: string | null; slowKey?: string } | FsResult;
    // Records written before stacks hold their layers themselves.
    const result: FsResult =
      "layers" in stored ? { layers: stored.layers } : { layers: stored.stack ? stackOf(stored.stack) : [] };
    const slowKey = "layers" in stored ? undefined : stored.slowKey;
    return {
      key: row.key,
      result,
      material: JSON.parse(row.material) as KeyMaterial,
      name: row.name,
      ...(slowKey !== undefined ? { slowKey } : {}),
      created: row.created,
      lastUsed: row.last_used,
    };
  }

  close(): void {
    this.db.close();
  }
}

interface Row {
  key: string;
  result: string;
  material: string;
  name: string;
  created: number;
  last_used: number;
}

/** SQLite's "database is locked": SQLITE_BUSY and its extended codes. */
function isBusy(err: unknown): boolean {
  const code = (err as { errcode?: unknown } | undefined)?.errcode;
  return typeof code === "number" && (code & 0xff) === 5;
}

const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * `work`, run again while SQLite answers busy. The busy timeout waits for a lock another process
 * holds, but some busy answers come at once (a write-ahead log another process is recovering or
 * restarting, a read snapshot another build's commit made stale): builds sharing a store meet them,
 * and each is over in moments. Nothing signals its end, so this waits a little longer each time.
 */
function retryBusy<T>(work: () => T): T {
  for (let attempt = 0; ; attempt++) {
    try {
      return work();
    } catch (err) {
      if (!isBusy(err) || attempt >= 20) throw err;
      Atomics.wait(pause, 0, 0, Math.min(500, 2 ** attempt));
    }
  }
}
