/**
 * Where blobs were seen on registries: `<store root>/meta/blob-sources.json` maps a digest to the
 * `registry/repository` names it was pulled from or pushed to, most recent first. A push uses it to
 * ask for a cross-repository mount instead of uploading. It is a hint: a lost update costs an
 * upload, never correctness, so writes are atomic (temp + rename) but not locked, and each write
 * merges into what is on disk at that moment.
 */
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";

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
    await mkdir(path.dirname(this.file), { recursive: true });
    const temp = `${this.file}.${process.pid}.${Date.now()}.tmp`;
    try {
      await writeFile(temp, JSON.stringify(data));
      await rename(temp, this.file);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }

  /** Forgets that a repository holds a digest (a mount it refused). */
  async forget(registry: string, repository: string, digest: string): Promise<void> {
    const data = await this.read();
    const location = `${registry}/${repository}`;
    const known = data.sources[digest];
    if (!known?.includes(location)) return;
    data.sources[digest] = known.filter((l) => l !== location);
    const temp = `${this.file}.${process.pid}.${Date.now()}.tmp`;
    await writeFile(temp, JSON.stringify(data));
    await rename(temp, this.file);
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
