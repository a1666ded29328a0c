/**
 * What a killed process left of its runs. runInSandbox removes a run's container and directory
 * however the run ends, unless tbuild itself is SIGKILLed (or the machine stops): then the run's
 * directory stays, and so may its container: still running, or, killed between runc's create and
 * start, a `runc init` waiting for ever on its exec fifo and holding its cgroups. Whoever made the
 * state directory knows when its runs are abandoned (worker/build-state: its process is gone).
 */
import { execFile } from "node:child_process";
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { processAlive } from "../../oci/store/process-liveness.js";
import { SandboxError } from "./errors.js";
import { findRunc, probeHost } from "./host.js";
import { containerInit, killContainerProcesses } from "./kill.js";
import { runcEnv } from "./run.js";

/** runc's own wait for a killed container is about a second; this only bounds a stuck runc. */
const RUNC_DELETE_TIMEOUT_MS = 10_000;

async function entriesOf(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ENOTDIR")
      return [];
    throw err;
  }
}

async function deleteContainer(runc: string, runcRoot: string, global: string[], id: string): Promise<void> {
  const init = await containerInit(runcRoot, id);
  // `runc delete --force` kills the first process only, which a stopped tracer can keep from dying.
  await killContainerProcesses(runcRoot, id);
  await runcDelete(runc, global, id);
  // runc takes a process it may not signal for one that is gone, and deletes its state all the same.
  if (init && (await processAlive(init.pid, init.start))) {
    throw new SandboxError(
      "E_SANDBOX_CLEANUP",
      `the container ${id} still runs (pid ${init.pid}) and cannot be stopped from here; stop it with: kill -9 ${init.pid}`,
    );
  }
}

function runcDelete(runc: string, global: string[], id: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      runc,
      [...global, "delete", "--force", id],
      { env: runcEnv(), timeout: RUNC_DELETE_TIMEOUT_MS, encoding: "utf8" },
      (err, _stdout, stderr) => {
        if (!err) return resolve();
        const said = stderr.trim().split("\n").pop() || err.message;
        reject(new SandboxError("E_SANDBOX_CLEANUP", `runc cannot delete the container ${id}: ${said}`));
      },
    );
  });
}

/**
 * Every run under `stateDir` (a state directory given to runInSandbox whose runs are known to be
 * abandoned): each container runc knows in the run's `--root` is killed and deleted (`runc delete
 * --force`, with the flags the run used), then the run's directory is removed. A run whose
 * container runc could not delete is kept, and the error says which; the others are removed.
 */
export async function removeAbandonedRuns(stateDir: string): Promise<void> {
  const runs = await Promise.all(
    (await entriesOf(stateDir)).map(async (run) => {
      const dir = path.join(stateDir, run);
      return { dir, runcRoot: path.join(dir, "runc"), containers: await entriesOf(path.join(dir, "runc")) };
    }),
  );
  const anyContainer = runs.some((run) => run.containers.length > 0);
  const runc = anyContainer ? findRunc() : "";
  // With the flags the run itself gave runc (superviseRunc): `--rootless true` where it had no cgroups.
  const rootless = anyContainer && (await probeHost()).rootless;
  const failures: Error[] = [];
  await Promise.all(
    runs.map(async ({ dir, runcRoot, containers }) => {
      const global = ["--root", runcRoot, ...(rootless ? ["--rootless", "true"] : [])];
      const results = await Promise.allSettled(
        containers.map((id) => deleteContainer(runc, runcRoot, global, id)),
      );
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed.length > 0) failures.push(...failed.map((r) => r.reason as Error));
      else await rm(dir, { recursive: true, force: true });
    }),
  );
  if (failures.length > 0) throw failures[0];
}
