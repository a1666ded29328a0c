/**
 * One process in a runc container, from start to a clean end. Each run has a directory of its own
 * under the caller's state directory (the bundle, runc's `--root`, runc's log), so parallel runs
 * never share runc state; whatever way the run ends, the container is gone, runc's state and the
 * directory are removed, and mount points runc had to create in the root filesystem are removed
 * again. The container's mounts live in its own mount namespace and vanish with its pid 1.
 */
import { execFile, type StdioOptions, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  type FSWatcher,
  mkdirSync,
  readFileSync,
  rmSync,
  watch,
  writeFileSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { constants as osConstants } from "node:os";
import path from "node:path";
import type { Writable } from "node:stream";
import { DEFAULT_PATH } from "../../oci/spec.js";
import { directoryTree } from "../root-path.js";
import { inUserNamespace, readGidMap, readUidMap } from "../userns.js";
import { SandboxError } from "./errors.js";
import {
  checkSandboxPrivileges,
  findRunc,
  type HostFacts,
  hostsFile,
  probeHost,
  readHostResolvConf,
  resolvConfFor,
} from "./host.js";
import { killContainerProcesses } from "./kill.js";
import { layeredTree, lookPathInRoot, MountStubs, mkdirInRoot, type RootTree } from "./rootfs-path.js";
import { buildRuntimeSpec, type EmulatedStart, ETC_FILES, type SandboxSpec } from "./spec.js";
import { checkUserMapped, resolveUser } from "./user.js";

export interface SandboxRunOptions {
  /**
   * Parent directory for the run's own directory `<stateDir>/<id>`: the bundle (`bundle/`), runc's
   * `--root` (`runc/`) and runc's log. That directory is removed after the run; `stateDir` stays.
   */
  stateDir: string;
  /** Default "ignore" (/dev/null). A stream is piped to the process and closed when it ends. */
  stdin?: NodeJS.ReadableStream | "inherit" | "ignore";
  /** Default "inherit". Output is streamed as it comes; a stream given here is never ended. */
  stdout?: NodeJS.WritableStream | "inherit";
  stderr?: NodeJS.WritableStream | "inherit";
  /** Timeout or abort kills the container (SIGTERM, then SIGKILL after `killGraceMs`). */
  timeoutMs?: number;
  /** Aborting kills the container, removes its state, then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** The container id (runc's); default a random one. Must be unique within `stateDir`. */
  id?: string;
  /** How long the process may take to exit after SIGTERM on timeout or abort. Default 1000 ms. */
  killGraceMs?: number;
  /** Called once runc is started, with a handle to signal the container (for `tbuild run`). */
  onStart?: (container: SandboxProcess) => void;
  /**
   * Called once the container's process has been started (runc has created the container and
   * told it to run its command), with its host pid: from then on a failure is the process's own,
   * not runc's. Not called when runc fails before (a command not found, say).
   */
  onRunning?: (pid: number) => void;
}

/** A running container, as `onStart` sees it. */
export interface SandboxProcess {
  id: string;
  /**
   * Sends a signal to the container's pid 1 (through runc, which forwards what it receives, and
   * with `runc kill` for SIGKILL and SIGSTOP). As for any pid 1, a signal it has no handler for is
   * ignored, SIGKILL excepted.
   */
  kill(signal: NodeJS.Signals): void;
}

export interface SandboxResult {
  /** The process's exit code; 128 + n when signal n killed it (as runc and Docker report it). */
  exitCode: number;
  /**
   * The signal that ended the container when tbuild knows it: the one it sent on timeout (an exit
   * code of 128 + n alone cannot tell `kill -9` from `exit 137`).
   */
  signal?: NodeJS.Signals;
  timedOut: boolean;
}

const CONTAINER_ID = /^[\w+.-]+$/;
/** After runc is told to SIGKILL the container, how long it may take to notice before it is killed itself. */
const RUNC_EXIT_GRACE_MS = 2000;
/** runc's own fatal message on stderr: the same words as in its log, so tbuild prints them once. */
const RUNC_FATAL_PREFIX = /(^|\n)runc run failed: /;

/** Runs one process in a fresh container over `spec.rootfs`. */
export async function runInSandbox(spec: SandboxSpec, options: SandboxRunOptions): Promise<SandboxResult> {
  try {
    return await runOnce(spec, options);
  } catch (err) {
    // Started once more only where nothing was lost: the process never ran, and had no input.
    if (!isInitRace(err) || (options.stdin ?? "ignore") !== "ignore") throw err;
    return runOnce(spec, options);
  }
}

/**
 * runc's init failing before the process is executed, because /proc/self/fd could not be opened
 * at that moment: seen when several rootless containers start at once on a loaded machine (in
 * test/worker/sandbox/lifecycle.test.ts), a RUN step failing for nothing it did. The container is
 * gone by then (its state removed), so it can be started again.
 */
function isInitRace(err: unknown): boolean {
  return (
    err instanceof SandboxError &&
    err.code === "E_SANDBOX_RUNC" &&
    /error closing exec fds: open \/proc\/self\/fd: no such file or directory/.test(err.message)
  );
}

async function runOnce(spec: SandboxSpec, options: SandboxRunOptions): Promise<SandboxResult> {
  options.signal?.throwIfAborted();
  const runc = findRunc();
  checkSandboxPrivileges();
  const id = options.id ?? randomBytes(16).toString("hex");
  if (!CONTAINER_ID.test(id)) {
    throw new SandboxError(
      "E_SANDBOX_SPEC",
      `invalid container id "${id}": letters, digits, "_", "+", "-", "." only`,
    );
  }
  // A root overlay runc mounts is read, until then, from the layers it merges.
  const tree = spec.rootOverlay
    ? layeredTree(spec.rootOverlay.layers, spec.rootOverlay.upper)
    : directoryTree(spec.rootfs);
  refuseLinkedDev(tree);
  const [facts, ids, hostResolvConf] = await Promise.all([
    probeHost(),
    resolveUser(tree, spec.user),
    readHostResolvConf(),
  ]);
  if (inUserNamespace()) checkUserMapped(ids, spec.user, { uid: readUidMap(), gid: readGidMap() });
  const hostname = spec.hostname ?? id.slice(0, 12);

  // A handful of small calls on every run: synchronous ones spare a thread-pool round trip each.
  mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
  const runDir = path.join(options.stateDir, id);
  try {
    mkdirSync(runDir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    throw new SandboxError("E_SANDBOX_ID", `a container with id ${id} already exists in ${options.stateDir}`);
  }
  let stubs: MountStubs | undefined;
  try {
    const bundleDir = path.join(runDir, "bundle");
    mkdirSync(bundleDir);
    // runc in a user namespace and the container's users must be able to reach the /etc files.
    chmodSync(runDir, 0o711);
    chmodSync(bundleDir, 0o711);
    const host: HostFacts = { ...facts, bundleDir, containerId: id };
    const files: Record<string, string> = {
      "/etc/hosts": hostsFile(hostname, spec.extraHosts),
      "/etc/resolv.conf": resolvConfFor(hostResolvConf, spec.network, spec.nameservers),
      "/etc/hostname": `${hostname}\n`,
    };
    for (const [destination, file] of Object.entries(ETC_FILES)) {
      writeFileSync(path.join(bundleDir, file), files[destination], { mode: 0o644 });
    }
    const config = buildRuntimeSpec({ ...spec, hostname }, ids, host, emulatedStart(spec, tree));
    writeFileSync(path.join(bundleDir, "config.json"), JSON.stringify(config));
    // Docker creates a missing working directory (BuildKit owns it to the step's user); created
    // before the stubs are recorded, so that it stays. Under a root overlay runc creates it.
    if (!spec.rootOverlay) {
      const owner = spec.workdirOwner === "root" ? { uid: 0, gid: 0 } : ids;
      await mkdirInRoot(spec.rootfs, spec.cwd, owner.uid, owner.gid);
    }
    if (!spec.changesDiscarded) {
      stubs = await MountStubs.record(
        tree,
        (config.mounts ?? []).map((m) => m.destination).filter((destination) => destination !== "/"),
      );
    }
    options.signal?.throwIfAborted();
    return await superviseRunc(
      runc,
      id,
      runDir,
      bundleDir,
      facts.rootless,
      spec.rootOverlay !== undefined,
      options,
    );
  } finally {
    await stubs?.clean();
    // A few small files and directories: at once, without a round trip per entry.
    rmSync(runDir, { recursive: true, force: true });
  }
}

/**
 * runc mounts the container's /dev inside the root (following a symlink there as if the root were
 * `/`), but then makes /dev's links (fd, stdin, stdout, stderr, ptmx: removed first) by joining
 * host paths: an image whose /dev is a symlink (to `/etc`, `../../..`) would have runc write there,
 * on the host. Such an image is refused before runc starts.
 */
function refuseLinkedDev(tree: RootTree): void {
  if (tree.lstat("dev")?.isSymbolicLink() !== true) return;
  throw new SandboxError(
    "E_SANDBOX_DEV_LINK",
    `the image's /dev is a symbolic link (to ${JSON.stringify(tree.readlink("dev"))}): runc would make the container's device links outside the container; use an image whose /dev is a directory, or has none`,
  );
}

/**
 * Under an emulator, the program QEMU is to load: the process's command looked up through its PATH
 * in the root filesystem, as runc would have looked it up inside the container.
 */
function emulatedStart(spec: SandboxSpec, tree: RootTree): EmulatedStart | undefined {
  if (spec.emulator === undefined) return undefined;
  const command = spec.args[0]!;
  const pathEntry = spec.env.findLast((entry) => entry.startsWith("PATH="));
  const searchPath = pathEntry !== undefined ? pathEntry.slice("PATH=".length) : DEFAULT_PATH;
  const executable = lookPathInRoot(tree, command, searchPath);
  if (executable === undefined) {
    throw new SandboxError(
      "E_SANDBOX_EXEC",
      `exec: "${command}": executable file not found in $PATH (${searchPath}) of the container`,
    );
  }
  return { executable };
}

function signalNumber(signal: NodeJS.Signals): number {
  return osConstants.signals[signal] ?? 0;
}

function runcCommand(runc: string, args: string[]): Promise<void> {
  return new Promise((resolve) => {
    execFile(runc, args, { env: runcEnv(), timeout: 10_000 }, () => resolve());
  });
}

/**
 * runc's environment: PATH only. runc reads NOTIFY_SOCKET and friends from its environment and
 * would hand the host's systemd socket to the container.
 */
export function runcEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
}

/** Error-level messages runc wrote to its JSON log. */
async function runcErrors(logFile: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(logFile, "utf8");
  } catch {
    return [];
  }
  const messages: string[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if ((entry.level === "error" || entry.level === "fatal") && entry.msg) messages.push(entry.msg);
    } catch {
      messages.push(line);
    }
  }
  return messages;
}

/**
 * Forwards runc's stderr (the container's stderr, without a terminal) as it comes, but holds back
 * from runc's fatal message on: runc prints it there as well as in its log, and tbuild reports it
 * as an error instead. Held text that turns out not to be runc's is forwarded at the end.
 */
class StderrForwarder {
  private held: Buffer[] = [];
  private readonly target: NodeJS.WritableStream;

  constructor(target: NodeJS.WritableStream) {
    this.target = target;
  }

  /** False when the target is full: the caller waits for its "drain". */
  write(chunk: Buffer): boolean {
    if (this.held.length > 0) {
      this.held.push(chunk);
      return true;
    }
    const match = RUNC_FATAL_PREFIX.exec(chunk.toString("latin1"));
    if (!match) return this.target.write(chunk);
    const start = match.index + match[1].length;
    this.held.push(chunk.subarray(start));
    return start > 0 ? this.target.write(chunk.subarray(0, start)) : true;
  }

  onDrain(resume: () => void): void {
    this.target.once("drain", resume);
  }

  finish(runcFailed: boolean): void {
    if (!runcFailed) for (const chunk of this.held) this.target.write(chunk);
    this.held = [];
  }
}

function superviseRunc(
  runc: string,
  id: string,
  runDir: string,
  bundleDir: string,
  rootless: boolean,
  rootOverlay: boolean,
  options: SandboxRunOptions,
): Promise<SandboxResult> {
  const runcRoot = path.join(runDir, "runc");
  const logFile = path.join(runDir, "runc.log");
  const global = ["--root", runcRoot, "--log", logFile, "--log-format", "json"];
  // In the user namespace runc can create no cgroups: told so, it skips them instead of failing.
  if (rootless) global.push("--rootless", "true");

  const stdin = options.stdin ?? "ignore";
  const stdout = options.stdout ?? "inherit";
  const stdio: StdioOptions = [
    typeof stdin === "string" ? stdin : "pipe",
    stdout === "inherit" ? "inherit" : "pipe",
    "pipe",
  ];
  const stderr = new StderrForwarder(
    options.stderr === undefined || options.stderr === "inherit" ? process.stderr : options.stderr,
  );

  // runc writes the pid file (by rename) once the container's process is told to run.
  const pidFile = path.join(runDir, "pid");
  let pidWatcher: FSWatcher | undefined;
  /** The container's PID 1 on the host, once runc's pid file says it. */
  let containerPid: number | undefined;
  if (options.onRunning) {
    const onRunning = (pid: number) => {
      containerPid = pid;
      options.onRunning?.(pid);
    };
    pidWatcher = watch(runDir, (_event, name) => {
      if (name !== "pid" || pidWatcher === undefined) return;
      let pid: number;
      try {
        pid = Number(readFileSync(pidFile, "utf8").trim());
      } catch {
        return;
      }
      pidWatcher.close();
      pidWatcher = undefined;
      onRunning(pid);
    });
  }
  const pidArgs = options.onRunning ? ["--pid-file", pidFile] : [];
  return new Promise<SandboxResult>((resolve, reject) => {
    const child = spawn(runc, [...global, "run", ...pidArgs, "--bundle", bundleDir, id], {
      stdio,
      env: runcEnv(),
    });
    let exited = false;
    let stopSignal: NodeJS.Signals | undefined;
    let timedOut = false;
    let aborted = false;
    const timers: NodeJS.Timeout[] = [];

    if (typeof stdin !== "string" && child.stdin) {
      // The process may exit without reading everything: a closed pipe is not an error.
      child.stdin.on("error", () => {});
      stdin.pipe(child.stdin);
    }
    if (typeof stdout !== "string") child.stdout?.pipe(stdout as Writable, { end: false });
    child.stderr?.on("data", (chunk: Buffer) => {
      // A slow reader slows the process down, as a pipe would, rather than filling memory.
      if (!stderr.write(chunk)) {
        child.stderr?.pause();
        stderr.onDrain(() => child.stderr?.resume());
      }
    });

    const stop = () => {
      if (stopSignal || exited) return;
      stopSignal = "SIGTERM";
      child.kill("SIGTERM");
      timers.push(
        setTimeout(() => {
          if (exited) return;
          stopSignal = "SIGKILL";
          // runc kills the container's pid 1, and the kernel every process of its pid namespace;
          // unless pid 1 cannot die (held in a ptrace stop): then its processes are killed one by one.
          void runcCommand(runc, [...global, "kill", id, "KILL"]);
          void killContainerProcesses(runcRoot, id).catch(() => {});
          timers.push(
            setTimeout(() => {
              // runc did not exit (it was still creating the container): end it; the cleanup
              // below deletes whatever it left.
              if (!exited) child.kill("SIGKILL");
            }, RUNC_EXIT_GRACE_MS),
          );
        }, options.killGraceMs ?? 1000),
      );
    };
    const onAbort = () => {
      aborted = true;
      stop();
    };
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.timeoutMs !== undefined) {
      timers.push(
        setTimeout(() => {
          timedOut = true;
          stop();
        }, options.timeoutMs),
      );
    }

    child.once("spawn", () => {
      options.onStart?.({
        id,
        kill: (signal) => {
          if (exited) return;
          // SIGKILL and SIGSTOP cannot be caught, so runc cannot forward them: sent to the
          // container's PID 1 directly once its pid is known (runc, its parent, has not reaped
          // it while it runs), else by `runc kill`.
          if (signal === "SIGKILL" || signal === "SIGSTOP") {
            if (containerPid !== undefined) {
              try {
                process.kill(containerPid, signal);
                return;
              } catch {
                // gone already, or not ours to signal: runc's way below
              }
            }
            void runcCommand(runc, [...global, "kill", id, signal]);
          } else child.kill(signal);
        },
      });
    });
    child.once("error", (err) => {
      // Only a runc that never started ends the run here; otherwise "close" follows.
      if (child.pid !== undefined) return;
      exited = true;
      pidWatcher?.close();
      reject(new SandboxError("E_SANDBOX_RUNC", `cannot start ${runc}: ${err.message}`, { cause: err }));
    });
    child.once("close", (code, signal) => {
      exited = true;
      if (pidWatcher !== undefined) {
        pidWatcher.close();
        pidWatcher = undefined;
        // A process that ended at once: its pid file was written, the event not yet delivered.
        const pid = Number(existsSync(pidFile) ? readFileSync(pidFile, "utf8").trim() : "");
        if (pid > 0) options.onRunning?.(pid);
        containerPid = undefined;
      }
      for (const timer of timers) clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      if (typeof stdin !== "string" && child.stdin) stdin.unpipe(child.stdin);
      void (async () => {
        // runc removes its state when `run` ends normally; after a kill it may not have, and the
        // container may outlive it (runc was killed while its pid 1 could not die).
        if (existsSync(path.join(runcRoot, id))) {
          await killContainerProcesses(runcRoot, id).catch(() => 0);
          await runcCommand(runc, [...global, "delete", "--force", id]);
        }
        const errors = await runcErrors(logFile);
        const runcFailed = errors.length > 0 && code !== null;
        stderr.finish(runcFailed && !stopSignal);
        if (aborted) {
          reject(options.signal?.reason ?? new DOMException("This operation was aborted", "AbortError"));
          return;
        }
        const exitCode = code ?? 128 + signalNumber(signal as NodeJS.Signals);
        if (runcFailed && !stopSignal) {
          reject(runcFailure(errors[errors.length - 1], rootOverlay, options));
          return;
        }
        const known = stopSignal && exitCode === 128 + signalNumber(stopSignal) ? { signal: stopSignal } : {};
        resolve({ exitCode, timedOut, ...known });
      })().catch(reject);
    });
  });
}

function runcFailure(message: string, rootOverlay: boolean, options: SandboxRunOptions): SandboxError {
  const text = message.replace(/^runc run failed: /, "");
  // The process never started: the caller may mount the root itself and run again.
  if (rootOverlay && /mounting "overlay" to rootfs at "\/"/.test(text))
    return new SandboxError("E_SANDBOX_ROOT_MOUNT", `runc cannot mount the root overlay: ${text}`);
  const hint =
    /\/dev\/tty|not a tty|console/i.test(text) && options.stdout !== "inherit"
      ? "\nA terminal needs tbuild's own stdin or stdout to be a terminal."
      : "";
  return new SandboxError("E_SANDBOX_RUNC", `runc failed: ${text}${hint}`);
}
