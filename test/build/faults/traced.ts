/**
 * Kill points by event, never by time: a build runs under `strace -f`, which reports every
 * file-system call the build's processes make (tbuild, its threads, runc, the containers' own
 * processes) as it happens; the n-th call of one kind on the store (the n-th write into a
 * context snapshot, the n-th rename of a blob into place, the n-th write of the cache database's
 * log...) is the moment the build is killed with SIGKILL. The same kind and number name the
 * same stretch of work in every run, on a busy machine as on an idle one.
 *
 * strace goes on with the build while the test reads its line, so a kill lands just after its
 * event, not on it: the points are moments *in* a stretch of work, which is what a user's
 * `kill -9` (or the OOM killer, or a CI job cancelled) hits too.
 *
 * Two ways to kill: the tbuild process that does the work alone (`worker`: as the OOM killer
 * does; rootless, the tbuild re-run inside the user namespace), or the whole process group
 * (`group`: `kill -9 -PGID`, as a terminal or a CI runner does), which also takes runc and the
 * step's processes unless they left the group.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import { type Mode, tbuildCommandLine } from "../../hostile/harness.js";
import {
  childrenOf,
  commandLineOf,
  exitOf,
  OutputLines,
  type ProcessId,
  processTree,
} from "../../hostile/processes.js";
import { ticksNow } from "./leftovers.js";

/** A stretch of a build's work, told by the calls it makes on the store (`S` stands for the store). */
export interface Phase {
  name: string;
  pattern: RegExp;
  /** Only a build in a store that has not built this yet (a cold store) does this work. */
  cold?: boolean;
  /**
   * Drawn as root only: a kill here costs the next build the 10 s a lock left by a killed process
   * takes to be found stale, and the lock is the same code rootless.
   */
  rootOnly?: boolean;
}

export const PHASES: Phase[] = [
  // Hashing the context and snapshotting what the steps copy from it.
  {
    name: "context snapshot",
    pattern: /S\/(context-hashes|context-manifests|snapshots\/sources)\/|S\/snapshots\/layers\/\.tmp-source-/,
    cold: true,
  },
  // Unpacking the base image's layer.
  { name: "base unpack", pattern: /S\/snapshots\/layers\/\.tmp-[0-9a-f]{64}-/, cold: true },
  // A COPY writing into the step's mounted root filesystem.
  { name: "COPY", pattern: /S\/snapshots\/mounts\/\w+\/rootfs\/(app|data|dst)\b/ },
  // runc setting up, running and deleting a RUN step's container, and the step's own processes.
  { name: "RUN", pattern: /S\/tmp-build-[^/]+\/sandbox\/|"\/tmp\/obs-/ },
  // Reading a step's changes (the overlay's upper directory) and writing its compressed layer.
  { name: "layer diff", pattern: /S\/snapshots\/mounts\/\w+\/upper\b|write[v]?\(\d+<S\/ingest\// },
  // A blob's data made durable and renamed into the content store.
  { name: "blob write", pattern: /(fsync|rename)\(.*S\/(ingest|blobs)\// },
  // A step's snapshot unmounted and committed as a layer directory.
  { name: "snapshot commit", pattern: /umount2?\("S\/|rename\("S\/snapshots\/mounts\/\w+\/upper"/ },
  // The cache database: a step's record written.
  { name: "cache record", pattern: /S\/cache\/index\.db/ },
  // The tag written into the image index.
  { name: "image tag", pattern: /S\/index\.json/, rootOnly: true },
];

export type KillStyle = "worker" | "group";

export interface KillPoint {
  phase: Phase;
  /** The n-th event of the phase (1-based). */
  ordinal: number;
  style: KillStyle;
}

/** What the strace filter lets through: the calls that change files, plus those that open them. */
const TRACED = [
  "open",
  "openat",
  "creat",
  "rename",
  "renameat",
  "renameat2",
  "mkdir",
  "mkdirat",
  "unlink",
  "unlinkat",
  "rmdir",
  "link",
  "linkat",
  "symlink",
  "symlinkat",
  "write",
  "writev",
  "pwrite64",
  "pwritev",
  "fsync",
  "fdatasync",
  "ftruncate",
  "mount",
  "umount2",
  "fchmodat",
  "fchownat",
  "utimensat",
  "copy_file_range",
].join(",");

/** One strace line as an event: the call with the store's path written `S`, or undefined. */
function storeEvent(line: string, store: string): { pid: number; text: string } | undefined {
  const match = /^(?:\[pid +(\d+)\] )?(.*)$/.exec(line);
  if (!match) return undefined;
  const text = match[2]!;
  // The second half of a call reported before: counted once, at its start.
  if (text.startsWith("<...") || !/^\w+\(/.test(text)) return undefined;
  if (!text.includes(`${store}/`) && !text.includes('"/tmp/obs-')) return undefined;
  return { pid: Number(match[1] ?? 0), text: text.replaceAll(store, "S") };
}

export interface TracedBuild {
  /** Every store event in order (for a reference run: how many of each phase there are). */
  events: string[];
  /** The event the build was killed at, or undefined when it ended first. */
  killedAt?: string;
  /** The build's processes when it was killed. */
  processes: ProcessId[];
  /** Which of them were tbuild's own (Node) processes, whose pids name their temporary files. */
  workers: number[];
  /** The user and mount namespaces (`user:[N]`, `mnt:[N]`) of its processes then, not the host's own. */
  namespaces: string[];
  /** When it was killed, in clock ticks since boot. */
  ticks: number;
  /** What the build printed. */
  output: string;
  exit: { code: number | null; signal: NodeJS.Signals | null };
}

/** The tbuild that does the work: the innermost Node process running tbuild below `pid`. */
function workerBelow(pid: number): number | undefined {
  let found: number | undefined;
  const visit = (p: number) => {
    if (commandLineOf(p).includes("main.js")) found = p;
    for (const child of childrenOf(p)) visit(child);
  };
  visit(pid);
  return found;
}

const hostNamespaces = new Set(["user", "mnt"].map((ns) => readlinkSync(`/proc/self/ns/${ns}`)));

function namespacesOf(processes: readonly ProcessId[]): string[] {
  const found = new Set<string>();
  for (const p of processes) {
    for (const ns of ["user", "mnt"]) {
      try {
        const id = readlinkSync(`/proc/${p.pid}/ns/${ns}`);
        if (!hostNamespaces.has(id)) found.add(id);
      } catch {
        // gone meanwhile
      }
    }
  }
  return [...found];
}

/**
 * `tbuild ARGS` as the mode's user under strace, killed at `point` (or run to its end without
 * one). Resolves once strace has ended: every traced process is gone (or, after a group kill,
 * strace itself was killed and what left the group runs on untraced).
 */
export async function tracedBuild(
  mode: Mode,
  store: string,
  args: string[],
  log: string,
  point?: KillPoint,
): Promise<TracedBuild> {
  const command = tbuildCommandLine(mode, store, args);
  const strace: ChildProcess = spawn(
    "strace",
    [
      "-f",
      "-qq",
      "-y",
      "-e",
      "signal=none",
      "-e",
      `trace=${TRACED}`,
      "--",
      "/bin/sh",
      "-c",
      'log=$1; shift; exec "$@" >"$log" 2>&1',
      "sh",
      log,
      ...command,
    ],
    // Its own process group: the group kill is `kill -9 -PGID` of it.
    { stdio: ["ignore", "ignore", "pipe"], detached: true },
  );
  const exited = exitOf(strace);
  const lines = new OutputLines(strace.stderr!);
  const result: TracedBuild = {
    events: [],
    processes: [],
    workers: [],
    namespaces: [],
    ticks: 0,
    output: "",
    exit: { code: null, signal: null },
  };
  let seen = 0;
  lines.onLine((line) => {
    const event = storeEvent(line, store);
    if (!event) return;
    result.events.push(event.text);
    if (!point || result.killedAt !== undefined || !point.phase.pattern.test(event.text)) return;
    if (++seen !== point.ordinal) return;
    // Synchronously, as the line is read: the event is the moment.
    result.processes = processTree(strace.pid!).filter((p) => p.pid !== strace.pid);
    result.workers = result.processes
      .map((p) => p.pid)
      .filter((pid) => commandLineOf(pid).includes("main.js"));
    result.namespaces = namespacesOf(result.processes);
    result.ticks = ticksNow();
    try {
      if (point.style === "group") {
        process.kill(-strace.pid!, "SIGKILL");
      } else {
        const worker = workerBelow(strace.pid!);
        if (worker === undefined) return;
        process.kill(worker, "SIGKILL");
      }
    } catch {
      return; // Ended meanwhile: the kill did not land.
    }
    result.killedAt = `${point.phase.name} event ${point.ordinal} (${event.text.slice(0, 160)})`;
  });
  result.exit = await exited;
  result.output = readFileSync(log, "utf8");
  return result;
}

/**
 * How many events of each phase a (reference) run made before its last `MARGIN` events: a kill
 * lands a moment after its event, and one at the very end would find the build gone.
 */
export function phaseCounts(events: readonly string[]): Map<string, number> {
  const early = events.slice(0, Math.max(0, events.length - MARGIN));
  const counts = new Map<string, number>();
  for (const phase of PHASES) counts.set(phase.name, early.filter((e) => phase.pattern.test(e)).length);
  return counts;
}

/** Store events a build makes after the last one a kill point is drawn from (a few milliseconds' work). */
const MARGIN = 20;
