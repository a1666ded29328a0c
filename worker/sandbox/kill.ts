/**
 * Ending every process of a container, whatever state a hostile step left them in. `runc kill
 * KILL` signals the container's first process only, counting on the kernel to end the rest when
 * that process, the init of the container's pid namespace, dies. A step can make its init unable
 * to die: traced by a process of its own (`strace -p 1`) that is then stopped, the init waits in a
 * ptrace stop that not even SIGKILL ends until its tracer is gone (`runc kill` and `runc delete
 * --force` then wait in vain, and the processes outlive the build). So every process of the
 * container's pid namespace gets SIGKILL, the tracer with the rest; a stopped process dies of it too.
 * There is no cgroup to ask (rootless runc has none, and cgroups v1 has no `cgroup.kill`): the
 * processes are found by their pid namespace in /proc.
 */
import { readdir, readFile, readlink } from "node:fs/promises";
import path from "node:path";
import { processAlive } from "../../oci/store/process-liveness.js";

/** The container's first process as runc recorded it in its state: pid and start time. */
export async function containerInit(
  runcRoot: string,
  id: string,
): Promise<{ pid: number; start: string } | undefined> {
  try {
    const state = JSON.parse(await readFile(path.join(runcRoot, id, "state.json"), "utf8")) as {
      init_process_pid?: number;
      init_process_start?: number | string;
    };
    if (!state.init_process_pid) return undefined;
    return { pid: state.init_process_pid, start: String(state.init_process_start ?? "") };
  } catch {
    return undefined;
  }
}

async function pidNamespaceOf(pid: number | "self"): Promise<string | undefined> {
  try {
    return await readlink(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

/**
 * SIGKILLs every process in the pid namespace of the container `id` (whose runc `--root` is
 * `runcRoot`): none when runc knows no running first process, or when that process shares this
 * process's own pid namespace (never a container of tbuild's). Returns how many it signalled.
 */
export async function killContainerProcesses(runcRoot: string, id: string): Promise<number> {
  const init = await containerInit(runcRoot, id);
  if (!init || !(await processAlive(init.pid, init.start))) return 0;
  const namespace = await pidNamespaceOf(init.pid);
  if (namespace === undefined || namespace === (await pidNamespaceOf("self"))) return 0;
  const pids = (await readdir("/proc")).filter((entry) => /^\d+$/.test(entry)).map(Number);
  const members = await Promise.all(pids.map(async (pid) => (await pidNamespaceOf(pid)) === namespace));
  let signalled = 0;
  for (const [i, pid] of pids.entries()) {
    if (!members[i]) continue;
    try {
      process.kill(pid, "SIGKILL");
      signalled++;
    } catch {
      // gone meanwhile
    }
  }
  return signalled;
}
