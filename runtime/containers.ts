/**
 * Kept containers, in the store: `<storeRoot>/containers/<ID>/container.json` holds what `tbuild ps`,
 * `rm` and `commit` need (name, image, config, command, state), replaced atomically by rename so a
 * reader never sees half of it; `<storeRoot>/container-names/<NAME>` is a symlink to the ID,
 * created with symlink(2), which fails if the name is taken: two `run --name` at once cannot both
 * get it. `containers/` holds container directories only, so that other readers (du, prune) can
 * count containers by listing it. The writable layer itself is the worker's snapshot of the same ID.
 */
import {
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { readdir, readFile, readlink, rm } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import type { ContainerConfig, Descriptor } from "../oci/spec.js";
import type { LogOptions } from "./logs.js";
import type { MountRequest } from "./mounts.js";
import type { NetworkMode } from "./ports.js";

export type ContainerStatus = "created" | "running" | "exited";

/** A host port forwarded into the container's network (`-p`, `-P`), as bound: `ps` shows it. */
export interface PublishedPort {
  /** The host address listened on: `0.0.0.0` unless `-p IP:HOST:CTR` named one. */
  hostIp: string;
  hostPort: number;
  containerPort: number;
  protocol: "tcp" | "udp";
}

export interface ContainerState {
  status: ContainerStatus;
  /** The tbuild process running the container, and its start time (to tell a reused pid). */
  pid?: number;
  pidStartTime?: string;
  startedAt?: string;
  finishedAt?: string;
  exitCode?: number;
  /** The ports published while it runs, as bound (a `-P` port's host port is the kernel's choice). */
  ports?: PublishedPort[];
}

export interface ContainerRecord {
  /** 64 hex digits; `ps` shows the first 12. */
  id: string;
  name: string;
  /** RFC 3339. */
  created: string;
  /** The image as the user named it, and the manifest it resolved to. */
  image: { name: string; descriptor: Descriptor };
  /** The image config's container config with the run flags applied: what `commit` writes. */
  config: ContainerConfig;
  /** The process: argv[0] and the rest, as docker's `Path` and `Args`. */
  path: string;
  args: string[];
  mounts: MountRequest[];
  network: NetworkMode;
  /** `-p`/`-P` as requested (host port 0: any free one); the bound ones are in `state.ports`. */
  ports?: PublishedPort[];
  /** `--hostname`; the ID's first 12 characters by default. */
  hostname?: string;
  /** `--dns`: a private network's nameservers. */
  dns?: string[];
  /** `--add-host`: name → address, appended to /etc/hosts. */
  extraHosts?: Record<string, string>;
  tty: boolean;
  interactive: boolean;
  /** `--stop-timeout`: seconds `stop` waits after the stop signal before SIGKILL (default 10). */
  stopTimeout?: number;
  /** `--rm`: the container, its writable layer and anonymous volumes go when it exits. */
  autoRemove?: boolean;
  /** Started with `-d`: its output is in its log (logFile), and a monitor process runs it. */
  detached?: boolean;
  /** `--init`: the host path of the init bound in as its PID 1 (runtime/init.ts). */
  init?: string;
  /** `--log-opt max-size=`/`max-file=` of its log, when it runs detached (runtime/logs.ts). */
  logOptions?: LogOptions;
  state: ContainerState;
}

export class ContainerNotFoundError extends TbuildError {
  constructor(text: string) {
    super(
      "E_CONTAINER_UNKNOWN",
      `no container ${text} in the store: 'tbuild ps -a' lists the containers kept there`,
    );
  }
}

export class ContainerNameInUseError extends TbuildError {
  constructor(name: string, id: string) {
    super(
      "E_CONTAINER_NAME_IN_USE",
      `the container name ${name} is already used by container ${id.slice(0, 12)}: remove it (tbuild rm ${name}) or pick another --name`,
    );
  }
}

/** Docker's rule for container names. */
const CONTAINER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/**
 * Random bytes, from node:crypto loaded when first needed: `stop`, `ps` and the other commands
 * that only read records start without it.
 */
function randomBytes(size: number): Buffer {
  return process.getBuiltinModule("node:crypto").randomBytes(size);
}

/** Temporary files of this process's record writes, told apart. */
let tempCount = 0;

export function newContainerId(): string {
  return randomBytes(32).toString("hex");
}

export class ContainerStore {
  readonly dir: string;
  private readonly namesDir: string;

  constructor(storeRoot: string) {
    this.dir = path.join(storeRoot, "containers");
    this.namesDir = path.join(storeRoot, "container-names");
  }

  containerDir(id: string): string {
    return path.join(this.dir, id);
  }

  /**
   * The output of a detached container (docker's json-file format, one JSON object per line), the
   * newest part; older parts are `container.log.1`, `.2`, ... (runtime/logs.ts).
   */
  logFile(id: string): string {
    return path.join(this.dir, id, "container.log");
  }

  /** Records a new container under its name (a random docker-style one when none is given). */
  async create(record: Omit<ContainerRecord, "name">, name?: string): Promise<ContainerRecord> {
    if (name !== undefined && !CONTAINER_NAME.test(name)) {
      throw new UsageError(`--name ${name}: a container name is [a-zA-Z0-9][a-zA-Z0-9_.-]+`);
    }
    // Synchronous: a few small calls on every `tbuild run`, each spared a thread-pool round trip.
    mkdirSync(this.namesDir, { recursive: true });
    mkdirSync(this.containerDir(record.id), { recursive: true });
    let chosen = name ?? randomName();
    for (let attempt = 0; ; attempt++) {
      try {
        symlinkSync(record.id, path.join(this.namesDir, chosen));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        if (name !== undefined || attempt > 20) {
          await rm(this.containerDir(record.id), { recursive: true, force: true });
          const owner = await readlink(path.join(this.namesDir, chosen)).catch(() => "");
          throw new ContainerNameInUseError(chosen, owner);
        }
        chosen = `${randomName()}${attempt > 5 ? `_${attempt}` : ""}`;
      }
    }
    const full: ContainerRecord = { ...record, name: chosen };
    await this.write(full);
    return full;
  }

  /**
   * Replaces the record by a temp file renamed over it: atomic for readers and against a kill. Not
   * fsynced: a container's record is cheap to lose in a power cut, and `run` is on the hot path.
   */
  async write(record: ContainerRecord): Promise<void> {
    const file = path.join(this.containerDir(record.id), "container.json");
    const temp = `${file}.${process.pid}-${++tempCount}.tmp`;
    writeFileSync(temp, `${JSON.stringify(record, null, 2)}\n`);
    renameSync(temp, file);
  }

  async read(id: string): Promise<ContainerRecord | undefined> {
    try {
      return JSON.parse(await readFile(path.join(this.containerDir(id), "container.json"), "utf8"));
    } catch (err) {
      // A directory without its record is one being created or removed: not a container yet.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new TbuildError(
        "E_CONTAINER_CORRUPT",
        `the record of container ${id} is unreadable (${(err as Error).message}); remove ${this.containerDir(id)}`,
        { cause: err },
      );
    }
  }

  async list(): Promise<ContainerRecord[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const records: ContainerRecord[] = [];
    for (const name of names) {
      if (!/^[a-f0-9]{64}$/.test(name)) continue;
      const record = await this.read(name);
      if (record !== undefined) records.push(record);
    }
    return records.sort((a, b) => b.created.localeCompare(a.created));
  }

  /** The container `text` names: its name, its ID, or a unique prefix of its ID. */
  async find(text: string): Promise<ContainerRecord> {
    if (CONTAINER_NAME.test(text)) {
      const id = await readlink(path.join(this.namesDir, text)).catch(() => undefined);
      const record = id === undefined ? undefined : await this.read(id);
      if (record !== undefined) return record;
    }
    if (/^[a-f0-9]{1,64}$/.test(text)) {
      const matches = (await this.list()).filter((r) => r.id.startsWith(text));
      if (matches.length > 1) {
        throw new TbuildError(
          "E_AMBIGUOUS_ID",
          `container ID ${text} is the start of several containers' IDs (${matches.map((m) => m.id.slice(0, 12)).join(", ")}): give more of it`,
        );
      }
      if (matches.length === 1) return matches[0]!;
    }
    throw new ContainerNotFoundError(text);
  }

  /** Forgets a container: its name, then its directory (the record first, so readers skip it). */
  async remove(record: ContainerRecord): Promise<void> {
    const link = path.join(this.namesDir, record.name);
    // Synchronous: a few small calls at the end of every `tbuild run --rm`.
    if (readlinkOrUndefined(link) === record.id) unlinkIfPresent(link);
    unlinkIfPresent(path.join(this.containerDir(record.id), "container.json"));
    // The record and the run's sandbox state, a few small files: at once.
    rmSync(this.containerDir(record.id), { recursive: true, force: true });
  }
}

/** Docker's style of name (`adjective_surname`), from short lists: enough to be told apart. */
const ADJECTIVES = [
  "brave",
  "calm",
  "eager",
  "fond",
  "gentle",
  "happy",
  "jolly",
  "keen",
  "kind",
  "lucid",
  "merry",
  "nifty",
  "quirky",
  "sharp",
  "stoic",
  "tender",
  "upbeat",
  "vivid",
  "witty",
  "zealous",
];
const SURNAMES = [
  "babbage",
  "curie",
  "dijkstra",
  "euler",
  "feynman",
  "gauss",
  "hopper",
  "kepler",
  "knuth",
  "lamport",
  "lovelace",
  "meitner",
  "noether",
  "pascal",
  "ritchie",
  "shannon",
  "thompson",
  "turing",
  "wirth",
  "wozniak",
];

function readlinkOrUndefined(link: string): string | undefined {
  try {
    return readlinkSync(link);
  } catch {
    return undefined;
  }
}

function unlinkIfPresent(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // gone already
  }
}

function randomName(): string {
  const [a, b] = randomBytes(2);
  return `${ADJECTIVES[a! % ADJECTIVES.length]}_${SURNAMES[b! % SURNAMES.length]}`;
}

/**
 * The start time of a live process (clock ticks since boot, `/proc/PID/stat` field 22), or
 * undefined if it is gone: exited (a zombie its parent has not reaped yet counts as gone) or never was.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z" || fields[0] === "X") return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

/**
 * The state as it is now: a container recorded as running whose tbuild process is gone (killed
 * before it could record the exit) has exited, with no known exit code.
 */
export function currentState(record: ContainerRecord): ContainerState {
  const { state } = record;
  if (state.status !== "running") return state;
  if (state.pid !== undefined && processStartTime(state.pid) === state.pidStartTime) return state;
  const { pid: _pid, pidStartTime: _start, ...rest } = state;
  return { ...rest, status: "exited" };
}
