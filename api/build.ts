/**
 * The library's `build()`: a BuildRequest run by build/'s runBuild, with options that default to
 * this process's (its environment names the store and config.toml, as the CLI's does). An abort
 * cancels the build as Ctrl-C does: running steps are stopped, what they made is removed, and the
 * promise rejects with a BuildCanceledError. An unprivileged caller's build runs in a child in
 * tbuild's user namespace (api/rootless.ts), with the same events, result and errors.
 */
import type { BuildEvent } from "../build/events.js";
import type { BuildRequest } from "../build/request.js";
import type { BuildResult } from "../build/run.js";
import { hasWorkerPrivileges } from "../worker/userns.js";
import { BuildCanceledError } from "./errors.js";
import type { Store } from "./store.js";

export interface BuildOptions {
  /** Each event as it happens: the objects `tbuild build --progress=rawjson` prints. */
  onEvent?: (event: BuildEvent) => void;
  /** Aborting cancels the build, as Ctrl-C does. */
  signal?: AbortSignal;
  /** Relative paths in the request are relative to this; `process.cwd()` by default. */
  cwd?: string;
  /**
   * The environment tbuild reads: the store (`TBUILD_ROOT`), config.toml (`TBUILD_CONFIG`),
   * registry credentials (`DOCKER_CONFIG`), secrets given by `env`; `process.env` by default.
   */
  env?: NodeJS.ProcessEnv;
  /** The store to build in; the one `env` names by default. */
  store?: Store;
  /** Where an output with `dest: "-"` is written; `process.stdout` by default. */
  stdout?: NodeJS.WritableStream;
}

export async function build(request: BuildRequest, options: BuildOptions = {}): Promise<BuildResult> {
  const signal = options.signal ?? new AbortController().signal;
  const env = {
    ...(options.env ?? process.env),
    ...(options.store ? { TBUILD_ROOT: options.store.root } : {}),
  };
  const context = {
    env,
    cwd: options.cwd ?? process.cwd(),
    signal,
    onEvent: options.onEvent ?? (() => {}),
    ...(options.stdout ? { stdout: options.stdout } : {}),
  };
  // On a remote worker: only the client's half runs here (build/remote.ts), in no user namespace,
  // and nothing of the local builder is loaded.
  if (request.worker !== undefined) {
    const { runRemoteBuild } = await import("../build/remote.js");
    return withCancel(signal, () => runRemoteBuild(request, context));
  }
  // Unprivileged, the build runs in tbuild's user namespace, as the CLI's does (api/rootless.ts).
  if (!hasWorkerPrivileges()) {
    const { buildInUserNamespace } = await import("./rootless.js");
    return buildInUserNamespace(request, { ...options, env, signal });
  }
  // Loaded when a build is asked for: `run()` and `pull()` callers never load the builder.
  const { runBuild } = await import("../build/run.js");
  return withCancel(signal, () => runBuild(request, context));
}

/** What `run` gives; a failure after `signal` was aborted is the cancel, as a BuildCanceledError. */
async function withCancel<T>(signal: AbortSignal, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (signal.aborted) throw new BuildCanceledError(signal.reason, err);
    throw err;
  }
}
