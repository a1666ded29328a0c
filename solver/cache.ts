/**
 * The build cache index: cache key → the layers a step produced, plus what the key was made of
 * (for `--explain`). One SQLite database in the store root (`node:sqlite`): each write is a
 * transaction, so a build killed at any point leaves an index the next build can use; a result
 * is recorded only after its layers are in the content store.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { FsResult } from "./worker.js";

/** What a cache key is computed from. */
export interface KeyMaterial {
  /** The vertex's op, without its inputs. */
  op: unknown;
  /** The cache keys of its inputs, in order. */
  inputs: string[];
  /** The worker's content key (file checksums of a context selection, ...). */
  content?: string;
}

/** How stale a record's last-used time may be before a hit refreshes it. */
const LAST_USED_GRANULARITY_MS = 60_000;

export interface CacheRecord {
  key: string;
  result: FsResult;
  material: KeyMaterial;
  /** Display name of the step that made it (for --explain and `tbuild du`). */
  name: string;
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
    this.db.exec(`
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
    `);
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
    const row = this.db.prepare("SELECT created FROM results WHERE key = ?").get(key) as
      | { created: number }
      | undefined;
    return row?.created;
  }

  get(key: string): CacheRecord | undefined {
    const row = this.db.prepare("SELECT * FROM results WHERE key = ?").get(key) as Row | undefined;
    if (!row) return undefined;
    // Refreshed at most once a minute (GC counts hours): a rebuild right after a build writes
    // nothing, and so does not make closing the database write it to disk again.
    const now = Date.now();
    if (row.last_used < now - LAST_USED_GRANULARITY_MS) {
      this.db.prepare("UPDATE results SET last_used = ? WHERE key = ?").run(now, key);
    }
    return fromRow(row);
  }

  put(key: string, result: FsResult, material: KeyMaterial, name: string): void {
    const now = Date.now();
    this.db
      .prepare(
        `INSERT INTO results (key, result, material, name, created, last_used) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(key) DO UPDATE SET result = excluded.result, last_used = excluded.last_used`,
      )
      .run(key, JSON.stringify(result), JSON.stringify(material), name, now, now);
  }

  /** Earlier records of a step with this display name, newest first: the candidates `--explain` compares with. */
  recordsNamed(name: string, limit = 20): CacheRecord[] {
    const rows = this.db
      .prepare("SELECT * FROM results WHERE name = ? ORDER BY last_used DESC LIMIT ?")
      .all(name, limit) as unknown as Row[];
    return rows.map(fromRow);
  }

  /** Every record, for garbage collection and `tbuild du`. */
  all(): CacheRecord[] {
    return (this.db.prepare("SELECT * FROM results").all() as unknown as Row[]).map(fromRow);
  }

  remove(keys: string[]): void {
    const statement = this.db.prepare("DELETE FROM results WHERE key = ?");
    this.db.exec("BEGIN");
    try {
      for (const key of keys) statement.run(key);
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      throw err;
    }
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

function fromRow(row: Row): CacheRecord {
  return {
    key: row.key,
    result: JSON.parse(row.result) as FsResult,
    material: JSON.parse(row.material) as KeyMaterial,
    name: row.name,
    created: row.created,
    lastUsed: row.last_used,
  };
}
