/**
 * The merged view of a stack of unpacked layer directories, computed the way overlayfs computes
 * it: a path is what the topmost layer holding it says; a whiteout (a 0:0 character device)
 * hides it and everything under it in the layers below; a directory merges with the directories
 * of the same path below it until a layer holds a whiteout or a non-directory there. Unpacked
 * layers never carry opaque-directory xattrs (they are expressed as whiteouts, see unpack.ts), so
 * this needs no xattrs, which Node cannot read.
 *
 * The unpacker asks it what an opaque directory hides and what metadata an implied parent
 * directory inherits; the copying snapshotter copies it; the differ compares against it.
 */
import { type BigIntStats, lstatSync } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import { childPath } from "../child-path.js";

export interface LowerEntry {
  /** Its absolute path in the topmost layer that holds it. */
  source: string;
  stat: BigIntStats;
  /** For a directory: the layer directories (absolute, topmost first) whose contents it merges. */
  layers: string[];
}

/** Overlayfs's whiteout: a character device with device number 0:0. */
export function isWhiteout(stat: { isCharacterDevice(): boolean; rdev: number | bigint }): boolean {
  return stat.isCharacterDevice() && BigInt(stat.rdev) === 0n;
}

async function lstatOrUndefined(file: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(file, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw err;
  }
}

function lstatSyncOrUndefined(file: string): BigIntStats | undefined {
  try {
    return lstatSync(file, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw err;
  }
}

export class LowerView {
  /** Topmost first. */
  private readonly layers: string[];
  private readonly cache = new Map<string, Promise<LowerEntry | undefined>>();

  /** `lowers`: unpacked layer directories, lowest first (as Snapshotter.prepareImage returns them). */
  constructor(lowers: readonly string[]) {
    this.layers = [...lowers].reverse();
  }

  get empty(): boolean {
    return this.layers.length === 0;
  }

  /** The entry at `rel` (relative, `/`-separated, "" for the root), or undefined when absent or hidden. */
  lookup(rel: string): Promise<LowerEntry | undefined> {
    let found = this.cache.get(rel);
    if (!found) {
      found = this.resolve(rel);
      this.cache.set(rel, found);
    }
    return found;
  }

  private async resolve(rel: string): Promise<LowerEntry | undefined> {
    if (this.layers.length === 0) return undefined;
    let candidates: string[];
    if (rel === "") {
      candidates = this.layers;
    } else {
      const parent = await this.lookup(path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel));
      if (!parent?.stat.isDirectory()) return undefined;
      candidates = parent.layers;
    }
    let top: { source: string; stat: BigIntStats } | undefined;
    const dirLayers: string[] = [];
    for (const layer of candidates) {
      const source = childPath(layer, rel);
      const stat = await lstatOrUndefined(source);
      if (!stat) continue;
      if (isWhiteout(stat) || !stat.isDirectory()) {
        if (top) break; // a whiteout or a file below a directory ends the merge
        if (isWhiteout(stat)) return undefined;
        return { source, stat, layers: [] };
      }
      top ??= { source, stat };
      dirLayers.push(layer);
    }
    return top ? { ...top, layers: dirLayers } : undefined;
  }

  private readonly syncCache = new Map<string, LowerEntry | null>();

  /**
   * `lookup` with synchronous calls, for the few lookups on every `tbuild run`'s path (the image's
   * /etc/passwd): the same merge as `resolve`, step for step.
   */
  lookupSync(rel: string): LowerEntry | undefined {
    const cached = this.syncCache.get(rel);
    if (cached !== undefined) return cached ?? undefined;
    let candidates: string[] = [];
    if (rel === "") {
      candidates = this.layers;
    } else {
      const parent = this.lookupSync(path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel));
      if (parent?.stat.isDirectory()) candidates = parent.layers;
    }
    let found: LowerEntry | undefined;
    const dirLayers: string[] = [];
    for (const layer of candidates) {
      const source = childPath(layer, rel);
      const stat = lstatSyncOrUndefined(source);
      if (!stat) continue;
      if (isWhiteout(stat) || !stat.isDirectory()) {
        // A whiteout or a file below a directory ends the merge; on top, it is the answer.
        if (!found && !isWhiteout(stat)) found = { source, stat, layers: [] };
        break;
      }
      found ??= { source, stat, layers: dirLayers };
      dirLayers.push(layer);
    }
    this.syncCache.set(rel, found ?? null);
    return found;
  }

  /** The visible entries of the directory at `rel`, by name; empty when it is not a directory. */
  async list(rel: string): Promise<Map<string, LowerEntry>> {
    const out = new Map<string, LowerEntry>();
    const dir = await this.lookup(rel);
    if (!dir?.stat.isDirectory()) return out;
    const seen = new Set<string>();
    for (const layer of dir.layers) {
      const names = await readdir(childPath(layer, rel)).catch(() => [] as string[]);
      for (const name of names) {
        if (seen.has(name)) continue;
        seen.add(name);
        const child = await this.lookup(rel === "" ? name : `${rel}/${name}`);
        if (child) out.set(name, child);
      }
    }
    return out;
  }
}
