/**
 * A real `bin/tbuild worker --stdio`, as root or as the rootless test user, on pipes: what an SSH
 * `exec` or a `cmd://` command gives the client. Started in a process group of its own, so that a
 * test can stop or kill all of it (the tbuild outside the user namespace and the one inside) and
 * check that none of it is left.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { Duplex } from "node:stream";
import { tbuildBin } from "../../helpers/cli.js";

export const ROOTLESS_USER = "tbuild-test";
export type Mode = "root" | "rootless";

export interface WorkerProcess {
  child: ChildProcess;
  /** The client's end of the protocol: the worker's stdout and stdin. */
  stream: Duplex;
  /** Everything the worker wrote to stderr so far. */
  stderr(): string;
  /** The worker's exit, and its stdout closed: no process holds its write end any more. */
  ended: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True while any process of the worker's process group runs (zombies, dead but not yet reaped, do not count). */
  groupAlive(): boolean;
  /** Resolves once no process of the worker's group is alive. */
  groupGone(): Promise<void>;
}

/** The home directory of a user, from the password database. */
export function homeOf(user: string): string {
  return execFileSync("getent", ["passwd", user], { encoding: "utf8" }).split(":")[5]!;
}

/**
 * Starts `tbuild worker --stdio` (or `command`, a shell line that ends in it) with a clean
 * environment: PATH, HOME and `env`.
 */
export function startWorker(
  mode: Mode,
  env: Record<string, string>,
  options: { shell?: string } = {},
): WorkerProcess {
  const assignments = Object.entries({
    PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: mode === "rootless" ? homeOf(ROOTLESS_USER) : (process.env.HOME ?? "/root"),
    ...env,
  }).map(([k, v]) => `${k}=${v}`);
  const program = options.shell
    ? ["sh", "-c", options.shell.replaceAll("TBUILD", tbuildBin)]
    : [tbuildBin, "worker", "--stdio"];
  const command = ["env", "-i", ...assignments, ...program];
  return spawnWorker(mode === "rootless" ? ["runuser", "-u", ROOTLESS_USER, "--", ...command] : command);
}

/** Runs `argv` (a command line that runs `tbuild worker --stdio`) on pipes, in a process group of its own. */
export function spawnWorker(argv: string[]): WorkerProcess {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], detached: true, cwd: "/" });
  let stderr = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => {
    stderr += text;
  });
  // Never rejects: a stream error on the way (the client ending the pipes) is no failure of the worker.
  const ended = Promise.all([
    new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once("exit", (code, signal) => resolve({ code, signal })),
    ),
    new Promise((resolve) => child.stdout!.once("close", resolve)),
  ]).then(([exit]) => exit);
  const stream = pipesAsStream(child);
  return {
    child,
    stream,
    stderr: () => stderr,
    ended,
    groupAlive: () => liveProcessesOfGroup(child.pid!).length > 0,
    groupGone: async () => {
      // A signal to a group returns before each member has died: look until none is left (or the
      // test's own timeout says one never goes).
      while (liveProcessesOfGroup(child.pid!).length > 0) await new Promise((r) => setTimeout(r, 20));
    },
  };
}

/**
 * The worker's stdout and stdin as one stream for the client. Once the client lets go of it, the
 * rest of the worker's output is read and dropped, so that its end (the proof that no process
 * holds the pipe any more) is still seen.
 */
function pipesAsStream(child: ChildProcess): Duplex {
  const output = child.stdout!;
  const input = child.stdin!;
  let dropping = false;
  const stream = new Duplex({
    read: () => {
      output.resume();
    },
    write: (chunk: Buffer, _encoding, callback) => {
      input.write(chunk, callback);
    },
    final: (callback) => {
      input.end();
      callback();
    },
    destroy: (err, callback) => {
      input.destroy();
      dropping = true;
      output.resume();
      callback(err);
    },
  });
  output.on("data", (chunk: Buffer) => {
    if (!dropping && !stream.push(chunk)) output.pause();
  });
  output.on("end", () => {
    if (!dropping) stream.push(null);
  });
  output.on("error", (err) => stream.destroy(err));
  input.on("error", (err) => stream.destroy(err));
  return stream;
}

/**
 * The processes of a process group that are not zombies. A killed process whose parent died too
 * stays a zombie until init reaps it, which here may take a while: dead all the same.
 */
function liveProcessesOfGroup(pgid: number): number[] {
  const live: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue;
    }
    // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after its last ")".
    const [state, , group] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (Number(group) === pgid && state !== "Z") live.push(Number(entry));
  }
  return live;
}
