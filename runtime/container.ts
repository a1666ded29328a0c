/**
 * A container: an image's layers (the worker's unpacked snapshots, shared with builds) under a
 * writable overlay, volumes and bind mounts, and one process in the worker's sandbox (runc). The
 * container is recorded in the store while it runs and, unless `remove`, after it exits, with its
 * writable layer kept for `commit`.
 *
 * An image of a platform the kernel does not run (and has no binfmt_misc handler with the F flag
 * for) has its process started through the static QEMU emulator mounted read-only into the
 * container, exactly as a build's RUN step of that platform (worker/emulation.ts).
 *
 * The caller must have worker privileges (root, or root of tbuild's user namespace).
 */
import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isTbuildError, TbuildError } from "../errors/index.js";
import type { Image } from "../oci/image.js";
import type { Platform } from "../oci/platform.js";
import type { ContainerConfig } from "../oci/spec.js";
import type { Store } from "../oci/store/index.js";
import { containerEmulator } from "../worker/emulation.js";
import type {
  SandboxMount,
  SandboxProcess,
  SandboxResult,
  SandboxRunOptions,
  SandboxSpec,
} from "../worker/sandbox/index.js";
import { Snapshotter, type WritableMount } from "../worker/snapshot/index.js";
import { inUserNamespace } from "../worker/userns.js";
import { processArgs } from "./config.js";
import {
  type ContainerRecord,
  ContainerStore,
  currentState,
  newContainerId,
  processStartTime,
} from "./containers.js";
import { Guard } from "./guard.js";
import type { MountRequest } from "./mounts.js";
import type { ContainerNetwork } from "./network.js";
import type { NetworkSettings } from "./ports.js";
import { seedVolume, VolumeStore } from "./volumes.js";

export interface ContainerOptions {
  image: Image;
  /** The image as the user named it (shown by `ps`). */
  imageName: string;
  /** The container's config: the image's with the run flags applied (runtime/config.ts). */
  config: ContainerConfig;
  mounts: MountRequest[];
  /** The network, ports, hostname, DNS and extra hosts (runtime/ports.ts networkSettings). */
  network: NetworkSettings;
  tty: boolean;
  interactive: boolean;
  /** `--rm`: forget the container, its writable layer and its anonymous volumes when it exits. */
  remove: boolean;
  name?: string;
  warn?: (message: string) => void;
  /** Where QEMU emulators are looked for (`$TBUILD_QEMU_DIR`, PATH); `process.env` by default. */
  env?: NodeJS.ProcessEnv;
}

export interface ContainerIO {
  stdin: NodeJS.ReadableStream | "inherit" | "ignore";
  stdout: NodeJS.WritableStream | "inherit";
  stderr: NodeJS.WritableStream | "inherit";
  /** Aborting stops the container (SIGTERM, then SIGKILL a second later) and cleans up. */
  signal?: AbortSignal;
  /** Called once the container's process is starting: from then on `kill` reaches it. */
  onStart?: () => void;
}

export interface ContainerExit {
  /** The process's exit code, or 128 + the signal number when a signal ended it (as docker reports). */
  exitCode: number;
  signal?: NodeJS.Signals;
}

export class Container {
  readonly store: Store;
  readonly record: ContainerRecord;
  private readonly options: ContainerOptions;
  private readonly containers: ContainerStore;
  /** The host path of the QEMU emulator the process starts through; undefined when the kernel runs it. */
  private readonly emulator: string | undefined;
  private process?: SandboxProcess;
  private started = false;

  private constructor(
    store: Store,
    containers: ContainerStore,
    record: ContainerRecord,
    options: ContainerOptions,
    emulator: string | undefined,
  ) {
    this.store = store;
    this.containers = containers;
    this.record = record;
    this.options = options;
    this.emulator = emulator;
  }

  get id(): string {
    return this.record.id;
  }

  /**
   * Records a new container (its process is checked to exist in the config first, and the host
   * to run the image's platform: NoEmulatorError, and nothing recorded, when it cannot).
   */
  static async create(store: Store, options: ContainerOptions): Promise<Container> {
    const [argv0, ...args] = processArgs(options.config, options.imageName);
    const emulator = await containerEmulator(imagePlatform(options.image), options.env ?? process.env);
    const containers = new ContainerStore(store.root);
    const record = await containers.create(
      {
        id: newContainerId(),
        created: new Date().toISOString(),
        image: { name: options.imageName, descriptor: options.image.descriptor },
        config: options.config,
        path: argv0!,
        args,
        mounts: options.mounts,
        ...networkRecord(options.network),
        tty: options.tty,
        interactive: options.interactive,
        state: { status: "created" },
      },
      options.name,
    );
    return new Container(store, containers, record, options, emulator);
  }

  /** Runs the container's process to its end; resolves to its exit. A container runs once. */
  async run(io: ContainerIO): Promise<ContainerExit> {
    if (this.started)
      throw new TbuildError("E_CONTAINER_STARTED", `container ${this.record.name} has already run`);
    this.started = true;
    // Loaded only when a container runs: `tbuild rm`, which loads this module too, never needs it.
    const sandboxModule = import("../worker/sandbox/index.js");
    sandboxModule.catch(() => {});
    const { record, options, store } = this;
    const snapshotter = new Snapshotter(
      store.root,
      store.content,
      options.warn ? { warn: options.warn } : {},
    );
    const volumes = new VolumeStore(store.root);
    const stateDir = path.join(this.containers.containerDir(record.id), "sandbox");
    const sandboxId = record.id.slice(0, 32);
    let writable: WritableMount | undefined;
    let guard: Guard | undefined;
    let exit: ContainerExit | undefined;
    let processStarted = false;
    let network: ContainerNetwork | undefined;
    // Set up while the image is prepared (its forwarder and user-mode stack take a while to start);
    // a published port in use fails the run before the container is set up.
    const networkOpening = this.openNetwork();
    networkOpening.catch(() => {});
    try {
      const lowers = await snapshotter.prepareImage(options.image, io.signal);
      network = await networkOpening;
      // runc mounts the overlay itself, in the container's mount namespace (no mount or umount
      // process, nothing left mounted on the host), unless a volume may need seeding from the
      // image, which reads the mounted root filesystem.
      writable = await snapshotter.mountWritable(lowers, {
        id: record.id,
        persistent: !options.remove,
        deferMount: !options.mounts.some((m) => m.kind === "volume"),
      });
      // Should tbuild die without cleaning up (SIGKILL), the guard kills the container and unmounts.
      const { findRunc, runInSandbox } = await sandboxModule;
      const runc = findRunc();
      const rootfs = writable.rootfs;
      const startGuard = () => {
        guard ??= Guard.start({
          runc,
          // runInSandbox keeps runc's state in <stateDir>/<id>/runc.
          runcRoot: path.join(stateDir, sandboxId, "runc"),
          sandboxId,
          rootless: inUserNamespace(),
          rootfs,
          remove: [
            stateDir,
            ...(options.remove ? [path.dirname(rootfs), this.containers.containerDir(record.id)] : []),
          ],
        });
      };
      // A root filesystem mounted here is guarded from now on. One runc mounts has nothing on the
      // host to unmount: its guard starts once runc has, while runc sets the container up, rather
      // than before it, on the way to the process.
      if (!writable.deferredOverlay) startGuard();
      const mounts = await this.prepareMounts(writable.rootfs, volumes, io.signal);
      const pidStartTime = processStartTime(process.pid);
      record.state = {
        status: "running",
        pid: process.pid,
        ...(pidStartTime !== undefined ? { pidStartTime } : {}),
        startedAt: new Date().toISOString(),
        ...(network ? { ports: network.ports } : {}),
      };
      await this.containers.write(record);
      const spec: SandboxSpec = {
        rootfs: writable.rootfs,
        args: [record.path, ...record.args],
        env: record.config.Env ?? [],
        cwd: record.config.WorkingDir || "/",
        user: record.config.User ?? "",
        // As docker run makes a missing working directory.
        workdirOwner: "root",
        changesDiscarded: options.remove,
        hostname: record.hostname ?? record.id.slice(0, 12),
        network: record.network,
        ...(network ? { networkNamespace: network.namespacePath } : {}),
        ...((record.dns ?? network?.nameservers) ? { nameservers: record.dns ?? network?.nameservers } : {}),
        ...(record.extraHosts ? { extraHosts: record.extraHosts } : {}),
        mounts,
        terminal: options.tty,
        ...(this.emulator !== undefined ? { emulator: this.emulator } : {}),
      };
      const runOptions: SandboxRunOptions = {
        stateDir,
        id: sandboxId,
        stdin: io.stdin,
        stdout: io.stdout,
        stderr: io.stderr,
        ...(io.signal ? { signal: io.signal } : {}),
        onStart: (process) => {
          this.process = process;
          startGuard();
          if (!processStarted) io.onStart?.();
          processStarted = true;
        },
      };
      let result: SandboxResult;
      try {
        const overlay = writable.deferredOverlay;
        result = await runInSandbox(overlay ? { ...spec, rootOverlay: overlay } : spec, runOptions);
      } catch (err) {
        // runc could not mount the root overlay (and started nothing): mounted here, or copied.
        if (!isTbuildError(err) || err.code !== "E_SANDBOX_ROOT_MOUNT") throw err;
        await writable.mountOnHost();
        result = await runInSandbox(spec, runOptions);
      }
      exit = { exitCode: result.exitCode, ...(result.signal ? { signal: result.signal } : {}) };
      return exit;
    } catch (err) {
      const failure = startFailure(err);
      if (failure) {
        exit = { exitCode: failure.exitCode };
        // runc started, the process did not.
        processStarted = false;
      }
      throw failure ?? err;
    } finally {
      this.process = undefined;
      // Opened even when the run failed before it was awaited: closed all the same.
      network ??= await networkOpening.catch(() => undefined);
      // Independent of each other, so done at once; the guard stays until all are done. The
      // writable layer goes with one blocking call: `tbuild run` has nothing else to do meanwhile.
      const cleanups: Promise<unknown>[] = [
        writable?.release({ blocking: true }) ?? Promise.resolve(),
        network?.close() ?? Promise.resolve(),
      ];
      if (options.remove) {
        // The container's directory goes, its sandbox state with it.
        cleanups.push(this.removeAnonymousVolumes(volumes), this.containers.remove(record));
      } else {
        cleanups.push(rm(stateDir, { recursive: true, force: true }));
        // A process that never started leaves the container "created", as docker shows it.
        record.state = processStarted
          ? {
              status: "exited",
              ...(record.state.startedAt ? { startedAt: record.state.startedAt } : {}),
              finishedAt: new Date().toISOString(),
              ...(exit ? { exitCode: exit.exitCode } : {}),
            }
          : { status: "created", ...(exit ? { exitCode: exit.exitCode } : {}) };
        cleanups.push(this.containers.write(record));
      }
      await allSettledOrFirstError(cleanups);
      guard?.stop();
    }
  }

  /**
   * Sends a signal to the container's process (runc passes it on). Before `onStart` and after the
   * end there is no process: returns false.
   */
  kill(signal: NodeJS.Signals): boolean {
    if (this.process === undefined) return false;
    this.process.kill(signal);
    return true;
  }

  /**
   * A private network's namespace, forwarder and user-mode stack, from the record (so that a
   * container started again from its record alone gets the same); undefined for host and none.
   */
  private async openNetwork(): Promise<ContainerNetwork | undefined> {
    if (this.record.network !== "private") return undefined;
    const { openPrivateNetwork } = await import("./network.js");
    return openPrivateNetwork({
      ports: this.record.ports ?? [],
      env: this.options.env ?? process.env,
      ...(this.options.warn ? { warn: this.options.warn } : {}),
    });
  }

  /** Volumes made (and seeded from the image when empty), bind sources checked: the sandbox's mounts. */
  private async prepareMounts(
    rootfs: string,
    volumes: VolumeStore,
    signal?: AbortSignal,
  ): Promise<SandboxMount[]> {
    const mounts: SandboxMount[] = [];
    for (const mount of this.options.mounts) {
      let source: string;
      if (mount.kind === "bind") {
        source = mount.source;
        // Docker makes a missing host directory for -v; so does tbuild.
        const info = await stat(source).catch(() => undefined);
        if (info === undefined) await mkdir(source, { recursive: true });
      } else {
        const volume = await volumes.open(mount.name);
        if (volume.empty && !mount.noCopy)
          await seedVolume(rootfs, mount.destination, volume.dataDir, signal);
        source = volume.dataDir;
      }
      mounts.push({
        destination: mount.destination,
        source,
        type: "bind",
        ...(mount.readonly ? { readonly: true } : {}),
      });
    }
    return mounts;
  }

  private async removeAnonymousVolumes(volumes: VolumeStore): Promise<void> {
    for (const mount of this.options.mounts) {
      if (mount.kind === "volume" && mount.anonymous) await volumes.remove(mount.name);
    }
  }
}

/** The record's network fields: the optional ones only when set. */
function networkRecord(
  settings: NetworkSettings,
): Pick<ContainerRecord, "network" | "ports" | "hostname" | "dns" | "extraHosts"> {
  return {
    network: settings.network,
    ...(settings.ports.length > 0 ? { ports: settings.ports } : {}),
    ...(settings.hostname !== undefined ? { hostname: settings.hostname } : {}),
    ...(settings.dns ? { dns: settings.dns } : {}),
    ...(settings.extraHosts ? { extraHosts: settings.extraHosts } : {}),
  };
}

/** The platform an image is for, as its config says (what the kernel, or QEMU, must run). */
function imagePlatform(image: Image): Platform {
  const { os, architecture, variant } = image.config;
  return { os, architecture, ...(variant ? { variant } : {}) };
}

/** Waits for every one of `promises`, then rejects with the first rejection, if any. */
async function allSettledOrFirstError(promises: Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(promises)).find((outcome) => outcome.status === "rejected");
  if (failed) throw failed.reason;
}

/**
 * The process could not be started: docker's exit codes, so scripts tell it from the process's own
 * failure: 127 when the command is not found, 126 when it cannot be run.
 */
export class ContainerStartError extends TbuildError {
  constructor(message: string, exitCode: number, cause: unknown) {
    super("E_CONTAINER_START", message, { exitCode, cause });
  }
}

function startFailure(err: unknown): ContainerStartError | undefined {
  if (!isTbuildError(err)) return undefined;
  // Under an emulator, the command is looked up through the container's PATH before runc starts.
  if (err.code === "E_SANDBOX_EXEC") return new ContainerStartError(err.message, 127, err);
  // The sandbox's SandboxError for a runc that failed (the module is loaded lazily, so by its code).
  if (err.code !== "E_SANDBOX_RUNC") return undefined;
  if (/exec: .*(executable file not found|no such file or directory)/i.test(err.message)) {
    return new ContainerStartError(err.message, 127, err);
  }
  if (/exec: .*(permission denied|exec format error)/i.test(err.message))
    return new ContainerStartError(err.message, 126, err);
  return undefined;
}

/** A running container cannot be removed without `force`. */
export class ContainerRunningError extends TbuildError {
  constructor(name: string) {
    super(
      "E_CONTAINER_RUNNING",
      `container ${name} is running: stop it first (end its process), or remove it anyway with 'tbuild rm -f ${name}'`,
    );
  }
}

/** How long `rm -f` waits for a killed container's guard to have stopped it and unmounted. */
const FORCED_STOP_TIMEOUT_MS = 15_000;

/**
 * Removes a kept container: its writable layer, its anonymous volumes, its record. A running one
 * is refused unless `force`, which kills the tbuild process running it; that process's guard then
 * kills the container and unmounts (the guard, in the container's own namespaces, is the one
 * process sure to be allowed to).
 */
export async function removeContainer(
  store: Store,
  record: ContainerRecord,
  options: { force: boolean },
): Promise<void> {
  const containers = new ContainerStore(store.root);
  const state = currentState(record);
  if (state.status === "running") {
    if (!options.force) throw new ContainerRunningError(record.name);
    await stopForcibly(record, containers);
  }
  const snapshotter = new Snapshotter(store.root, store.content);
  await snapshotter.removeWritable(record.id);
  const volumes = new VolumeStore(store.root);
  for (const mount of record.mounts) {
    if (mount.kind === "volume" && mount.anonymous) await volumes.remove(mount.name);
  }
  await containers.remove(record);
}

async function stopForcibly(record: ContainerRecord, containers: ContainerStore): Promise<void> {
  const pid = record.state.pid!;
  try {
    process.kill(pid, "SIGKILL");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
  const stateDir = path.join(containers.containerDir(record.id), "sandbox");
  const deadline = Date.now() + FORCED_STOP_TIMEOUT_MS;
  while (processStartTime(pid) === record.state.pidStartTime || (await exists(stateDir))) {
    if (Date.now() > deadline) {
      throw new TbuildError(
        "E_CONTAINER_STOP",
        `container ${record.name} did not stop within ${FORCED_STOP_TIMEOUT_MS / 1000} s of killing tbuild process ${pid}; run 'tbuild rm -f ${record.name}' again`,
      );
    }
    await sleep(50);
  }
}

async function exists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => undefined)) !== undefined;
}
