/**
 * The library for an unprivileged caller. Building and running need root, or root of tbuild's
 * user namespace over the user's subordinate ids; the CLI re-runs itself inside one
 * (worker/userns.ts), and the library does the same for its caller's call, as podman's and
 * buildah's Go libraries re-exec their binary: it starts this package's CLI (on the caller's own
 * Node, which the `node` package's binary may be missing beside) as `tbuild __library-call` inside
 * the namespace, and the two speak one JSON object per line over a socket (CONTROL_FD). The call
 * goes in as plain data (a BuildRequest as it is); out come the BuildEvents, warnings, the
 * container's start, and the result or the error, rebuilt here as the same TbuildError (its class
 * where the library exports it, its code, message and fields).
 *
 * Aborting the caller's signal asks the child to cancel, as Ctrl-C does (running steps stopped,
 * their state removed); the call settles only once the child has exited, so none is left behind.
 * Killed outright, the caller takes the child with it (the namespace's lifeline and parent-death
 * signal). Secrets given by `env` travel in the child's environment, as through the CLI's
 * re-exec: never in argv, never in a file.
 */
import type { ChildProcess } from "node:child_process";
import type { Socket } from "node:net";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { finished } from "node:stream/promises";
import type { BuildEvent } from "../build/events.js";
import { BuildStepFailedError } from "../build/failure.js";
import { BadBuildRequestError, type BuildRequest, checkBuildRequest } from "../build/request.js";
import type { BuildResult } from "../build/run.js";
import { isTbuildError, TbuildError, UsageError } from "../errors/index.js";
import { errorFromWire, type WireError } from "../errors/wire.js";
import { defaultStoreRoot } from "../oci/store/index.js";
import { stopAbandonedContainers } from "../worker/build-state.js";
import { FIRST_EXTRA_FD, rootlessExecError, spawnInUserNamespace } from "../worker/userns.js";
import type { BuildOptions } from "./build.js";
import { cliEntry } from "./cli-entry.js";
import { BuildCanceledError } from "./errors.js";
import type { RunOptions, RunResult } from "./run.js";

/** The CLI's hidden command that serves one library call (api/rootless-child.ts); not in its help. */
export const LIBRARY_CALL_COMMAND = "__library-call";
/** The child's end of the call's socket. */
export const CONTROL_FD = FIRST_EXTRA_FD;

/** RunOptions that cross to the child as they are: none of its streams, callbacks, signal or environment. */
export type RunCallOptions = Omit<
  RunOptions,
  "stdin" | "stdout" | "stderr" | "signal" | "onStart" | "env" | "cwd" | "store" | "onWarning"
> & { stdin: "inherit" | "ignore" };

/** The one call a child serves; relative paths are relative to `cwd`, the store is the environment's. */
export type LibraryCall =
  | { type: "build"; request: BuildRequest; cwd: string }
  | { type: "run"; image: string; options: RunCallOptions; cwd: string };

/** Lines to the child: the call first, then any number of aborts and signals for the container. */
export type ToChild =
  | LibraryCall
  | { type: "abort" }
  | { type: "kill"; signal: NodeJS.Signals }
  | { type: "stop"; timeout?: number };

/** Lines from the child: events as they happen, then the result or the error, last. */
export type FromChild =
  | { type: "event"; event: BuildEvent }
  | { type: "warning"; message: string }
  | { type: "started"; id: string }
  | { type: "result"; result: unknown }
  | { type: "error"; error: WireError };

/** The classes a caller can test with `instanceof` (index.ts exports them); others arrive as TbuildError. */
const EXPORTED_ERRORS: Record<string, { prototype: TbuildError }> = {
  BuildStepFailedError,
  BuildCanceledError,
  BadBuildRequestError,
  UsageError,
};

/** The error the child sent, as the class the library exports under its name. */
export function libraryErrorFromWire(wire: WireError): Error {
  return errorFromWire(wire, EXPORTED_ERRORS);
}

/** build() for an unprivileged caller: the same request, events, result and errors, from the child. */
export async function buildInUserNamespace(
  request: BuildRequest,
  options: BuildOptions & { env: NodeJS.ProcessEnv; signal: AbortSignal },
): Promise<BuildResult> {
  const { env, signal } = options;
  // A malformed request is refused here as in-process, before any process starts.
  checkBuildRequest(request);
  if (signal.aborted) throw new BuildCanceledError(signal.reason, undefined);
  // As `tbuild build` does before its re-exec: only the user outside may stop what a killed build left running.
  await stopAbandonedContainers(defaultStoreRoot(env));
  try {
    return (await callInUserNamespace(
      { type: "build", request, cwd: options.cwd ?? process.cwd() },
      {
        env,
        signal,
        stdin: "ignore",
        stdout: options.stdout ?? "inherit",
        ...(options.onEvent ? { onEvent: options.onEvent } : {}),
      },
    )) as BuildResult;
  } catch (err) {
    if (signal.aborted) throw new BuildCanceledError(signal.reason, err);
    throw err;
  }
}

/** run() for an unprivileged caller: the container runs in the child, on this process's stdio or streams. */
export async function runInUserNamespace(image: string, options: RunOptions): Promise<RunResult> {
  const env = {
    ...(options.env ?? process.env),
    ...(options.store ? { TBUILD_ROOT: options.store.root } : {}),
  };
  const signal = options.signal ?? new AbortController().signal;
  if (signal.aborted) throw new BuildCanceledError(signal.reason, undefined);
  const stdin = options.stdin ?? "ignore";
  const {
    stdin: _stdin,
    stdout,
    stderr,
    signal: _signal,
    onStart,
    env: _env,
    cwd,
    store: _store,
    onWarning,
    ...plain
  } = options;
  const call = callInUserNamespace(
    {
      type: "run",
      image,
      options: { ...plain, stdin: stdin === "ignore" ? "ignore" : "inherit" },
      cwd: cwd ?? process.cwd(),
    },
    {
      env,
      signal,
      stdin,
      stdout: stdout ?? "inherit",
      stderr: stderr ?? "inherit",
      // The process's terminal is this process's own: the child stays in its session for it.
      terminal: options.tty === true,
      ...(onWarning ? { onWarning } : {}),
      ...(onStart
        ? {
            onStarted: (id, send) =>
              onStart({
                id,
                kill: (s) => send({ type: "kill", signal: s }),
                stop: (timeout) => {
                  send({ type: "stop", ...(timeout !== undefined ? { timeout } : {}) });
                  return call.then((result) => (result as RunResult).exitCode);
                },
              }),
          }
        : {}),
    },
  );
  call.catch(() => {});
  try {
    return (await call) as RunResult;
  } catch (err) {
    // As in-process: an abort ends the run with the caller's own reason when it is a TbuildError.
    if (signal.aborted && isTbuildError(err) && err.code === "E_CANCELED") {
      throw isTbuildError(signal.reason) ? signal.reason : new BuildCanceledError(signal.reason, err);
    }
    throw err;
  }
}

interface CallOptions {
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  stdin: NodeJS.ReadableStream | "inherit" | "ignore";
  stdout: NodeJS.WritableStream | "inherit";
  /** Kept (its end shown when the child fails without an answer) when absent. */
  stderr?: NodeJS.WritableStream | "inherit";
  /** The child keeps this process's terminal and session; else it gets a session of its own, out of reach of a terminal's Ctrl-C. */
  terminal?: boolean;
  onEvent?: (event: BuildEvent) => void;
  onWarning?: (message: string) => void;
  /** The child's container started: `send` passes it kill and stop requests. */
  onStarted?: (id: string, send: (message: ToChild) => void) => void;
}

/** The most of the child's own stderr an error quotes. */
const STDERR_TAIL = 2000;

/**
 * Serves `call` in a child in the user namespace: resolves to its result, rejects with its error,
 * once the child has exited. A callback that throws cancels the call, which then rejects with that.
 */
async function callInUserNamespace(call: LibraryCall, options: CallOptions): Promise<unknown> {
  const { signal } = options;
  const stdioOf = (s: unknown) => (s === "inherit" || s === "ignore" ? s : "pipe");
  const child = spawnInUserNamespace(
    [process.execPath, "--min-semi-space-size=16", cliEntry(), LIBRARY_CALL_COMMAND],
    {
      stdio: [
        stdioOf(options.stdin),
        stdioOf(options.stdout),
        options.stderr === "inherit" ? "inherit" : "pipe",
      ],
      extra: ["pipe"],
      env: options.env,
      detached: options.terminal !== true,
    },
  );
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once("error", (err) => reject(rootlessExecError(child, err)));
    child.once("exit", (code, exitSignal) => resolve({ code, signal: exitSignal }));
  });
  const piped = connectStdio(child, options);
  const control = child.stdio[CONTROL_FD] as Socket;
  control.on("error", () => {});
  const send = (message: ToChild) => {
    if (control.writable) control.write(`${JSON.stringify(message)}\n`);
  };

  let answer: { result: unknown } | { error: Error } | undefined;
  let callbackError: { error: unknown } | undefined;
  const lines = createInterface({ input: control, crlfDelay: Number.POSITIVE_INFINITY });
  // A child that ended early resets the socket: what it said on stderr explains it (below).
  lines.on("error", () => {});
  const answered = new Promise<void>((resolve) => {
    // Closed (reset, or ended after the answer's line was read): nothing more will come.
    control.once("close", resolve);
    lines.on("line", (line) => {
      try {
        const message = JSON.parse(line) as FromChild;
        if (message.type === "result") answer = { result: message.result };
        else if (message.type === "error") answer = { error: libraryErrorFromWire(message.error) };
        else if (message.type === "event") options.onEvent?.(message.event);
        else if (message.type === "warning") options.onWarning?.(message.message);
        else if (message.type === "started") {
          options.onStarted?.(message.id, send);
        }
      } catch (err) {
        // The caller's callback threw (or a line was unreadable): the call is canceled, and rejects with that.
        callbackError ??= { error: err };
        send({ type: "abort" });
      }
      // The answer is the last line; a process the child left running may keep the socket open.
      if (answer) resolve();
    });
  });
  const abort = () => send({ type: "abort" });
  signal.addEventListener("abort", abort, { once: true });
  send(call);
  try {
    const [status] = await Promise.all([exited, answered]);
    await piped.done;
    if (callbackError) throw callbackError.error;
    if (answer && "result" in answer) return answer.result;
    if (answer) throw answer.error;
    const how = status.code !== null ? `with status ${status.code}` : `by ${status.signal}`;
    const said = piped.stderrTail().trim();
    throw new TbuildError(
      "E_ROOTLESS_EXEC",
      `tbuild in the user namespace ended ${how} without an answer${said ? `: ${said}` : ""}`,
    );
  } finally {
    signal.removeEventListener("abort", abort);
    lines.close();
    control.destroy();
    piped.release();
  }
}

/** Streams the caller gave, piped to and from the child; its own stderr kept when the caller gave none. */
function connectStdio(child: ChildProcess, options: CallOptions) {
  let tail = "";
  const { stdin, stdout, stderr } = options;
  const input = typeof stdin === "string" ? undefined : (stdin as Readable);
  if (input && child.stdin) {
    // The process may exit without reading everything: a closed pipe is not an error.
    child.stdin.on("error", () => {});
    input.pipe(child.stdin);
  }
  const waits: Promise<unknown>[] = [];
  if (typeof stdout !== "string" && child.stdout) {
    child.stdout.pipe(stdout as Writable, { end: false });
    waits.push(finished(child.stdout).catch(() => {}));
  }
  if (stderr !== "inherit" && child.stderr) {
    if (stderr) child.stderr.pipe(stderr as Writable, { end: false });
    else {
      child.stderr.setEncoding("utf8");
      child.stderr.on("data", (text: string) => {
        tail = (tail + text).slice(-STDERR_TAIL);
      });
    }
    waits.push(finished(child.stderr).catch(() => {}));
  }
  return {
    done: Promise.all(waits),
    stderrTail: () => tail,
    release: () => {
      if (input && child.stdin) input.unpipe(child.stdin);
    },
  };
}
