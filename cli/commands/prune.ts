import { lstat, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { containerImages, directorySize, pruneCacheMounts, pruneUnneededLayers } from "../../build/gc.js";
import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/index.js";
import { CacheIndex } from "../../solver/cache.js";
import { parseDuration, parseSize, pruneBuildCache } from "../../solver/gc.js";
import { removeAbandonedBuildStates, stopAbandonedContainers } from "../../worker/build-state.js";
import type { CacheMountInfo } from "../../worker/cache-mounts/store.js";
import { Snapshotter } from "../../worker/snapshot/index.js";
import { hasWorkerPrivileges, reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize, openCommandStore } from "../store.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const { values } = args;
  const keep = values["keep-storage"] as string | undefined;
  const keepStorage = keep !== undefined ? parseSize(keep) : undefined;
  if (keep !== undefined && keepStorage === undefined) {
    throw new UsageError(`--keep-storage takes a size such as 10GB or 512MB, not "${keep}"`);
  }
  const { olderThan, cacheMountsOnly } = parseFilters((values.filter as string[] | undefined) ?? []);
  if (args.positionals.length > 0) throw new UsageError("tbuild prune takes no operands");
  if (cacheMountsOnly && values.all === true)
    throw new UsageError(
      "--all removes everything and --filter type=cache-mount only cache mounts: give one of them",
    );

  // Cache mounts and snapshots hold subuid-owned files only the user namespace may remove.
  if (!hasWorkerPrivileges() && !cacheMountsOnly) await stopAbandonedContainers(defaultStoreRoot(ctx.env));
  const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (reexec !== undefined) return reexec;
  if (cacheMountsOnly) {
    const pruned = await pruneCacheMounts(await openCommandStore(ctx), {
      ...(keepStorage !== undefined ? { keepStorage } : {}),
      ...(olderThan !== undefined ? { olderThan } : {}),
    });
    if (pruned.busy) ctx.warn("another tbuild process is running: cache mounts are kept");
    for (const mount of pruned.removed) ctx.stdout.write(`removed cache mount ${describeMount(mount)}\n`);
    ctx.stdout.write(
      `removed ${pruned.removed.length} cache mount(s); total reclaimed space: ${formatSize(pruned.bytes)}\n`,
    );
    return 0;
  }
  const store = await openCommandStore(ctx);
  // What builds killed with SIGKILL left: their state directories and the containers in them.
  let abandonedBytes = 0;
  await removeAbandonedBuildStates(store.root, {
    warn: ctx.warn,
    beforeRemove: async (dir) => {
      abandonedBytes += await directorySize(dir);
    },
  });
  // Then the root filesystems their containers ran on (still mounted, as real root), and the
  // layers and context snapshots they were making.
  const snapshotter = new Snapshotter(store.root, store.content);
  await snapshotter.cleanAbandoned();
  await snapshotter.removeAbandonedTemps();
  const cache = CacheIndex.forStore(store.root);
  try {
    const freed = await pruneBuildCache(store, cache, {
      keepImages: (await containerImages(store.root)).map((c) => c.image),
      ...(keepStorage !== undefined ? { keepStorage } : {}),
      ...(olderThan !== undefined ? { olderThan } : {}),
    });
    let bytes = freed.bytes + abandonedBytes;
    if (values.all === true) bytes += await pruneUnpacked(store.root, store, ctx.warn);
    else bytes += await pruneUnneededLayers(store, cache, freedBy);
    ctx.stdout.write(
      `removed ${freed.records} build cache record(s); total reclaimed space: ${formatSize(bytes)}\n`,
    );
    return 0;
  } finally {
    cache.close();
  }
}

/** The names BuildKit's `--filter type=` gives cache mounts: its filter's, and its record type's. */
const CACHE_MOUNT_TYPES = ["cache-mount", "exec.cachemount"];

/** `--filter until=DURATION` and `--filter type=cache-mount`, as `docker buildx prune` spells them. */
function parseFilters(filters: readonly string[]): { olderThan?: number; cacheMountsOnly: boolean } {
  let olderThan: number | undefined;
  let cacheMountsOnly = false;
  for (const filter of filters) {
    const [name, value = ""] = filter.split("=", 2);
    if (name === "type") {
      if (!CACHE_MOUNT_TYPES.includes(value))
        throw new UsageError(
          `--filter type= takes ${CACHE_MOUNT_TYPES.join(" or ")} (prune only cache mounts), not "${value}"`,
        );
      cacheMountsOnly = true;
      continue;
    }
    const duration = name === "until" ? parseDuration(value) : undefined;
    if (duration === undefined)
      throw new UsageError(
        `--filter takes until=DURATION (e.g. until=24h) or type=cache-mount, not "${filter}"`,
      );
    olderThan = duration;
  }
  return { ...(olderThan !== undefined ? { olderThan } : {}), cacheMountsOnly };
}

/** A removed mount as a user knows it: its id and where it was mounted (its key, made before records were kept). */
function describeMount(mount: CacheMountInfo): string {
  return mount.id === "" ? mount.key : `${mount.id} (${mount.target})`;
}

/**
 * What removing these directories frees: the files all of whose links are inside them (unpacked
 * layers share unchanged files by hard links, with each other and with layers that stay).
 */
async function freedBy(dirs: readonly string[]): Promise<number> {
  const files = new Map<string, { size: number; links: number; found: number }>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const file = path.join(dir, name);
      const info = await lstat(file).catch(() => undefined);
      if (!info) continue;
      if (info.isDirectory()) {
        await walk(file);
        continue;
      }
      const key = `${info.dev}:${info.ino}`;
      const known = files.get(key) ?? { size: info.size, links: info.nlink, found: 0 };
      known.found++;
      files.set(key, known);
    }
  };
  for (const dir of dirs) await walk(dir);
  let bytes = 0;
  for (const file of files.values()) if (file.found >= file.links) bytes += file.size;
  return bytes;
}

/**
 * `--all`: cache mounts and unpacked snapshots, which builds recreate when needed. Skipped while
 * another tbuild process is alive (it may be running on them) or a container exists (its root
 * filesystem lies over the unpacked layers).
 */
async function pruneUnpacked(
  root: string,
  store: { content: { liveLeases(): Promise<Set<string>> } },
  warn: (message: string) => void,
): Promise<number> {
  if ((await store.content.liveLeases()).size > 0) {
    warn("another tbuild process is running: cache mounts and snapshots are kept");
    return 0;
  }
  const containers = await readdir(path.join(root, "containers")).catch(() => [] as string[]);
  // The build contexts clients synced to this store as a worker: synced again, whole, when needed.
  const dirs = [path.join(root, "cache-mounts"), path.join(root, "remote-contexts")];
  // With the unpacked layers go the records of what rebuilds update in place ("results" holds
  // those of earlier versions, which linked a step's unchanged files from its previous result).
  if (containers.length === 0) {
    for (const dir of ["layers", "results", "sources", "copies"])
      dirs.push(path.join(root, "snapshots", dir));
  } else warn("containers exist (tbuild ps -a): unpacked snapshots are kept");
  let bytes = 0;
  for (const dir of dirs) {
    bytes += await directorySize(dir);
    await rm(dir, { recursive: true, force: true });
  }
  return bytes;
}
