/**
 * The hostile suite's common ground. Every case builds (or runs) what an attacker controls (a
 * Dockerfile, a context, an image, a registry's answers) through the real CLI, as root and as the
 * unprivileged test user, and then checks the two things a victim cares about:
 *
 * - a **canary** outside every store and context (a directory of the invoking user's own files,
 *   holding a secret) is exactly as it was, and its secret appears in no output;
 * - the **store is still usable**: nothing of it is left mounted, and a plain build and `images`
 *   still work in it.
 *
 * Stores start as copies of one store with `busybox` imported, so a case costs a build, not an
 * import. Everything the rootless user must reach lives under one world-readable directory.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, expect } from "vitest";
import { tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { type RunResult, userIds } from "../helpers/judges.js";
import { tempDirs } from "../helpers/temp.js";

export type Mode = "root" | "rootless";
export const MODES: Mode[] = ["root", "rootless"];
/** The unprivileged user with subordinate ids that `.ci/install` creates. */
export const ROOTLESS_USER = "tbuild-test";
/** How long one tbuild command of a case may take before the case fails as hung. */
const HANG_GUARD_MS = 300_000;

export interface TbuildOptions {
  /** Added to the fixed environment (TBUILD_ROOT, TBUILD_CONFIG=/dev/null, SOURCE_DATE_EPOCH, PATH, HOME). */
  env?: Record<string, string>;
  cwd?: string;
  input?: string;
  timeoutMs?: number;
}

/** A directory of the invoking user's own files, which no build may read or change. */
export class Canary {
  readonly dir: string;
  readonly secret: string;
  private readonly before: string;

  constructor(dir: string, mode: Mode) {
    this.dir = dir;
    this.secret = `canary-secret-${randomBytes(12).toString("hex")}`;
    mkdirSync(path.join(this.dir, "sub"), { recursive: true });
    writeFileSync(path.join(this.dir, "secret"), `${this.secret}\n`, { mode: 0o600 });
    writeFileSync(path.join(this.dir, "sub", "file"), "untouched\n", { mode: 0o644 });
    // Rootless, tbuild runs as the test user: the canary is that user's own, which an escape could reach.
    if (mode === "rootless") {
      const { uid, gid } = userIds(ROOTLESS_USER);
      for (const p of [
        this.dir,
        path.join(this.dir, "sub"),
        path.join(this.dir, "secret"),
        path.join(this.dir, "sub", "file"),
      ]) {
        chownSync(p, uid, gid);
      }
    }
    this.before = this.state();
  }

  /** Names, types, modes, owners, sizes and contents of everything in the canary directory. */
  state(): string {
    const lines: string[] = [];
    const walk = (dir: string, rel: string) => {
      for (const name of readdirSync(dir).sort()) {
        const full = path.join(dir, name);
        const info = statSync(full, { throwIfNoEntry: false });
        if (!info) {
          lines.push(`${rel}${name} dangling`);
          continue;
        }
        const head = `${rel}${name} ${info.mode.toString(8)} ${info.uid}:${info.gid} ${info.size}`;
        if (info.isDirectory()) {
          lines.push(head);
          walk(full, `${rel}${name}/`);
        } else {
          lines.push(`${head} ${info.isFile() ? readFileSync(full, "base64") : ""}`);
        }
      }
    };
    walk(this.dir, "");
    return lines.join("\n");
  }

  /** The canary is as it was, and `outputs` (what tbuild printed, files it wrote) never hold its secret. */
  expectUntouched(...outputs: (string | Buffer)[]): void {
    expect(this.state(), "the canary outside the build changed").toBe(this.before);
    for (const output of outputs) {
      expect(output.toString().includes(this.secret), "the canary's secret leaked into an output").toBe(
        false,
      );
    }
  }
}

export interface HostileWorld {
  /** A new empty directory under the world-readable work directory, owned by the mode's user. */
  dir(name: string, mode?: Mode): string;
  /** A build context made of `files` (text, or `{ link }` for a symlink), readable by every user. */
  context(files: Record<string, string | { link: string }>, mode?: Mode): string;
  /** A new store holding `busybox`, owned by the mode's user. */
  store(mode: Mode): string;
  /** A new canary for that mode (owned by the user tbuild runs as). */
  canary(mode: Mode): Canary;
  /** `bin/tbuild args`, as root or as the rootless user, with a fixed environment. */
  tbuild(mode: Mode, store: string, args: string[], options?: TbuildOptions): RunResult;
  /** The same, started and left running (for kills and concurrency). */
  spawnTbuild(mode: Mode, store: string, args: string[], options?: TbuildOptions): ReturnType<typeof spawn>;
  /** The store has nothing mounted, and a build, `images` and a `run` of the result still work in it. */
  expectStoreUsable(mode: Mode, store: string): void;
}

function commandLine(mode: Mode, store: string, args: string[], options: TbuildOptions = {}): string[] {
  const home =
    mode === "rootless"
      ? execFileSync("getent", ["passwd", ROOTLESS_USER], { encoding: "utf8" }).split(":")[5]!
      : (process.env.HOME ?? "/");
  const assignments = Object.entries({
    PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: home,
    TBUILD_ROOT: store,
    TBUILD_CONFIG: "/dev/null",
    SOURCE_DATE_EPOCH: String(FIXED_EPOCH),
    ...options.env,
  }).map(([k, v]) => `${k}=${v}`);
  const command = ["env", "-i", ...assignments, tbuildBin, ...args];
  return mode === "rootless" ? ["runuser", "-u", ROOTLESS_USER, "--", ...command] : command;
}

/** Mount points under `dir` in this (the host's) mount namespace. */
export function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((point) => point === dir || point.startsWith(`${dir}/`));
}

/**
 * The hostile world of one test file: call at the top level of the file. Its directories are
 * removed after the file's tests.
 */
export function hostileWorld(): HostileWorld {
  const tempDir = tempDirs();
  let work = "";
  let template = "";
  let counter = 0;
  const ids = (mode: Mode) => (mode === "rootless" ? userIds(ROOTLESS_USER) : { uid: 0, gid: 0 });

  beforeAll(async () => {
    work = tempDir("hostile");
    chmodSync(work, 0o755);
    template = path.join(work, "template-store");
    await importBusybox(template, "busybox");
  }, 120_000);

  afterAll(() => {
    // Whatever a failed case left mounted must not make the removal of the work directory fail.
    for (const point of mountsUnder(work).reverse()) spawnSync("umount", ["-l", point]);
  });

  const world: HostileWorld = {
    dir(name, mode = "root") {
      const dir = path.join(work, `${name}-${++counter}`);
      mkdirSync(dir, { recursive: true });
      const { uid, gid } = ids(mode);
      chownSync(dir, uid, gid);
      return dir;
    },
    context(files, mode = "root") {
      const dir = world.dir("ctx", mode);
      for (const [name, content] of Object.entries(files)) {
        const target = path.join(dir, name);
        mkdirSync(path.dirname(target), { recursive: true });
        if (typeof content === "string") writeFileSync(target, content);
        else execFileSync("ln", ["-s", content.link, target]);
      }
      execFileSync("chmod", ["-R", "a+rX", dir]);
      return dir;
    },
    store(mode) {
      const store = path.join(work, `store-${mode}-${++counter}`);
      execFileSync("cp", ["-a", template, store]);
      if (mode === "rootless") execFileSync("chown", ["-R", ROOTLESS_USER, store]);
      return store;
    },
    canary(mode) {
      return new Canary(path.join(work, `canary-${mode}-${++counter}`), mode);
    },
    tbuild(mode, store, args, options = {}) {
      const [file, ...rest] = commandLine(mode, store, args, options);
      const result = spawnSync(file!, rest, {
        encoding: "utf8",
        input: options.input ?? "",
        maxBuffer: 256 * 1024 * 1024,
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
        // A guard against a hang, which would otherwise hold the whole run: a case asks for less.
        timeout: options.timeoutMs ?? HANG_GUARD_MS,
        killSignal: "SIGKILL",
      });
      const timedOut = (result.error as NodeJS.ErrnoException | undefined)?.code === "ETIMEDOUT";
      if (result.error && !timedOut) throw result.error;
      if (timedOut && options.timeoutMs === undefined) {
        throw new Error(
          `tbuild ${args.join(" ")} (${mode}) did not end within ${HANG_GUARD_MS / 1000} s; its output so far:\n${(result.stderr ?? "").slice(-4000)}`,
        );
      }
      return { status: result.status, stdout: result.stdout ?? "", stderr: result.stderr ?? "" };
    },
    spawnTbuild(mode, store, args, options = {}) {
      const [file, ...rest] = commandLine(mode, store, args, options);
      return spawn(file!, rest, {
        stdio: ["ignore", "pipe", "pipe"],
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      });
    },
    expectStoreUsable(mode, store) {
      expect(mountsUnder(store), "something of the store is still mounted").toEqual([]);
      const ctx = world.context({
        Dockerfile: 'FROM busybox\nRUN echo still-usable > /usable\nCMD ["cat", "/usable"]\n',
      });
      const built = world.tbuild(mode, store, ["build", "-q", "-t", "usable:check", ctx]);
      expect(built.status, `a plain build in the store failed afterwards: ${built.stderr}`).toBe(0);
      const images = world.tbuild(mode, store, ["images"]);
      expect(images.status, images.stderr).toBe(0);
      expect(images.stdout).toContain("usable");
      const ran = world.tbuild(mode, store, ["run", "--rm", "usable:check"]);
      expect(ran.status, ran.stderr).toBe(0);
      expect(ran.stdout).toBe("still-usable\n");
      expect(mountsUnder(store)).toEqual([]);
    },
  };
  return world;
}

/** The command line `tbuild()` runs, for running it another way (on a terminal, say). */
export function tbuildCommandLine(
  mode: Mode,
  store: string,
  args: string[],
  options: TbuildOptions = {},
): string[] {
  return commandLine(mode, store, args, options);
}

/**
 * `tbuild build CTX -o type=tar` into a new file of `world`: the run, the tar's path and its bytes
 * (empty when the build failed), for the canary to be looked for in all of them.
 */
export function buildToTar(world: HostileWorld, mode: Mode, store: string, ctx: string) {
  const out = path.join(world.dir("out", mode), "image.tar");
  const built = world.tbuild(mode, store, ["build", "--progress=plain", "-o", `type=tar,dest=${out}`, ctx]);
  return { built, out, tar: built.status === 0 ? readFileSync(out) : Buffer.alloc(0) };
}
