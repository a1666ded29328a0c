/**
 * What a killed or concurrent build may not leave in a store once the next build has run: a
 * mount of the store's, runc state (a container runc still knows: its `--root` lies in a build's
 * or a container's state directory), a build state directory, a process of the killed build (and
 * with the last of them its user and mount namespaces), a cache record whose layers are not in
 * the content store.
 */
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { CacheIndex } from "../../../solver/cache.js";
import { mountsUnder } from "../../hostile/harness.js";
import {
  buildStateDirs,
  commandLineOf,
  isAlive,
  type ProcessId,
  processesOfStore,
  processId,
  stateOf,
} from "../../hostile/processes.js";

/** The containers runc knows in the store: each `<...>/runc/<id>/state.json` of a runc `--root`. */
export function runcStates(store: string): string[] {
  const found: string[] = [];
  // Where runc roots live: build state directories and `tbuild run`'s containers; not the layers.
  const skip = new Set(["blobs", "snapshots", "ingest", "cache"]);
  const walk = (dir: string, depth: number) => {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of entries) {
      const full = path.join(dir, name);
      if (depth === 0 && skip.has(name)) continue;
      if (name === "runc" && statSync(full, { throwIfNoEntry: false })?.isDirectory()) {
        for (const id of readdirSync(full)) {
          if (existsSync(path.join(full, id, "state.json")))
            found.push(path.relative(store, path.join(full, id)));
        }
        continue;
      }
      if (depth < 6 && statSync(full, { throwIfNoEntry: false })?.isDirectory()) walk(full, depth + 1);
    }
  };
  walk(store, 0);
  return found;
}

/**
 * Cache records whose layers are missing from the content store, as `step: digest`. Read from a
 * copy of the database: opening the store's own would leave files of the test's user in a
 * rootless user's store.
 */
export function recordsWithoutBlobs(store: string): string[] {
  const db = path.join(store, "cache", "index.db");
  if (!existsSync(db)) return [];
  const copy = mkdtempSync(path.join(tmpdir(), "tbuild-faults-db-"));
  try {
    for (const suffix of ["", "-wal"]) {
      if (existsSync(db + suffix)) copyFileSync(db + suffix, path.join(copy, `index.db${suffix}`));
    }
    const cache = new CacheIndex(path.join(copy, "index.db"));
    try {
      return cache
        .all()
        .flatMap((record) =>
          record.result.layers
            .filter((l) => !existsSync(path.join(store, "blobs", ...l.descriptor.digest.split(":"))))
            .map((l) => `${record.name}: ${l.descriptor.digest}`),
        );
    } finally {
      cache.close();
    }
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

/**
 * Processes started by `ticks` (clock ticks since boot, as /proc/PID/stat counts) that are in one
 * of `namespaces` (`user:[N]`, `mnt:[N]`): a namespace lives while they do. A namespace's number
 * is reused once it is gone, so a younger process in one of that number is in another.
 */
export function processesIn(namespaces: readonly string[], ticks: number): number[] {
  if (namespaces.length === 0) return [];
  const wanted = new Set(namespaces);
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    // A zombie (killed, its parent gone, not yet reaped by init) has let go of its namespaces.
    if (!/^\d+$/.test(entry) || !["R", "S", "D", "T", "t"].includes(stateOf(Number(entry)) ?? "")) continue;
    if (Number(processId(Number(entry))?.start ?? Infinity) > ticks) continue;
    for (const ns of ["user", "mnt"]) {
      try {
        if (wanted.has(readlinkSync(`/proc/${entry}/ns/${ns}`))) {
          found.push(Number(entry));
          break;
        }
      } catch {
        // gone meanwhile
      }
    }
  }
  return found;
}

/**
 * The killed build's temporaries, which may be as large as what it was making: the blobs it was
 * writing (`ingest/<pid>-…`), the layers, flattened stacks and context snapshots it was unpacking
 * or copying (`snapshots/{layers,flat}/.tmp-…-<pid>-…`). (Its small records written aside and
 * renamed, `<name>.<pid>-….tmp`, are not looked for.)
 */
export function litterOf(store: string, pids: readonly number[]): string[] {
  const named = new RegExp(`(^|-)(${pids.join("|")})-`);
  const found: string[] = [];
  for (const dir of ["ingest", "snapshots/layers", "snapshots/flat"]) {
    let names: string[];
    try {
      names = readdirSync(path.join(store, dir));
    } catch {
      continue;
    }
    for (const name of names) {
      if ((dir === "ingest" || name.startsWith(".tmp-")) && named.test(name)) found.push(`${dir}/${name}`);
    }
  }
  return pids.length === 0 ? [] : found;
}

/** Now, in clock ticks since boot (the unit of a process's start time in /proc/PID/stat). */
export function ticksNow(): number {
  return Math.ceil(Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]) * CLOCK_TICKS_PER_SECOND);
}

/** USER_HZ: 100 on every Linux architecture tbuild runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

/** A process's state, command line and parent, for messages. */
function describeProcess(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return `state ${fields[0]}, parent ${fields[1]}: ${commandLineOf(pid).slice(0, 100)}`;
  } catch {
    return "gone";
  }
}

/** Everything a store may not hold after a build (the next one, after a kill) has ended, as a list of problems. */
export function leftovers(
  store: string,
  killed: { processes: ProcessId[]; workers: number[]; namespaces: string[]; ticks: number },
): string[] {
  const problems: string[] = [];
  const mounted = mountsUnder(store);
  if (mounted.length > 0) problems.push(`still mounted: ${mounted.join(", ")}`);
  const states = buildStateDirs(store);
  if (states.length > 0) problems.push(`build state left: ${states.join(", ")}`);
  const runc = runcStates(store);
  if (runc.length > 0) problems.push(`runc state left: ${runc.join(", ")}`);
  const running = processesOfStore(store);
  if (running.length > 0) problems.push(`processes of the store still run: ${running.join(", ")}`);
  const alive = killed.processes.filter(isAlive);
  if (alive.length > 0)
    problems.push(`processes of the killed build still run: ${alive.map((p) => p.pid).join(", ")}`);
  const held = processesIn(killed.namespaces, killed.ticks);
  if (held.length > 0)
    problems.push(
      `the killed build's namespaces are held by: ${held.map((pid) => `${pid} (${describeProcess(pid)})`).join(", ")}`,
    );
  const litter = litterOf(store, killed.workers);
  if (litter.length > 0) problems.push(`the killed build's temporary files are left: ${litter.join(", ")}`);
  const missing = recordsWithoutBlobs(store);
  if (missing.length > 0) problems.push(`cache records without their blobs: ${missing.join("; ")}`);
  return problems;
}
