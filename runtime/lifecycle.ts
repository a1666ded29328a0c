/**
 * What `tbuild stop`, `kill`, `wait`, `start` and `restart` do to a kept container: the first three
 * through its control socket (runtime/control.ts), served by whatever process runs it, so they need
 * no privileges beyond the store's; `start` starts a monitor (runtime/monitor.ts), which needs
 * worker privileges like `run`.
 */
import { TbuildError } from "../errors/index.js";
import type { Store } from "../oci/store/index.js";
import { type ContainerRecord, type ContainerStore, currentState } from "./containers.js";
import { ContainerNotRunningError, controlRequest } from "./control.js";

export { ContainerNotRunningError };

/**
 * Stops a running container (the stop signal, then SIGKILL after `timeoutSeconds`, or the
 * container's own grace period) and resolves once it has exited; a container not running is left
 * as it is, as `docker stop` does.
 */
export async function stopContainer(
  containers: ContainerStore,
  record: ContainerRecord,
  timeoutSeconds?: number,
): Promise<void> {
  if (currentState(record).status !== "running") return;
  try {
    await controlRequest(containers.containerDir(record.id), record.name, {
      op: "stop",
      ...(timeoutSeconds !== undefined ? { timeout: timeoutSeconds } : {}),
    });
  } catch (err) {
    // It ended meanwhile: stopped all the same.
    if (err instanceof ContainerNotRunningError) return;
    throw err;
  }
}

/** Sends `signal` to a running container's main process. */
export async function killContainer(
  containers: ContainerStore,
  record: ContainerRecord,
  signal: NodeJS.Signals,
): Promise<void> {
  if (currentState(record).status !== "running") throw new ContainerNotRunningError(record.name);
  await controlRequest(containers.containerDir(record.id), record.name, { op: "kill", signal });
}

/** Resolves to a container's exit code once it is not running (at once when it is not). */
export async function waitContainer(containers: ContainerStore, record: ContainerRecord): Promise<number> {
  if (currentState(record).status === "running") {
    try {
      const answer = await controlRequest(containers.containerDir(record.id), record.name, { op: "wait" });
      if (answer.ok && answer.exitCode !== undefined) return answer.exitCode;
    } catch (err) {
      if (!(err instanceof ContainerNotRunningError)) throw err;
    }
  }
  const latest = (await containers.read(record.id)) ?? record;
  const state = currentState(latest);
  if (state.exitCode !== undefined) return state.exitCode;
  if (state.status === "created") return 0;
  throw new TbuildError(
    "E_CONTAINER_EXIT_UNKNOWN",
    `container ${record.name} has exited, but its exit code is unknown: the process running it was killed`,
  );
}

/**
 * Starts a kept container that is not running, detached (a monitor runs it, its output goes to
 * its log); nothing to do when it runs already. Needs worker privileges.
 */
export async function startContainer(
  store: Store,
  record: ContainerRecord,
  options: { env: NodeJS.ProcessEnv },
): Promise<void> {
  if (currentState(record).status === "running") return;
  const { startMonitor } = await import("./monitor.js");
  await startMonitor(store, record, options);
}
