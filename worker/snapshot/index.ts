/**
 * Snapshots: an image's layers unpacked once each into `<store>/snapshots/layers/<chain ID>`, and
 * writable root filesystems over them in `<store>/snapshots/mounts/<id>/`: a kernel overlay (also
 * inside tbuild's user namespace), or, where overlayfs cannot be mounted, a copy. A writable mount
 * diffs back into a layer tar.
 *
 * No daemon holds this state: each unpack takes a per-layer lock and renames a complete directory
 * into place, so concurrent tbuild processes unpack a shared layer once; each mount records the
 * process that made it, so that what a killed process left (its mount, its directories) is cleaned
 * by the next one.
 */
import { randomBytes } from "node:crypto";
import { lstatSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { lstat, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { TbuildError } from "../../errors/index.js";
import type { Image } from "../../oci/image.js";
import type { ContentStore } from "../../oci/store/content.js";
import { digestOf } from "../../oci/store/content.js";
import { ownStart, processAlive, processStart } from "../../oci/store/process-liveness.js";
import type { DiffOptions } from "../diff.js";
import { hasWorkerPrivileges, inUserNamespace } from "../userns.js";
import {
  isMountPoint,
  MountError,
  mountOverlay,
  type OverlayPaths,
  overlayFits,
  overlayOptions,
  unmount,
} from "./mounts.js";

export { isWhiteout, type LowerEntry, LowerView } from "./lower-view.js";
export { isMountPoint, MountError } from "./mounts.js";

export type SnapshotMode = "overlay" | "copy";

export interface SnapshotterOptions {
  /**
   * "auto" (the default) mounts overlays and falls back to copies where overlayfs cannot be
   * mounted; "overlay" never copies; "copy" never mounts.
   */
  mode?: "auto" | SnapshotMode;
  warn?(message: string): void;
  /** Hears of each layer actually unpacked (not of those found unpacked already). */
  onUnpack?(layer: { chainId: string; diffId: string }): void;
}

/**
 * An overlay left for the container's runtime to mount (runc mounts it as the container's root,
 * in the container's own mount namespace, where it vanishes with the container).
 */
export interface DeferredOverlay {
  /** Its mount options, paths absolute. */
  options: string[];
  /** The directories it merges, lowest first, the upper directory last. */
  layers: string[];
  upper: string;
}

export interface WritableMount {
  id: string;
  /** The root filesystem to run in; while `deferredOverlay` is set, an empty directory. */
  rootfs: string;
  /** Where the changes are: the overlay's upper directory; for a copy, the copy itself (= rootfs). */
  upper: string;
  /** How it was made. */
  mode: SnapshotMode;
  /**
   * Set when the mount was deferred (mountWritable's `deferMount`): nothing is mounted on the
   * host, and whoever runs the container mounts this overlay over `rootfs` itself.
   */
  readonly deferredOverlay?: DeferredOverlay;
  /**
   * Mounts a deferred overlay at `rootfs` after all (where overlayfs cannot be mounted here, makes
   * a copy instead, as mountWritable does); nothing to do otherwise.
   */
  mountOnHost(): Promise<void>;
  /**
   * The changes as an OCI layer tar: deterministic order and headers, whiteouts (`.wh.name`) for
   * deletions, opaque dirs (`.wh..wh..opq`), ownership/modes kept, mtimes clamped to
   * sourceDateEpoch when given. Streamed.
   */
  diff(options?: DiffOptions): AsyncIterable<Uint8Array>;
  /**
   * After a complete diff: unmounts and keeps the upper directory as the unpacked layer of the
   * stack `chainId` (the lowers plus the diffed layer), so a later step mounts it instead of
   * unpacking the layer's tar again. Only an overlay whose diff wrote every entry of its upper
   * and had no opaque directory (which the upper marks with an xattr the unpacked form does not
   * use) is kept; otherwise, and when that layer is unpacked already, nothing happens. False when
   * not kept. Mtimes stay as they are (the tar's are clamped to SOURCE_DATE_EPOCH), as BuildKit's
   * snapshots keep theirs. The mount is then only good for `release`.
   */
  keepAsLayer(chainId: string): Promise<boolean>;
  /**
   * Unmounts an overlay and keeps its directories, so its upper directory can be changed directly
   * (diff mounts it again); nothing to do for a copy.
   */
  unmount(): Promise<void>;
  /** Unmounts; removes upper/work unless persistent. Idempotent; nothing of it left in /proc/mounts. */
  /**
   * `blocking`: removes the files with one synchronous call, which is quicker but holds this
   * process's event loop for as long as it takes: for a process with nothing else to do meanwhile
   * (the end of `tbuild run`).
   */
  release(options?: { blocking?: boolean }): Promise<void>;
}

/** What `<mounts>/<id>/state.json` records. */
interface MountState {
  id: string;
  mode: SnapshotMode;
  persistent: boolean;
  lowers: string[];
  userxattr: boolean;
  /** The process that has it mounted, with its start time (pids are reused); 0 when none. */
  pid: number;
  pidStart: string;
  /** Copy mode: the ctime mark (nanoseconds, decimal) of diff.ts's copyChanges. */
  since?: string;
}

/** The chain IDs of an image's layers (image-spec: ChainID(L0|L1) = sha256(ChainID(L0) + " " + DiffID(L1))). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const previous = out.at(-1);
    out.push(previous === undefined ? diffId : digestOf(`${previous} ${diffId}`));
  }
  return out;
}

function hexOf(digest: string): string {
  return digest.slice(digest.indexOf(":") + 1);
}

async function exists(file: string): Promise<boolean> {
  try {
    await lstat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/**
 * The layer directories this process has handed out (prepareImage): a step may be reading any of
 * them until the process ends, so none of them is ever claimed (claimLayer) by this process.
 */
const handedOut = new Set<string>();

function existsNow(file: string): boolean {
  try {
    lstatSync(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/**
 * A per-layer lock: a file created exclusively, naming its holder. A holder that died (killed
 * mid-unpack) is noticed at once and its lock taken over. Two waiters may both take over a dead
 * holder's lock; that costs a duplicate unpack, never a wrong one: each unpacks into its own temp
 * directory and the first rename wins.
 */
async function takeLock(lock: string): Promise<boolean> {
  const owner = `${process.pid} ${(await processStart(process.pid)) ?? ""}`;
  try {
    await writeFile(lock, owner, { flag: "wx" });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  let text: string;
  let age: number;
  try {
    text = await readFile(lock, "utf8");
    age = Date.now() - (await lstat(lock)).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false; // released meanwhile: retry
    throw err;
  }
  const [pid, start] = text.split(" ");
  // An empty lock is one being written right now, unless it has been empty for long.
  const alive = text === "" ? age < 10_000 : await processAlive(Number(pid), start ?? "");
  if (!alive) await rm(lock, { force: true });
  return false;
}

async function releaseLock(lock: string): Promise<void> {
  const text = await readFile(lock, "utf8").catch(() => "");
  if (text.split(" ")[0] === String(process.pid)) await rm(lock, { force: true });
}

function requirePrivileges(what: string): void {
  if (!hasWorkerPrivileges()) {
    throw new TbuildError(
      "E_NO_WORKER_PRIVILEGES",
      `cannot ${what}: this process is neither root nor in tbuild's user namespace (reexecInUserNamespace first)`,
    );
  }
}

/**
 * How many layer directories a stack may have before its bottom is flattened, and how many layers
 * each flattened directory then stands for. The kernel stacks at most 500 overlay layers, in at
 * most a page of mount options (about 55 of ours); every lookup of a path a step's process makes
 * searches the layers in turn, and so does the differ. A stack kept short keeps a step's cost the
 * same at the 600th layer as at the 6th: `[flattened 0..n*32) + the rest]` is at most 33 layers,
 * and a build adds a flattened directory every 32 layers, each made from the one before.
 */
const MAX_STACK = 40;
const FLATTEN_EVERY = 32;

export class Snapshotter {
  readonly root: string;
  /** Where unpacked layers live, each in a directory named by its chain ID. */
  readonly layersDir: string;
  /**
   * Where flattened stacks live: the merged view of a stack's layers in one directory (files
   * hard-linked to the layers'), named by the stack's chain ID.
   */
  readonly flatDir: string;
  private readonly mountsDir: string;
  private readonly options: SnapshotterOptions;
  /** Kept for the layer blobs' leases and future GC; blobs are opened through the Image. */
  readonly content: ContentStore;

  /** State under `<storeRoot>/snapshots/`. */
  constructor(storeRoot: string, content: ContentStore, options: SnapshotterOptions = {}) {
    this.root = path.join(path.resolve(storeRoot), "snapshots");
    this.layersDir = path.join(this.root, "layers");
    this.flatDir = path.join(this.root, "flat");
    this.mountsDir = path.join(this.root, "mounts");
    this.content = content;
    this.options = options;
  }

  /** The directory a layer with this chain ID is unpacked into. */
  layerDir(chainId: string): string {
    return path.join(this.layersDir, hexOf(chainId));
  }

  /**
   * The unpacked layers nothing needs: in none of the layer stacks given (diff IDs, lowest first:
   * the images' and the cache records' results) and under no writable mount left (a kept
   * container's). What a step kept or a context was unpacked into outlives its cache record
   * otherwise. The caller removes them, with `removeLayers`, while no other process can be
   * mounting them.
   */
  async unneededLayers(stacks: Iterable<readonly string[]>): Promise<string[]> {
    const needed = new Set<string>();
    for (const stack of stacks) for (const id of chainIds(stack)) needed.add(hexOf(id));
    for (const id of await this.listWritable()) {
      const state = await this.readState(id).catch(() => undefined);
      for (const lower of state?.lowers ?? []) needed.add(path.basename(lower));
    }
    const unneeded: string[] = [];
    for (const dir of [this.layersDir, this.flatDir]) {
      const names = await readdir(dir).catch(() => [] as string[]);
      // Temp directories and locks (a name with a dot) belong to unpacks under way.
      for (const name of names)
        if (!name.includes(".") && !needed.has(name)) unneeded.push(path.join(dir, name));
    }
    return unneeded;
  }

  /**
   * Removes unpacked layers. The records rebuilds link from (source-snapshot.ts)
   * only name a layer, and find it gone.
   */
  async removeLayers(dirs: readonly string[]): Promise<void> {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  }

  /**
   * Takes the unpacked layer `chainId` out of the store by renaming it to `temp` (beside the
   * layers), for a source snapshot to update in place into its next layer (source-snapshot.ts).
   * Only while nothing can be reading it: no other tbuild process is alive (each leases what it
   * uses before it reads it, as `prune` relies on) and this process never handed it out. True when
   * taken; a step that needs the layer later unpacks it again from its blob.
   */
  async claimLayer(chainId: string, temp: string): Promise<boolean> {
    const dir = this.layerDir(chainId);
    if (handedOut.has(dir) || (await this.content.liveLeases()).size > 0) return false;
    try {
      await rename(dir, temp);
      return true;
    } catch {
      return false; // Not unpacked (pruned, or never made): the snapshot is written whole.
    }
  }

  /**
   * Unpacks each layer of the image once (keyed by chain ID; layers shared between images are
   * unpacked once), returns the directories to stack, lowest first: the layers' own, the bottom
   * ones flattened into one when there are more than MAX_STACK. Safe with concurrent tbuild
   * processes.
   */
  async prepareImage(image: Pick<Image, "layers">, signal?: AbortSignal): Promise<string[]> {
    const ids = chainIds(image.layers.map((layer) => layer.diffId));
    const dirs: string[] = [];
    for (const [i, layer] of image.layers.entries()) {
      signal?.throwIfAborted();
      const dir = this.layerDir(ids[i]!);
      // Synchronous: one lstat per layer on every `tbuild run`.
      if (!existsNow(dir)) {
        requirePrivileges("unpack image layers");
        // What the layer is unpacked onto, as short a stack as what it will be mounted on.
        const lowers = await this.shortenStack(dirs, ids, signal);
        await this.makeOnce(this.layersDir, dir, signal, async () => {
          // Loaded when needed: `tbuild run` of an unpacked image never unpacks, diffs or copies.
          const { unpackLayer } = await import("../unpack.js");
          await unpackLayer(layer.open(), dir, {
            rootless: inUserNamespace(),
            lowers,
            diffId: layer.diffId,
            what: `layer ${layer.descriptor.digest}`,
            ...(signal ? { signal } : {}),
            ...(this.options.warn ? { warn: this.options.warn } : {}),
          });
          this.options.onUnpack?.({ chainId: ids[i]!, diffId: layer.diffId });
        });
      }
      handedOut.add(dir);
      dirs.push(dir);
    }
    return this.shortenStack(dirs, ids, signal);
  }

  /**
   * `dirs` (the layers of the stack `ids`) as at most MAX_STACK directories: the bottom
   * `n * FLATTEN_EVERY` layers as one flattened directory, made once per stack from the flattened
   * directory below it (or from the layers themselves).
   */
  private async shortenStack(
    dirs: readonly string[],
    ids: readonly string[],
    signal: AbortSignal | undefined,
  ): Promise<string[]> {
    if (dirs.length <= MAX_STACK) return [...dirs];
    const flattened = dirs.length - (dirs.length % FLATTEN_EVERY);
    const flatOf = (count: number) => path.join(this.flatDir, hexOf(ids[count - 1]!));
    let count = flattened;
    while (count > 0 && !existsNow(flatOf(count))) count -= FLATTEN_EVERY;
    let bottom = count > 0 ? [flatOf(count)] : [];
    for (count += FLATTEN_EVERY; count <= flattened; count += FLATTEN_EVERY) {
      const dir = flatOf(count);
      const lowers = [...bottom, ...dirs.slice(count - FLATTEN_EVERY, count)];
      requirePrivileges("flatten image layers");
      await this.makeOnce(this.flatDir, dir, signal, () => this.flatten(lowers, dir, signal));
      bottom = [dir];
    }
    return [...bottom, ...dirs.slice(flattened)];
  }

  /** The merged view of `lowers` as the new directory `dir`, made aside and renamed into place. */
  private async flatten(lowers: string[], dir: string, signal: AbortSignal | undefined): Promise<void> {
    const temp = path.join(
      path.dirname(dir),
      `.tmp-${path.basename(dir)}-${process.pid}-${randomBytes(6).toString("hex")}`,
    );
    await mkdir(temp, { mode: 0o700 });
    try {
      const { copyLayers } = await import("./copy.js");
      await copyLayers(lowers, temp, {
        rootless: inUserNamespace(),
        linkFiles: true,
        ...(signal ? { signal } : {}),
        ...(this.options.warn ? { warn: this.options.warn } : {}),
      });
      await rename(temp, dir);
    } catch (err) {
      await rm(temp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Makes the directory `dir` (in `parent`) with `make` unless it exists, once across processes:
   * under a lock file beside it, whose holder, if it died, is noticed and replaced.
   */
  private async makeOnce(
    parent: string,
    dir: string,
    signal: AbortSignal | undefined,
    make: () => Promise<void>,
  ): Promise<void> {
    await mkdir(parent, { recursive: true, mode: 0o700 });
    const lock = `${dir}.lock`;
    for (;;) {
      if (await exists(dir)) return;
      if (!(await takeLock(lock))) {
        // Another live process is making it: wait for its directory (or for it to die).
        await sleep(50, undefined, signal ? { signal } : {});
        continue;
      }
      try {
        if (await exists(dir)) return;
        await this.removeAbandonedTempsIn(parent, `.tmp-${path.basename(dir)}-`);
        await make();
        return;
      } finally {
        await releaseLock(lock);
      }
    }
  }

  /**
   * The temp directories of layers, flattened stacks and context snapshots (`.tmp-source-…`)
   * whose making process is gone: what builds killed while unpacking or snapshotting left, which
   * nothing else removes.
   */
  async removeAbandonedTemps(): Promise<void> {
    for (const dir of [this.layersDir, this.flatDir]) {
      if (await exists(dir)) await this.removeAbandonedTempsIn(dir, ".tmp-");
    }
  }

  /** Temp directories in `parent` named `<prefix>…-<pid>-<random>` whose process is gone. */
  private async removeAbandonedTempsIn(parent: string, prefix: string): Promise<void> {
    for (const entry of await readdir(parent)) {
      if (!entry.startsWith(prefix)) continue;
      // The pid is the second field from the end, whatever the name holds.
      const pid = Number(entry.split("-").at(-2));
      if (Number.isInteger(pid) && pid > 0 && (await processStart(pid)) !== undefined) continue;
      await rm(path.join(parent, entry), { recursive: true, force: true });
    }
  }

  /**
   * A writable root filesystem over `lowers`: kernel overlayfs, or a copy where overlay is
   * unavailable. With `deferMount`, an overlay is not mounted on the host when its options fit in
   * one mount call with absolute paths: the handle's `deferredOverlay` says what to mount, and
   * `mountOnHost` mounts it (or copies) should the runtime fail to.
   */
  async mountWritable(
    lowers: string[],
    options: {
      id?: string;
      persistent?: boolean;
      deferMount?: boolean;
      /**
       * A directory (beside the layers, claimLayer's `temp`) moved in as the overlay's upper
       * directory, its entries over `lowers` from the start; removed should the overlay fall back
       * to a copy. For the file op's copy updated in place (worker/ops/copy-reuse.ts).
       */
      upper?: string;
    } = {},
  ): Promise<WritableMount> {
    requirePrivileges("mount a root filesystem");
    await this.cleanAbandoned();
    const id = options.id ?? randomBytes(12).toString("hex");
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) {
      throw new TbuildError(
        "E_MOUNT_ID",
        `invalid writable mount id ${JSON.stringify(id)}: use letters, digits, '_', '.', '-'`,
      );
    }
    const dir = path.join(this.mountsDir, id);
    // Synchronous calls here and in writeState: small ones on every `tbuild run`, each spared a
    // thread-pool round trip.
    mkdirSync(this.mountsDir, { recursive: true, mode: 0o700 });
    try {
      mkdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        throw new TbuildError("E_MOUNT_EXISTS", `a writable root filesystem named ${id} exists already`);
      }
      throw err;
    }
    const state: MountState = {
      id,
      mode: "overlay",
      persistent: options.persistent === true,
      lowers: [...lowers],
      userxattr: inUserNamespace(),
      pid: process.pid,
      pidStart: ownStart(),
    };
    try {
      if (options.upper !== undefined) renameSync(options.upper, path.join(dir, "upper"));
      const wanted = this.options.mode ?? "auto";
      if (wanted !== "copy" && lowers.length > 0 && options.deferMount) {
        const overlay = this.deferredOverlayOf(state);
        if (overlay) {
          await this.writeState(state);
          for (const sub of ["upper", "work", "rootfs"]) mkdirSync(path.join(dir, sub));
          return this.handle(state, overlay);
        }
      }
      await this.materialize(state);
      return this.handle(state);
    } catch (err) {
      await unmount(path.join(dir, "rootfs")).catch(() => {});
      await rm(dir, { recursive: true, force: true }).catch(() => {});
      throw err;
    }
  }

  /** Mounts the overlay of `state` at its rootfs, or, where overlayfs cannot be mounted, copies. */
  private async materialize(state: MountState): Promise<void> {
    const dir = path.join(this.mountsDir, state.id);
    const wanted = this.options.mode ?? "auto";
    if (wanted !== "copy" && state.lowers.length > 0) {
      state.mode = "overlay";
      await this.writeState(state);
      try {
        await this.mountOverlayFor(state);
        return;
      } catch (err) {
        if (wanted === "overlay" || !(err instanceof MountError)) throw err;
        this.options.warn?.(`${err.message}; copying the image's files instead (slower, uses more disk)`);
        await rm(path.join(dir, "upper"), { recursive: true, force: true });
        await rm(path.join(dir, "work"), { recursive: true, force: true });
      }
    }
    state.mode = "copy";
    await this.writeState(state);
    const rootfs = path.join(dir, "rootfs");
    await mkdir(rootfs, { recursive: true });
    const { changeClockMark, copyLayers } = await import("./copy.js");
    await copyLayers(state.lowers, rootfs, {
      rootless: inUserNamespace(),
      ...(this.options.warn ? { warn: this.options.warn } : {}),
    });
    state.since = String(await changeClockMark(dir));
    await this.writeState(state);
  }

  /** The overlay of `state` for the runtime to mount, with absolute paths; undefined when too long. */
  private deferredOverlayOf(state: MountState): DeferredOverlay | undefined {
    const dir = path.join(this.mountsDir, state.id);
    const paths: OverlayPaths = {
      lowers: state.lowers,
      upper: path.join(dir, "upper"),
      work: path.join(dir, "work"),
      cwd: "/",
      userxattr: state.userxattr,
    };
    if (!overlayFits(paths)) return undefined;
    return {
      options: overlayOptions(paths).split(","),
      layers: [...state.lowers, paths.upper],
      upper: paths.upper,
    };
  }

  /**
   * Reopens a persistent writable mount (a kept container's layer) by id; with `deferMount`, as
   * mountWritable's, an overlay is left for the runtime to mount.
   */
  async openWritable(
    id: string,
    lowers: string[],
    options: { deferMount?: boolean } = {},
  ): Promise<WritableMount> {
    requirePrivileges("mount a root filesystem");
    const state = await this.readState(id);
    if (!state) throw new TbuildError("E_NO_SUCH_MOUNT", `no writable root filesystem named ${id}`);
    if (state.pid !== process.pid && (await processAlive(state.pid, state.pidStart))) {
      throw new TbuildError("E_MOUNT_BUSY", `the root filesystem ${id} is in use by process ${state.pid}`);
    }
    state.lowers = [...lowers];
    state.pid = process.pid;
    state.pidStart = (await processStart(process.pid)) ?? "";
    await this.writeState(state);
    if (state.mode === "overlay" && options.deferMount) {
      const overlay = this.deferredOverlayOf(state);
      if (overlay && !(await isMountPoint(path.join(this.mountsDir, id, "rootfs")))) {
        for (const sub of ["upper", "work", "rootfs"])
          mkdirSync(path.join(this.mountsDir, id, sub), { recursive: true });
        return this.handle(state, overlay);
      }
    }
    if (state.mode === "overlay") await this.mountOverlayFor(state);
    return this.handle(state);
  }

  /** Where a writable mount keeps its state and upper directory (what `container prune` frees). */
  writableDir(id: string): string {
    return path.join(this.mountsDir, id);
  }

  async removeWritable(id: string): Promise<void> {
    const state = await this.readState(id);
    if (state && state.pid !== process.pid && (await processAlive(state.pid, state.pidStart))) {
      throw new TbuildError("E_MOUNT_BUSY", `the root filesystem ${id} is in use by process ${state.pid}`);
    }
    const dir = path.join(this.mountsDir, id);
    await unmount(path.join(dir, "rootfs"));
    await rm(dir, { recursive: true, force: true });
  }

  /** The ids of the writable mounts kept (persistent ones, and any a killed process left). */
  async listWritable(): Promise<string[]> {
    try {
      // Synchronous: read before every writable mount, usually (nearly) empty.
      return readdirSync(this.mountsDir).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  }

  private overlayPaths(state: MountState): OverlayPaths {
    const relative = (p: string) => path.relative(this.root, p);
    const dir = path.join("mounts", state.id);
    return {
      lowers: state.lowers.map(relative),
      upper: path.join(dir, "upper"),
      work: path.join(dir, "work"),
      cwd: this.root,
      userxattr: state.userxattr,
      // A build step's root: its result is a synced blob. A kept container's is the user's data.
      volatile: !state.persistent,
    };
  }

  private async mountOverlayFor(state: MountState): Promise<void> {
    const paths = this.overlayPaths(state);
    if (!overlayFits(paths)) {
      throw new MountError(
        `an overlay of ${state.lowers.length} layers does not fit in the kernel's mount options`,
      );
    }
    const dir = path.join(this.mountsDir, state.id);
    for (const sub of ["upper", "work", "rootfs"]) await mkdir(path.join(dir, sub), { recursive: true });
    const rootfs = path.join(dir, "rootfs");
    if (await isMountPoint(rootfs)) return;
    await mountOverlay(paths, rootfs);
  }

  private handle(state: MountState, deferred?: DeferredOverlay): WritableMount {
    const dir = path.join(this.mountsDir, state.id);
    const rootfs = path.join(dir, "rootfs");
    let released = false;
    let deferredOverlay = deferred;
    /** Set by a complete overlay diff whose upper the layer tar holds exactly. */
    let upperIsLayer = false;
    const snapshotter = this;
    return {
      id: state.id,
      rootfs,
      get upper() {
        return state.mode === "overlay" ? path.join(dir, "upper") : rootfs;
      },
      get mode() {
        return state.mode;
      },
      get deferredOverlay() {
        return deferredOverlay;
      },
      async mountOnHost(): Promise<void> {
        if (!deferredOverlay) return;
        await snapshotter.materialize(state);
        deferredOverlay = undefined;
      },
      diff(options: DiffOptions = {}): AsyncIterable<Uint8Array> {
        return (async function* () {
          if (state.mode === "copy") {
            const { copyChanges, writeChanges } = await import("../diff.js");
            const changes = await copyChanges(rootfs, state.lowers, BigInt(state.since ?? "0"));
            yield* writeChanges(changes, rootfs, options);
            return;
          }
          // The merged view tells opaque directories apart; a released mount is mounted again for it.
          const remount = !(await isMountPoint(rootfs));
          if (remount) {
            if (!(await snapshotter.readState(state.id))) {
              throw new TbuildError(
                "E_NO_SUCH_MOUNT",
                `the root filesystem ${state.id} was released and removed`,
              );
            }
            await snapshotter.mountOverlayFor(state);
          }
          try {
            const { hasOpaqueDirectory, overlayChanges, writeChanges } = await import("../diff.js");
            const upper = path.join(dir, "upper");
            upperIsLayer = false;
            const changes = await overlayChanges(upper, rootfs, state.lowers);
            let leftOut = false;
            const warn = (message: string) => {
              leftOut = true;
              options.warn?.(message);
            };
            yield* writeChanges(changes, upper, { ...options, warn });
            upperIsLayer = !leftOut && !hasOpaqueDirectory(changes);
          } finally {
            if (remount) await unmount(rootfs);
          }
        })();
      },
      async unmount(): Promise<void> {
        if (state.mode === "overlay") await unmount(rootfs);
      },
      async keepAsLayer(chainId: string): Promise<boolean> {
        if (released || state.persistent || !upperIsLayer) return false;
        await unmount(rootfs);
        const target = snapshotter.layerDir(chainId);
        if (await exists(target)) return false;
        await mkdir(snapshotter.layersDir, { recursive: true, mode: 0o700 });
        try {
          await rename(path.join(dir, "upper"), target);
          return true;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          // Another process kept or unpacked the same layer meanwhile: its copy is as good.
          if (code === "ENOTEMPTY" || code === "EEXIST") return false;
          throw err;
        }
      },
      async release(options: { blocking?: boolean } = {}): Promise<void> {
        if (released) return;
        await unmount(rootfs);
        if (state.persistent) {
          state.pid = 0;
          state.pidStart = "";
          await snapshotter.writeState(state);
        } else if (options.blocking) {
          rmSync(dir, { recursive: true, force: true });
        } else {
          await rm(dir, { recursive: true, force: true });
        }
        released = true;
      },
    };
  }

  private async writeState(state: MountState): Promise<void> {
    const dir = path.join(this.mountsDir, state.id);
    const temp = path.join(dir, `.state-${process.pid}`);
    writeFileSync(temp, `${JSON.stringify(state, null, 2)}\n`);
    renameSync(temp, path.join(dir, "state.json"));
  }

  private async readState(id: string): Promise<MountState | undefined> {
    try {
      return JSON.parse(await readFile(path.join(this.mountsDir, id, "state.json"), "utf8")) as MountState;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /**
   * What killed processes left: their mounts are unmounted (as real root they outlive the process;
   * in a user namespace they died with it) and their temporary root filesystems removed. Kept
   * (persistent) ones stay, unmounted, for openWritable. Done before every new writable mount, and
   * by commands that clean up after killed builds (a build whose steps are all cached mounts nothing).
   */
  async cleanAbandoned(): Promise<void> {
    // Each kept container's mount is looked at: all at once.
    await Promise.all((await this.listWritable()).map((id) => this.cleanIfAbandoned(id)));
  }

  private async cleanIfAbandoned(id: string): Promise<void> {
    const dir = path.join(this.mountsDir, id);
    const state = await this.readState(id).catch(() => undefined);
    if (
      state &&
      (state.pid === 0 || state.pid === process.pid || (await processAlive(state.pid, state.pidStart)))
    ) {
      return;
    }
    if (!state) {
      // Made by a process killed before its first state write, or being made right now: only
      // an old one is abandoned. (Gone meanwhile: released by another step of this build.)
      const made = await lstat(dir).catch(() => undefined);
      if (!made || Date.now() - made.mtimeMs < 60_000) return;
    }
    await unmount(path.join(dir, "rootfs")).catch(() => {});
    if (state?.persistent) {
      state.pid = 0;
      state.pidStart = "";
      await this.writeState(state);
    } else {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
