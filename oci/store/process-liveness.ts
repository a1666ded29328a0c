/**
 * Whether the process that made something is still alive, for state that outlives a killed
 * process (locks, snapshot mounts, a build's state directory). A pid alone is not enough: it is
 * reused; the pid with the process's start time names one process for the machine's uptime.
 */
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

/**
 * Field 22 of /proc/PID/stat (after the command name, which may hold blanks and parentheses);
 * undefined for a process that has exited but is not reaped yet (state Z or X): it holds nothing.
 */
function startField(stat: string): string | undefined {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[0] === "Z" || fields[0] === "X" ? undefined : fields[19];
}

/**
 * The start time of a process, to tell it from a later one with its pid; undefined when it is gone
 * (or a zombie: a SIGKILLed tbuild whose parent died too waits for init to reap it).
 */
export async function processStart(pid: number): Promise<string | undefined> {
  try {
    return startField(await readFile(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

let ownStartTime: string | undefined;

/** This process's own start time, read once (synchronously: it is on every `tbuild run`'s path). */
export function ownStart(): string {
  if (ownStartTime === undefined) {
    try {
      ownStartTime = startField(readFileSync(`/proc/${process.pid}/stat`, "utf8")) ?? "";
    } catch {
      ownStartTime = "";
    }
  }
  return ownStartTime;
}

/** True while the process `pid` that started at `start` (from processStart) runs. */
export async function processAlive(pid: number, start: string): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  return (await processStart(pid)) === start;
}

/**
 * Whether the process `pid` runs (any process with that pid: for state that names a pid alone). A
 * zombie does not: a tbuild killed with its whole process group waits for init to reap it, which
 * some inits (a container's) do late or never, and meanwhile holds no file and writes no blob.
 */
export function processRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    return startField(readFileSync(`/proc/${pid}/stat`, "utf8")) !== undefined;
  } catch (err) {
    // Gone since; or no /proc to tell, and the signal's answer stands.
    return (err as NodeJS.ErrnoException).code !== "ENOENT";
  }
}
