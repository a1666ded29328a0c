/**
 * Cache mounts that travel with the build cache (`--cache-to` / `--cache-from ...,mounts=true`),
 * which BuildKit leaves behind (moby/buildkit#1474): in CI every job starts with empty mounts.
 *
 * - Import: the build's local worker gets an OpContext.cacheMounts whose `seed` fills a mount the
 *   store has no content for from the imported cache's blob of the same mount key, before a step
 *   first uses it (a mount the store has keeps its content). The blob is fetched into the content
 *   store, verified by digest and size, and unpacked by unpackTree (untrusted: see archive.ts).
 * - Export: `used` hears of every mount the build's steps used, and `noteDeclared` adds those of
 *   steps that came from the cache (a build that ran nothing still exports its mounts, so the
 *   next one finds them); after the solve each is packed into the content store (the same content
 *   packs to the same blob, so an unchanged mount is not sent again) and listed in the cache
 *   description beside the records. A mount the store has no content for goes as it was
 *   imported, when it was.
 *
 * A mount's content never enters a cache key: it is a cache, not an input.
 */
import { stat } from "node:fs/promises";
import { TbuildError } from "../errors/index.js";
import type { Store } from "../oci/store/index.js";
import type { CachedMount } from "../solver/cache-description.js";
import type { ImportedCache } from "../solver/cache-transfer.js";
import type { BuildGraph, VertexDigest } from "../solver/graph.js";
import type { FsResult } from "../solver/worker.js";
import { CACHE_MOUNT_MEDIA_TYPE, packMountBlob, unpackTree } from "../worker/cache-mounts/archive.js";
import { type CacheMountRecord, CacheMountStore, cacheMountRecordOf } from "../worker/cache-mounts/store.js";
import type { OpContext } from "../worker/ops/context.js";
import { inUserNamespace } from "../worker/userns.js";
import type { BuildEventStream } from "./events.js";

type UsedMount = Omit<CacheMountRecord, "lastUsed">;

export class CacheMountTransport {
  /** The mounts this build's steps used, by key, for the export. */
  private readonly used = new Map<string, UsedMount>();
  /** Seeds under way or done, by content directory: several steps may use one mount. */
  private readonly seeding = new Map<string, Promise<void>>();
  private readonly store: Store;
  private readonly imported: ImportedCache | undefined;
  private readonly events: BuildEventStream;
  private readonly signal: AbortSignal;

  /** `imported`: the build's imported cache when a `--cache-from` has mounts=true. */
  constructor(
    store: Store,
    imported: ImportedCache | undefined,
    events: BuildEventStream,
    signal: AbortSignal,
  ) {
    this.store = store;
    this.imported = imported;
    this.events = events;
    this.signal = signal;
  }

  /** The hook the build's local worker runs RUN's cache mounts with. */
  hook(): NonNullable<OpContext["cacheMounts"]> {
    return {
      seed: (record, mounts) => this.seed(record, mounts),
      used: (record) => {
        this.used.set(record.key, record);
      },
    };
  }

  /**
   * Adds the cache mounts of the solved steps that did not run (cache hits): each exec vertex's
   * cache mounts, named as the step would name them. A `from` mount whose input's result the
   * solve does not know is left out.
   */
  noteDeclared(
    graph: BuildGraph,
    solved: { keys: Map<VertexDigest, string>; results: Map<VertexDigest, FsResult> },
  ): void {
    for (const digest of solved.keys.keys()) {
      const vertex = graph.vertices[digest];
      if (vertex?.op.kind !== "exec") continue;
      for (const mount of vertex.op.mounts) {
        if (mount.type !== "cache" || mount.cache === undefined) continue;
        const from = mount.input !== undefined ? solved.results.get(vertex.inputs[mount.input]!) : undefined;
        if (mount.input !== undefined && from === undefined) continue;
        const record = cacheMountRecordOf(mount, from);
        if (!this.used.has(record.key)) this.used.set(record.key, record);
      }
    }
  }

  private async seed(record: CacheMountRecord, mounts: CacheMountStore): Promise<void> {
    const found = this.imported?.mount(record.key);
    if (!found) return;
    const data = await mounts.dataDir(record.key, { based: record.base !== undefined });
    let pending = this.seeding.get(data);
    if (!pending) {
      pending = mounts
        .seed(record, (dir) =>
          this.events.internal(`importing cache mount ${record.id} from ${found.from}`, () =>
            this.fill(record, found.from, dir),
          ),
        )
        .then(() => {});
      this.seeding.set(data, pending);
    }
    return pending;
  }

  /**
   * Fetches the imported blob of `record`'s mount and unpacks it as the new directory `dir`. A blob
   * that cannot be fetched or is refused fails the step: the user asked for the mount, and a
   * cache that carries a hostile one should be seen, not quietly skipped.
   */
  private async fill(record: CacheMountRecord, from: string, dir: string): Promise<void> {
    try {
      const blob = (await this.imported!.fetchMount(record.key, this.signal))!;
      await unpackTree(this.store.content.open(blob.digest), dir, {
        rootless: process.getuid?.() !== 0 || inUserNamespace(),
        warn: (message) => this.events.warn(message),
        signal: this.signal,
        what: `cache mount ${record.id} from ${from}`,
      });
    } catch (err) {
      if (!(err instanceof TbuildError) || this.signal.aborted) throw err;
      throw new TbuildError(
        err.code,
        `${err.message}; export that cache again, or drop mounts=true from its --cache-from`,
        { cause: err },
      );
    }
  }

  /**
   * The mounts this build used, each packed into the content store (as the step "exporting cache
   * mount ID"), for the cache description. A mount whose content was never made is left out.
   */
  async packUsed(): Promise<CachedMount[]> {
    const mounts = new CacheMountStore(this.store.root);
    const packed: CachedMount[] = [];
    for (const record of [...this.used.values()].sort((a, b) => (a.key < b.key ? -1 : 1))) {
      const info = await mounts.get(record.key);
      if (!info || !(await stat(info.data).catch(() => undefined))) {
        const imported = this.imported?.mount(record.key);
        if (imported && (await this.imported!.fetchMount(record.key, this.signal)))
          packed.push(imported.mount);
        continue;
      }
      const blob = await this.events.internal(`exporting cache mount ${record.id}`, async () => {
        const written = await this.store.content.write(
          packMountBlob(info.data, (relative, reason) =>
            this.events.warn(`cache mount ${record.id}: ${relative} is left out of its export (${reason})`),
          ),
          {},
          this.signal,
        );
        return { mediaType: CACHE_MOUNT_MEDIA_TYPE, digest: written.digest, size: written.size };
      });
      packed.push({ record, blob });
    }
    return packed;
  }
}

/** What an export says of one mount: its size, and whether its blob went or was there already. */
export function describeMountExport(mount: CachedMount, sent: boolean, where: "registry" | "local"): string {
  const bytes = mount.blob.size;
  const size =
    bytes < 1e3
      ? `${bytes} B`
      : bytes < 1e6
        ? `${(bytes / 1e3).toFixed(1)} kB`
        : `${(bytes / 1e6).toFixed(2)} MB`;
  const verb = where === "registry" ? "uploaded" : "written";
  const outcome = sent ? verb : `unchanged, not ${verb}`;
  return `cache mount ${mount.record.id}: ${size}, ${outcome}`;
}
