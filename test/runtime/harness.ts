/**
 * Running `tbuild` the two ways the runtime must work: as root, and as an unprivileged user with a
 * subuid range (`tbuild-test`, made by .ci/install), through `runuser`. Run by root, the tests do
 * both; run by another user, they run rootless as that user. Each mode has its own store owned by
 * its user, with the busybox test image loaded.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { chownSync, readdirSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type CliResult, tbuild, tbuildBin } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";

export const ROOTLESS_USER = "tbuild-test";

export interface Mode {
  name: "root" | "rootless";
  /** The user tbuild runs as: undefined for this process's own user. */
  user?: { name: string; uid: number; gid: number; home: string };
}

function lookupUser(name: string): Mode["user"] {
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  const home = execFileSync("getent", ["passwd", name], { encoding: "utf8" }).split(":")[5]!;
  return { name, uid, gid, home };
}

export function modes(): Mode[] {
  if (process.getuid?.() !== 0) return [{ name: "rootless" }];
  return [{ name: "root" }, { name: "rootless", user: lookupUser(ROOTLESS_USER) }];
}

export interface SpawnedTbuild {
  child: ChildProcess;
  /** The tbuild process itself (runuser forks it: the child's child). */
  tbuildPid(): Promise<number>;
  output(): { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A mode's world: its store, directories its user owns, and tbuild run as that user. */
export class ModeEnv {
  readonly mode: Mode;
  readonly store: string;
  private readonly makeDir: (prefix: string) => string;
  /** Variables every tbuild this runs gets (a call's own `env` wins). */
  baseEnv: Record<string, string> = {};

  constructor(mode: Mode, makeDir: (prefix: string) => string) {
    this.mode = mode;
    this.makeDir = makeDir;
    this.store = path.join(this.ownedDir("store"), "root");
  }

  /** A new empty directory owned by the mode's user. */
  ownedDir(prefix: string): string {
    const dir = this.makeDir(`rt-${this.mode.name}-${prefix}`);
    if (this.mode.user) chownSync(dir, this.mode.user.uid, this.mode.user.gid);
    return dir;
  }

  private command(
    args: string[],
    extraEnv: Record<string, string>,
  ): { file: string; argv: string[]; env: NodeJS.ProcessEnv } {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      TBUILD_ROOT: this.store,
      // No config or credentials of the user running the tests.
      TBUILD_CONFIG: "/dev/null",
      HOME: this.mode.user?.home ?? process.env.HOME ?? "/",
      ...this.baseEnv,
      ...extraEnv,
    };
    if (!this.mode.user) return { file: tbuildBin, argv: args, env };
    const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    return {
      file: "runuser",
      argv: ["-u", this.mode.user.name, "--", "env", "-i", ...assignments, tbuildBin, ...args],
      env: { PATH: env.PATH },
    };
  }

  run(
    args: string[],
    options: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {},
  ): CliResult {
    const { file, argv, env } = this.command(args, options.env ?? {});
    const result = spawnSync(file, argv, {
      env,
      input: options.input ?? "",
      encoding: "utf8",
      timeout: options.timeoutMs ?? 120_000,
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  ok(args: string[], options: { input?: string; env?: Record<string, string> } = {}): string {
    const result = this.run(args, options);
    if (result.status !== 0) {
      throw new Error(`tbuild ${args.join(" ")} exited ${result.status}: ${result.stderr}${result.stdout}`);
    }
    return result.stdout;
  }

  /** Like `run`, without blocking this process: it goes on reaping its children meanwhile, as a shell would. */
  async runAsync(args: string[]): Promise<CliResult> {
    const spawned = this.spawn(args);
    const { code } = await spawned.exited;
    return { status: code, ...spawned.output() };
  }

  spawn(args: string[]): SpawnedTbuild {
    const { file, argv, env } = this.command(args, {});
    const child = spawn(file, argv, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once("close", (code, signal) => resolve({ code, signal }));
    });
    const viaRunuser = this.mode.user !== undefined;
    return {
      child,
      exited,
      output: () => ({ stdout, stderr }),
      async tbuildPid() {
        if (!viaRunuser) return child.pid!;
        for (let i = 0; i < 200; i++) {
          const children = childrenOf(child.pid!);
          if (children.length > 0) return children[0]!;
          await sleep(25);
        }
        throw new Error("runuser started no tbuild");
      },
    };
  }

  /** Loads the busybox test image into this mode's store as `busybox`. */
  async loadBusybox(archive: string): Promise<void> {
    this.ok(["load", "-i", archive]);
  }

  /** Mount points under this mode's store in the host's mount table. */
  mountsInStore(): string[] {
    return readFileSync("/proc/mounts", "utf8")
      .split("\n")
      .filter((line) => line.includes(this.store));
  }
}

function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((task) =>
      readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").split(" ").filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}

/** The command lines of every process on the host (to look for strays). */
export function hostProcesses(): string[] {
  return execFileSync("ps", ["-eo", "args"], { encoding: "utf8" }).split("\n");
}

/** Polls `check` until it holds or `timeoutMs` passes; returns its last answer. */
export async function eventually(check: () => boolean, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(100);
  }
  return check();
}

let archive: Promise<string> | undefined;

/**
 * The busybox test image as an OCI archive every user can read (`tbuild load` works for any user,
 * where `tbuild import` of the root-owned tree would not).
 */
export function busyboxArchive(makeDir: (prefix: string) => string): Promise<string> {
  archive ??= (async () => {
    const dir = makeDir("rt-busybox");
    const store = path.join(dir, "store");
    await mkdir(store);
    await importBusybox(store, "busybox");
    const file = path.join(dir, "busybox.tar");
    const saved = tbuild(["save", "-o", file, "busybox"], { env: { TBUILD_ROOT: store } });
    if (saved.status !== 0) throw new Error(`tbuild save failed: ${saved.stderr}`);
    execFileSync("chmod", ["755", dir]);
    execFileSync("chmod", ["644", file]);
    return file;
  })();
  return archive;
}

/** A fresh world per mode, with busybox loaded; removed after the file's tests. */
export async function setUpMode(mode: Mode, makeDir: (prefix: string) => string): Promise<ModeEnv> {
  const env = new ModeEnv(mode, makeDir);
  await env.loadBusybox(await busyboxArchive(makeDir));
  return env;
}

/**
 * The pids of detached containers' monitors (runtime/monitor-main.ts) running for `store`: told
 * apart from other test files' by the TBUILD_ROOT in their environment.
 */
export function monitorsOf(store: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("monitor-main.js")) continue;
      if (readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(`TBUILD_ROOT=${store}`)) {
        pids.push(Number(entry));
      }
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}
