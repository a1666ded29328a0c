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
import { readFileSync } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isTbuildError, TbuildError } from "../errors/index.js";
import { type Image, readImage } from "../oci/image.js";
import type { Platform } from "../oci/platform.js";
import type { ContainerConfig, RuntimeSpec } from "../oci/spec.js";
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
import { mergeEnv, processArgs } from "./config.js";
import {
  type ContainerRecord,
  ContainerStore,
  currentState,
  newContainerId,
  processStartTime,
} from "./containers.js";
import {
  ContainerNotRunningError,
  type ControlHandler,
  type ControlRequest,
  ControlServer,
  type ExecTarget,
} from "./control.js";
import { Guard } from "./guard.js";
import { argsUnderInit, findInit, INIT_MOUNT, initMountFailure } from "./init.js";
import type { LogOptions } from "./logs.js";
import type { MountRequest } from "./mounts.js";
import type { ContainerNetwork } from "./network.js";
import type { NetworkSettings } from "./ports.js";
import { parseSignal } from "./signals.js";
import { seedVolume, VolumeStore, volumeUsers } from "./volumes.js";

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
  /** `--stop-timeout`: seconds `stop` waits after the stop signal before SIGKILL. */
  stopTimeout?: number;
  /** `--init`: a tiny init (tini) as PID 1, running the process (runtime/init.ts). */
  init?: boolean;
  /** `--log-opt`: the log's size cap and parts, when it runs detached. */
  logOptions?: LogOptions;
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
  /** Called once runc has started the container's command (a command not found never gets here). */
  onRunning?: () => void;
  /** Called once the process has ended, before its exit is recorded. */
  onExited?: () => void;
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
  /** Settled with the exit code once the container has exited and its state is recorded. */
  private readonly exited: Promise<number>;
  /** Settled once runc has started the container's command (its pid file is written). */
  private readonly running: Promise<void>;
  private settleRunning!: () => void;
  private isRunning = false;
  private settleExit!: (code: number) => void;
  /** The container's root filesystem as its process sees it, while it runs (for exec's -u). */
  private tree?: import("../worker/sandbox/rootfs-path.js").RootTree;
  /** The run's runc state and bundle, while it runs. */
  private sandbox?: { runc: string; runcRoot: string; sandboxId: string; bundleDir: string };

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
    this.running = new Promise<void>((resolve) => {
      this.settleRunning = resolve;
    });
    this.exited = new Promise<number>((resolve) => {
      this.settleExit = resolve;
    });
    this.exited.catch(() => {});
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
    const platform = imagePlatform(options.image);
    const emulator = await containerEmulator(platform, options.env ?? process.env);
    const init = options.init ? initFor(platform, emulator, options.env ?? process.env) : undefined;
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
        ...(options.remove ? { autoRemove: true } : {}),
        ...(options.stopTimeout !== undefined ? { stopTimeout: options.stopTimeout } : {}),
        ...(init !== undefined ? { init } : {}),
        ...(options.logOptions !== undefined ? { logOptions: options.logOptions } : {}),
        state: { status: "created" },
      },
      options.name,
    );
    return new Container(store, containers, record, options, emulator);
  }

  /**
   * A kept container, to run again (`tbuild start`): its image read from the store by the digest
   * it was created from, every setting from its record.
   */
  static async open(
    store: Store,
    record: ContainerRecord,
    options: { warn?: (message: string) => void; env?: NodeJS.ProcessEnv } = {},
  ): Promise<Container> {
    const image = await readImage(store.content, record.image.descriptor);
    const emulator = await containerEmulator(imagePlatform(image), options.env ?? process.env);
    const containers = new ContainerStore(store.root);
    const containerOptions: ContainerOptions = {
      image,
      imageName: record.image.name,
      config: record.config,
      mounts: record.mounts,
      network: {
        network: record.network,
        ports: record.ports ?? [],
        ...(record.hostname !== undefined ? { hostname: record.hostname } : {}),
        ...(record.dns ? { dns: record.dns } : {}),
        ...(record.extraHosts ? { extraHosts: record.extraHosts } : {}),
      },
      tty: record.tty,
      interactive: record.interactive,
      remove: record.autoRemove === true,
      ...(options.warn ? { warn: options.warn } : {}),
      ...(options.env ? { env: options.env } : {}),
    };
    return new Container(store, containers, record, containerOptions, emulator);
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
    let control: Promise<ControlServer> | undefined;
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
      const deferMount = !record.mounts.some((m) => m.kind === "volume");
      // A container run before has its writable layer kept: it goes on from its changes.
      const kept = (await snapshotter.listWritable()).includes(record.id);
      writable = kept
        ? await snapshotter.openWritable(record.id, lowers, { deferMount })
        : await snapshotter.mountWritable(lowers, { id: record.id, persistent: !options.remove, deferMount });
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
        args: record.init ? argsUnderInit([record.path, ...record.args]) : [record.path, ...record.args],
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
        mounts: record.init
          ? [{ destination: INIT_MOUNT, source: record.init, type: "bind", readonly: true }, ...mounts]
          : mounts,
        terminal: options.tty,
        ...(this.emulator !== undefined ? { emulator: this.emulator } : {}),
      };
      const { layeredTree } = await import("../worker/sandbox/rootfs-path.js");
      const { directoryTree } = await import("../worker/root-path.js");
      const rootOverlay = writable.deferredOverlay;
      this.tree = rootOverlay ? layeredTree(rootOverlay.layers, rootOverlay.upper) : directoryTree(rootfs);
      this.sandbox = {
        runc,
        runcRoot: path.join(stateDir, sandboxId, "runc"),
        sandboxId,
        bundleDir: path.join(stateDir, sandboxId, "bundle"),
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
          if (!processStarted) {
            control = ControlServer.listen(this.containers.containerDir(record.id), this.controlHandler());
            control.catch(() => {});
            io.onStart?.();
          }
          processStarted = true;
        },
        onRunning: () => {
          this.isRunning = true;
          this.settleRunning();
          io.onRunning?.();
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
      if (record.init && isTbuildError(err) && !failure) {
        const initFailure = initMountFailure(err, record.image.name);
        if (initFailure) throw initFailure;
      }
      if (failure) {
        exit = { exitCode: failure.exitCode };
        // runc started, the process did not.
        processStarted = false;
      }
      throw failure ?? err;
    } finally {
      this.process = undefined;
      this.isRunning = false;
      // Opened even when the run failed before it was awaited: closed all the same.
      network ??= await networkOpening.catch(() => undefined);
      io.onExited?.();
      // Independent of each other, so done at once; the guard stays until all are done. The
      // writable layer goes with one blocking call: `tbuild run` has nothing else to do meanwhile.
      const cleanups: Promise<unknown>[] = [
        writable?.release({ blocking: true }) ?? Promise.resolve(),
        network?.close() ?? Promise.resolve(),
      ];
      if (options.remove) {
        // The container's directory goes, its sandbox state with it.
        cleanups.push(
          removeAnonymousVolumes(record, this.containers, volumes),
          this.containers.remove(record),
        );
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
      try {
        await allSettledOrFirstError(cleanups);
      } finally {
        guard?.stop();
        this.tree = undefined;
        this.sandbox = undefined;
        // Waiters (`tbuild wait`, `stop`) answered once the exit is recorded, then the socket goes.
        this.settleExit(exit?.exitCode ?? -1);
        (await control?.catch(() => undefined))?.close();
      }
    }
  }

  /**
   * Stops the container as `docker stop` does: its stop signal (the image's STOPSIGNAL, SIGTERM by
   * default), then SIGKILL when it has not exited after `timeoutSeconds` (the container's
   * `--stop-timeout`, else 10). Resolves to its exit code once it has exited and is recorded.
   */
  async stop(timeoutSeconds?: number): Promise<number> {
    if (this.process === undefined) return this.exited;
    const grace = timeoutSeconds ?? this.record.stopTimeout ?? DEFAULT_STOP_TIMEOUT_SECONDS;
    // Not before the command runs: a signal to runc's init, still PID 1 then, would end it with
    // Go's exit status 2 instead of reaching the command's own handler. Waited for no longer
    // than the grace period, should runc never say so.
    if (!this.isRunning) {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(grace, 1) * 1000);
      });
      await Promise.race([this.running, this.exited, bound]);
      clearTimeout(timer);
    }
    if (this.process === undefined) return this.exited;
    if (grace !== 0) this.kill(parseSignal(this.record.config.StopSignal ?? "SIGTERM"));
    // -1: no SIGKILL, as docker's --stop-timeout=-1.
    if (grace < 0) return this.exited;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), grace * 1000);
    });
    try {
      if ((await Promise.race([this.exited, timedOut])) === "timeout") this.kill("SIGKILL");
    } finally {
      clearTimeout(timer);
    }
    return this.exited;
  }

  /** Resolves to the exit code once the container has exited and its state is recorded. */
  wait(): Promise<number> {
    return this.exited;
  }

  private controlHandler(): ControlHandler {
    return {
      stop: (timeout) => this.stop(timeout),
      kill: (signal) => {
        if (!this.kill(parseSignal(signal))) {
          throw new ContainerNotRunningError(this.record.name);
        }
      },
      wait: () => this.wait(),
      exec: (request) => this.execTarget(request),
    };
  }

  /**
   * What `tbuild exec` runs: the container's own process settings (its capabilities, seccomp
   * profile, rlimits, user, environment, working directory), with the command and what the exec's
   * flags change, for `runc exec --process`.
   */
  private async execTarget(request: Extract<ControlRequest, { op: "exec" }>): Promise<ExecTarget> {
    const { tree, sandbox } = this;
    if (tree === undefined || sandbox === undefined || this.process === undefined) {
      throw new ContainerNotRunningError(this.record.name);
    }
    const config = JSON.parse(
      readFileSync(path.join(sandbox.bundleDir, "config.json"), "utf8"),
    ) as RuntimeSpec;
    const original = config.process!;
    const { resolveUser } = await import("../worker/sandbox/user.js");
    let env = [...(original.env ?? [])];
    let user = original.user as ExecTarget["process"]["user"];
    if (request.user !== undefined && request.user !== "") {
      const ids = await resolveUser(tree, request.user);
      user = { uid: ids.uid, gid: ids.gid, additionalGids: ids.additionalGids };
      env = mergeEnv(env, [`HOME=${ids.home || "/"}`]);
    }
    env = mergeEnv(env, request.env ?? []);
    let args = [...request.args];
    if (this.emulator !== undefined) {
      const { DEFAULT_PATH } = await import("../oci/spec.js");
      const { lookPathInRoot } = await import("../worker/sandbox/rootfs-path.js");
      const { EMULATOR_MOUNT } = await import("../worker/emulation.js");
      const pathEntry = env.findLast((entry) => entry.startsWith("PATH="));
      const searchPath = pathEntry !== undefined ? pathEntry.slice("PATH=".length) : DEFAULT_PATH;
      const executable = lookPathInRoot(tree, args[0]!, searchPath);
      if (executable === undefined) {
        throw new ContainerStartError(
          `exec: "${args[0]}": executable file not found in $PATH (${searchPath}) of the container`,
          127,
          undefined,
        );
      }
      args = [EMULATOR_MOUNT, "-0", args[0]!, executable, ...args.slice(1)];
    }
    const global = ["--root", sandbox.runcRoot, ...(inUserNamespace() ? ["--rootless", "true"] : [])];
    return {
      runc: sandbox.runc,
      runcGlobal: global,
      sandboxId: sandbox.sandboxId,
      ...(inUserNamespace() ? { namespacePid: process.pid } : {}),
      process: {
        ...original,
        args,
        env,
        cwd: request.workdir ?? original.cwd ?? "/",
        user,
      } as ExecTarget["process"],
    };
  }

  /**
   * Sends a signal to the container's process (runc passes it on). Before `onStart` and after the
   * end there is no process: returns false.
   */
  kill(signal: NodeJS.Signals): boolean {
    if (this.process === undefined) return false;
    if (this.isRunning || signal === "SIGKILL") {
      this.process.kill(signal);
      return true;
    }
    // runc passes signals on once the command runs; before, one would end runc itself (and leave
    // the container to start unsupervised). SIGKILL goes by runc's own `kill` at any time.
    void Promise.race([this.running, this.exited]).then(() => {
      if (this.isRunning) this.process?.kill(signal);
    });
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
    for (const mount of this.record.mounts) {
      let source: string;
      if (mount.kind === "bind") {
        source = mount.source;
        // Docker makes a missing host directory for -v; so does tbuild.
        const info = await stat(source).catch(() => undefined);
        if (info === undefined) await mkdir(source, { recursive: true });
      } else {
        const volume = await volumes.open(mount.name, { anonymous: mount.anonymous });
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
}

/**
 * Docker's rule for `--rm` and `rm -v`: the container's anonymous volumes go with it, unless
 * another container mounts one too (by its name); named volumes always stay.
 */
async function removeAnonymousVolumes(
  record: ContainerRecord,
  containers: ContainerStore,
  volumes: VolumeStore,
): Promise<void> {
  const anonymous = record.mounts.filter((m) => m.kind === "volume" && m.anonymous);
  if (anonymous.length === 0) return;
  const users = volumeUsers((await containers.list()).filter((c) => c.id !== record.id));
  for (const mount of anonymous) {
    if (mount.kind === "volume" && !users.has(mount.name)) await volumes.remove(mount.name);
  }
}

/** Docker's default grace period for `stop` (`--stop-timeout`, `-t`). */
const DEFAULT_STOP_TIMEOUT_SECONDS = 10;

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

/**
 * The init for `--init` (InitNotFoundError when there is none). Under QEMU user emulation it would
 * run the host's tini as the emulated process's parent, which the emulator's start does not allow.
 */
function initFor(platform: Platform, emulator: string | undefined, env: NodeJS.ProcessEnv): string {
  if (emulator !== undefined) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `--init with an image for ${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ""}, which runs under QEMU user emulation here, is not supported yet: drop --init, or register a binfmt_misc handler so the kernel runs it`,
    );
  }
  return findInit(env);
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
 * Removes a kept container: its writable layer, its record, and with `volumes` (`rm -v`) its
 * anonymous volumes, which docker's `rm` otherwise leaves (dangling, for `volume prune`). A
 * running one is refused unless `force`, which kills the tbuild process running it; that
 * process's guard then kills the container and unmounts (the guard, in the container's own
 * namespaces, is the one process sure to be allowed to).
 */
export async function removeContainer(
  store: Store,
  record: ContainerRecord,
  options: { force: boolean; volumes?: boolean },
): Promise<void> {
  const containers = new ContainerStore(store.root);
  const state = currentState(record);
  if (state.status === "running") {
    if (!options.force) throw new ContainerRunningError(record.name);
    await stopForcibly(record, containers);
  }
  const snapshotter = new Snapshotter(store.root, store.content);
  await snapshotter.removeWritable(record.id);
  if (options.volumes) await removeAnonymousVolumes(record, containers, new VolumeStore(store.root));
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
