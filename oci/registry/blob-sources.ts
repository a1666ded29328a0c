/**
 * Where blobs were seen on registries: `<store root>/meta/blob-sources.json` maps a digest to the
 * `registry/repository` names it was pulled from or pushed to, most recent first. A push uses it to
 * ask for a cross-repository mount instead of uploading. It is a hint: a lost update costs an
 * upload, never correctness, so writes are atomic (temp + rename) but not locked, and each write
 * merges into what is on disk at that moment.
 */

import { readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../atomic-file.js";

interface BlobSourcesFile {
  version: 1;
  sources: Record<string, string[]>;
}

/** A digest keeps this many recent locations. */
const MAX_LOCATIONS = 8;

export class BlobSources {
  private readonly file: string;

  constructor(storeRoot: string) {
    this.file = path.join(storeRoot, "meta", "blob-sources.json");
  }

  /** Repositories of `registry` known to hold `digest`, most recent first. */
  async repositoriesHolding(digest: string, registry: string): Promise<string[]> {
    const prefix = `${registry}/`;
    const known = (await this.read()).sources[digest] ?? [];
    return known.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length));
  }

  /** Records that `registry/repository` holds each of `digests`. */
  async record(registry: string, repository: string, digests: string[]): Promise<void> {
    if (digests.length === 0) return;
    const location = `${registry}/${repository}`;
    const data = await this.read();
    for (const digest of digests) {
      const rest = (data.sources[digest] ?? []).filter((l) => l !== location);
      data.sources[digest] = [location, ...rest].slice(0, MAX_LOCATIONS);
    }
    await writeFileAtomic(this.file, JSON.stringify(data), { makeDirectory: true });
  }

  /** Forgets that a repository holds a digest (a mount it refused). */
  async forget(registry: string, repository: string, digest: string): Promise<void> {
    const data = await this.read();
    const location = `${registry}/${repository}`;
    const known = data.sources[digest];
    if (!known?.includes(location)) return;
    data.sources[digest] = known.filter((l) => l !== location);
    await writeFileAtomic(this.file, JSON.stringify(data));
  }

  private async read(): Promise<BlobSourcesFile> {
    try {
      const parsed = JSON.parse(await readFile(this.file, "utf8")) as BlobSourcesFile;
      if (parsed?.version === 1 && typeof parsed.sources === "object" && parsed.sources !== null)
        return parsed;
    } catch {
      // Missing or damaged: a hint file starts over rather than failing a pull or push.
    }
    return { version: 1, sources: {} };
  }
}
