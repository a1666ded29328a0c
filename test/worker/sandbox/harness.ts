/**
 * Runs sandbox jobs with real runc over a copy of the busybox root filesystem, in both of the ways
 * tbuild runs: as real root (in the test process itself), and rootless (as the unprivileged test
 * user, through `driver.ts`, which enters tbuild's user namespace as tbuild does). Either way the
 * outcome says what the process printed, how it ended, and what was left behind: the mounts of the
 * namespace the sandbox ran in, before and after, and the state directory's entries.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { appendFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { runInSandbox, type SandboxResult, type SandboxSpec } from "../../../worker/sandbox/index.js";
import { projectRoot } from "../../helpers/cli.js";
import { busyboxRootfs } from "../../helpers/images.js";

export type Mode = "root" | "rootless";
export const MODES: Mode[] = ["root", "rootless"];
/** The unprivileged user with subordinate ids that `.ci/install` creates. */
export const TEST_USER = "tbuild-test";
const NODE = path.join(projectRoot, "node_modules/node/bin/node");
const DRIVER = path.join(projectRoot, "test/worker/sandbox/driver.ts");

/** What driver.ts reads. */
export interface DriverJob {
  spec: SandboxSpec;
  stateDir: string;
  resultFile: string;
  id?: string;
  timeoutMs?: number;
  killGraceMs?: number;
  /** Abort this long after runc started. */
  abortAfterMs?: number;
  /** Send SIGKILL to the container this long after runc started. */
  killAfterMs?: number;
  stdinText?: string;
  stdinInherit?: boolean;
  /** Rootless: stay the plain unprivileged user, without tbuild's user namespace. */
  outsideUserNamespace?: boolean;
}

/** What driver.ts writes. */
export interface DriverOutcome {
  result?: SandboxResult;
  error?: { name: string; message: string; code?: string };
  /** /proc/self/mountinfo of the namespace runInSandbox ran in. */
  mountsBefore: string[];
  mountsAfter: string[];
  /** Entries left in the state directory after the run. */
  stateLeft: string[];
  elapsedMs?: number;
}

export interface Outcome extends DriverOutcome {
  stdout: string;
  stderr: string;
  elapsedMs: number;
  /** When the first output arrived, from the same start as elapsedMs. */
  firstOutputMs?: number;
  stateDir: string;
}

export type Job = Omit<DriverJob, "spec" | "stateDir" | "resultFile"> & {
  spec: Partial<SandboxSpec> & { args: string[] };
  /** Run under `script`, so that tbuild has a terminal (for `terminal: true`). */
  underTerminal?: boolean;
  /** Default: a new state directory for this run. */
  stateDir?: string;
};

/** Users and groups added to the busybox image for the user-resolution tests. */
const EXTRA_PASSWD = "app:x:1000:1000:app:/home/app:/bin/sh\n";
const EXTRA_GROUP = "app:x:1000:\nextra:x:2000:app\nmore:x:2001:other,app\nunrelated:x:2002:other\n";

function chownToTestUser(target: string): void {
  execFileSync("chown", ["-R", `${TEST_USER}:${TEST_USER}`, target]);
}

export class SandboxHarness {
  readonly mode: Mode;
  /** A private copy of the busybox root filesystem, owned as the mode needs. */
  readonly rootfs: string;
  readonly workDir: string;

  private constructor(mode: Mode, workDir: string) {
    this.mode = mode;
    this.workDir = workDir;
    this.rootfs = path.join(workDir, "rootfs");
  }

  static async create(mode: Mode): Promise<SandboxHarness> {
    if (process.getuid?.() !== 0) {
      throw new Error(
        "the sandbox tests run as root: they run runc as root, and rootless as the tbuild-test user",
      );
    }
    const harness = new SandboxHarness(mode, mkdtempSync(path.join(tmpdir(), `tbuild-sandbox-${mode}-`)));
    execFileSync("cp", ["-a", await busyboxRootfs(), harness.rootfs]);
    await appendFile(path.join(harness.rootfs, "etc/passwd"), EXTRA_PASSWD);
    await appendFile(path.join(harness.rootfs, "etc/group"), EXTRA_GROUP);
    if (mode === "rootless") chownToTestUser(harness.workDir);
    return harness;
  }

  /** A directory the mode's user owns (for state directories and bind-mount sources). */
  makeDir(prefix: string): string {
    const dir = mkdtempSync(path.join(this.workDir, `${prefix}-`));
    if (this.mode === "rootless") chownToTestUser(dir);
    return dir;
  }

  specFor(partial: Job["spec"]): SandboxSpec {
    return { rootfs: this.rootfs, env: [], cwd: "/", user: "", network: "host", ...partial };
  }

  async run(job: Job): Promise<Outcome> {
    const stateDir = job.stateDir ?? this.makeDir("state");
    if (this.mode === "root" && !job.underTerminal)
      return { ...(await this.runHere(job, stateDir)), stateDir };
    return { ...(await this.runInDriver(job, stateDir)), stateDir };
  }

  private async runHere(job: Job, stateDir: string): Promise<Omit<Outcome, "stateDir">> {
    const mountinfo = () => readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter(Boolean);
    const started = performance.now();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let firstOutputMs: number | undefined;
    stdout.on("data", (c: Buffer) => {
      firstOutputMs ??= performance.now() - started;
      out.push(c);
    });
    stderr.on("data", (c: Buffer) => err.push(c));
    const controller = new AbortController();
    const outcome: DriverOutcome = { mountsBefore: mountinfo(), mountsAfter: [], stateLeft: [] };
    try {
      outcome.result = await runInSandbox(this.specFor(job.spec), {
        stateDir,
        stdin: job.stdinText === undefined ? "ignore" : Readable.from([job.stdinText]),
        stdout,
        stderr,
        signal: controller.signal,
        ...(job.id === undefined ? {} : { id: job.id }),
        ...(job.timeoutMs === undefined ? {} : { timeoutMs: job.timeoutMs }),
        ...(job.killGraceMs === undefined ? {} : { killGraceMs: job.killGraceMs }),
        onStart: (container) => {
          if (job.abortAfterMs !== undefined) setTimeout(() => controller.abort(), job.abortAfterMs);
          if (job.killAfterMs !== undefined) setTimeout(() => container.kill("SIGKILL"), job.killAfterMs);
        },
      });
    } catch (e) {
      const error = e as Error & { code?: string };
      outcome.error = {
        name: error.name,
        message: error.message,
        ...(error.code ? { code: error.code } : {}),
      };
    }
    const elapsedMs = performance.now() - started;
    // The sandbox writes to the streams and never ends them: ended here, and read to their end,
    // so that a last chunk still on its way through a stream is counted.
    stdout.end();
    stderr.end();
    await Promise.all([finished(stdout), finished(stderr)]);
    return {
      ...outcome,
      elapsedMs,
      ...(firstOutputMs === undefined ? {} : { firstOutputMs }),
      mountsAfter: mountinfo(),
      stateLeft: readdirSync(stateDir),
      stdout: Buffer.concat(out).toString(),
      stderr: Buffer.concat(err).toString(),
    };
  }

  private async runInDriver(job: Job, stateDir: string): Promise<Omit<Outcome, "stateDir">> {
    const jobDir = this.makeDir("job");
    const jobFile = path.join(jobDir, "job.json");
    const resultFile = path.join(jobDir, "result.json");
    const { underTerminal, spec, stateDir: _, ...rest } = job;
    const driverJob: DriverJob = { ...rest, spec: this.specFor(spec), stateDir, resultFile };
    if (underTerminal) driverJob.stdinInherit = true;
    writeFileSync(jobFile, JSON.stringify(driverJob));
    if (this.mode === "rootless") chownToTestUser(jobDir);

    let command = [NODE, "--no-warnings", DRIVER, jobFile];
    if (this.mode === "rootless") command = ["runuser", "-u", TEST_USER, "--", ...command];
    if (underTerminal) command = ["script", "-qefc", command.map(shellQuote).join(" "), "/dev/null"];
    const started = performance.now();
    const child = spawn(command[0], command.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      // The rootless driver must find its own way into the user namespace, as tbuild does.
      env: { ...process.env, TBUILD_USERNS: "" },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let firstOutputMs: number | undefined;
    child.stdout.on("data", (c: Buffer) => {
      firstOutputMs ??= performance.now() - started;
      out.push(c);
    });
    child.stderr.on("data", (c: Buffer) => err.push(c));
    const status = await new Promise<number | null>((resolve) =>
      child.once("close", (code) => resolve(code)),
    );
    const elapsedMs = performance.now() - started;
    const stdout = Buffer.concat(out).toString();
    const stderr = Buffer.concat(err).toString();
    let outcome: DriverOutcome;
    try {
      outcome = JSON.parse(readFileSync(resultFile, "utf8")) as DriverOutcome;
    } catch {
      throw new Error(`the sandbox driver failed (status ${status}):\n${stdout}\n${stderr}`);
    }
    return {
      ...outcome,
      stdout,
      stderr,
      elapsedMs,
      ...(firstOutputMs === undefined ? {} : { firstOutputMs }),
    };
  }

  async cleanup(): Promise<void> {
    await rm(this.workDir, { recursive: true, force: true });
  }
}

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Pids of host processes whose command line contains `marker`. */
export function processesWith(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      if (cmdline.includes(marker)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/**
 * Mounts a run left behind in the namespace it ran in: those under the harness's directory (the
 * root filesystem, state, sources), and, rootless, any change at all. As root the namespace is the
 * host's, where other programs mount and unmount as they please; the rootless driver's namespace
 * is its own (private propagation), so there the whole table must be as it was.
 */
export function mountsOf(harness: SandboxHarness, outcome: Outcome): string[] {
  const left = outcome.mountsAfter.filter((line) => line.includes(harness.workDir));
  if (harness.mode === "rootless") {
    const before = new Set(outcome.mountsBefore);
    const after = new Set(outcome.mountsAfter);
    // Other test files mount and unmount in their own temp directories meanwhile (vitest runs
    // files side by side), and the namespace sees those changes too: they are not this run's.
    const ours = (line: string) => line.includes(harness.workDir) || !line.includes(`${tmpdir()}/`);
    left.push(
      ...outcome.mountsAfter
        .filter((line) => !before.has(line) && ours(line))
        .map((line) => `added: ${line}`),
    );
    left.push(
      ...outcome.mountsBefore
        .filter((line) => !after.has(line) && ours(line))
        .map((line) => `removed: ${line}`),
    );
  }
  return left;
}

/** Lines of the host's /proc/mounts that mention `text`. */
export function hostMountsMentioning(text: string): string[] {
  return readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .filter((line) => line.includes(text));
}

/** The interface names of /proc/net/dev text (the network namespace's devices). */
export function interfaceNames(procNetDev: string): string[] {
  return procNetDev
    .split("\n")
    .slice(2)
    .map((line) => line.split(":")[0].trim())
    .filter(Boolean)
    .sort();
}

/** A capability set from /proc/<pid>/status's hex (CapEff, CapBnd...). */
export function capabilityBits(status: string, field: string): bigint {
  const match = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(status);
  if (!match) throw new Error(`no ${field} in:\n${status}`);
  return BigInt(`0x${match[1]}`);
}
