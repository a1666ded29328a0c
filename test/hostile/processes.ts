/**
 * Processes for the hostile suite's kill, hang and concurrency cases: which process is the tbuild
 * a user ran (under `runuser` for the rootless mode) and which the one re-run inside the user
 * namespace, the whole tree a build started (to see that it is gone, down to its containers'
 * processes), progress output read line by line as it comes (to act on an event, never after a
 * fixed time), and polling for an event with a generous deadline.
 */
import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { Mode } from "./harness.js";

/** A process by pid and start time (a pid alone may be reused). */
export interface ProcessId {
  pid: number;
  start: string;
}

/** The fields of /proc/PID/stat after the command name: state is [0], start time [19]. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

export function processId(pid: number): ProcessId | undefined {
  const fields = statFields(pid);
  return fields ? { pid, start: fields[19]! } : undefined;
}

/** Still running: there, the same process, and not a zombie waiting for its parent. */
export function isAlive(process: ProcessId): boolean {
  const fields = statFields(process.pid);
  return fields !== undefined && fields[19] === process.start && fields[0] !== "Z" && fields[0] !== "X";
}

/** The process's state letter (R, S, D, T stopped, t traced, Z), or undefined when it is gone. */
export function stateOf(pid: number): string | undefined {
  return statFields(pid)?.[0];
}

export function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((task) =>
      readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(" ").filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}

/** `pid` and every process below it, as they are now. */
export function processTree(pid: number): ProcessId[] {
  const tree: ProcessId[] = [];
  const visit = (p: number) => {
    const id = processId(p);
    if (!id) return;
    tree.push(id);
    for (const child of childrenOf(p)) visit(child);
  };
  visit(pid);
  return tree;
}

export function commandLineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/** Polls `check` until it holds or `timeoutMs` passes: waiting for an event, with a deadline. */
export async function eventually(check: () => boolean, timeoutMs = 60_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(50);
  }
  return check();
}

/**
 * The tbuild process the user ran. As root it is the spawned process itself (`env` execs tbuild,
 * which execs Node); rootless, `runuser` forks it.
 */
export async function userTbuild(mode: Mode, child: ChildProcess): Promise<number> {
  if (mode === "root") return child.pid!;
  let found: number | undefined;
  await eventually(() => {
    found = childrenOf(child.pid!)[0];
    return found !== undefined;
  }, 30_000);
  if (found === undefined) throw new Error("runuser started no tbuild");
  return found;
}

/** Rootless: the tbuild that the user's tbuild re-ran inside the user namespace (its Node child). */
export async function namespacedTbuild(outer: number): Promise<number> {
  let found: number | undefined;
  await eventually(() => {
    found = childrenOf(outer).find((pid) => commandLineOf(pid).includes("main.js"));
    return found !== undefined;
  }, 30_000);
  if (found === undefined) throw new Error(`tbuild ${outer} re-ran itself in no user namespace`);
  return found;
}

/** Pids of processes whose command line names `store`, or whose runc state lies in it. */
export function processesOfStore(store: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8");
      if (
        commandLineOf(Number(entry)).includes(store) ||
        environ.includes(`_LIBCONTAINER_STATEDIR=${store}`)
      ) {
        found.push(Number(entry));
      }
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** The build state directories (runc state, bundles) of a store. */
export function buildStateDirs(store: string): string[] {
  return readdirSync(store).filter((name) => name.startsWith("tmp-"));
}

/** Output of a spawned tbuild, kept whole and offered line by line as it comes. */
export class OutputLines {
  text = "";
  private partial = "";
  private readonly listeners: ((line: string) => void)[] = [];

  constructor(stream: NodeJS.ReadableStream) {
    stream.on("data", (chunk: Buffer) => {
      this.text += chunk.toString();
      const lines = (this.partial + chunk.toString()).split("\n");
      this.partial = lines.pop()!;
      for (const line of lines) for (const listener of this.listeners) listener(line);
    });
  }

  /** Calls `listener` on every complete line from now on, synchronously as it is read. */
  onLine(listener: (line: string) => void): void {
    this.listeners.push(listener);
  }

  /** Resolves once a line matches (or the stream ends: false). */
  waitFor(pattern: RegExp, timeoutMs = 60_000): Promise<boolean> {
    return eventually(() => pattern.test(this.text), timeoutMs);
  }
}

/** Resolves when the spawned process has exited, however. */
export function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
}

/** SIGKILLs what is left of `processes` (after a failed case), so later cases start clean. */
export function killLeftovers(processes: ProcessId[]): void {
  for (const p of processes) {
    if (!isAlive(p)) continue;
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {}
  }
}
