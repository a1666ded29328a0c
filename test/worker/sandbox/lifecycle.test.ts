/**
 * How a sandboxed process runs and ends: output as it comes, input, mounts, timeouts, cancellation,
 * parallel runs, a terminal. After every run, however it ended, nothing of it is left: no mount,
 * no runc state, no process.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, watch, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runInSandbox } from "../../../worker/sandbox/index.js";
import {
  hostMountsMentioning,
  MODES,
  mountsOf,
  type Outcome,
  processesWith,
  SandboxHarness,
} from "./harness.js";

function expectNothingLeft(harness: SandboxHarness, outcome: Outcome, marker?: string): void {
  expect(outcome.stateLeft).toEqual([]);
  expect(mountsOf(harness, outcome)).toEqual([]);
  expect(hostMountsMentioning(harness.workDir)).toEqual([]);
  if (marker) expect(processesWith(marker)).toEqual([]);
}

describe.each(MODES)("a sandboxed process, %s", (mode) => {
  let harness: SandboxHarness;
  beforeAll(async () => {
    harness = await SandboxHarness.create(mode);
  });
  afterAll(async () => {
    await harness?.cleanup();
  });
  // Each test's sleeping process carries a number of its own, to find strays by.
  const marker = (n: number) => `${n}${mode === "root" ? 1 : 2}`;

  it("streams output as it comes", async () => {
    const outcome = await harness.run({ spec: { args: ["sh", "-c", "echo first; sleep 0.6; echo second"] } });
    expect(outcome.stdout).toBe("first\nsecond\n");
    expect(outcome.firstOutputMs).toBeDefined();
    expect(outcome.firstOutputMs as number).toBeLessThan(outcome.elapsedMs - 400);
  });

  it("reads its input from a stream", async () => {
    const outcome = await harness.run({
      spec: { args: ["sh", "-c", "tr a-z A-Z"] },
      stdinText: "hello\nworld\n",
    });
    expect(outcome.stdout).toBe("HELLO\nWORLD\n");
    expect(outcome.result?.exitCode).toBe(0);
  });

  it("is killed at its timeout, SIGTERM first then SIGKILL, and leaves nothing behind", async () => {
    const tag = marker(424);
    const outcome = await harness.run({ spec: { args: ["sleep", tag] }, timeoutMs: 300, killGraceMs: 200 });
    expect(outcome.result).toEqual({ exitCode: 137, signal: "SIGKILL", timedOut: true });
    expect(outcome.elapsedMs).toBeLessThan(5000);
    expectNothingLeft(harness, outcome, `sleep ${tag}`);
  });

  it("at its timeout gets SIGTERM and the grace period to exit on its own", async () => {
    const script = 'trap "echo got TERM; exit 7" TERM; echo ready; while true; do sleep 0.05; done';
    const outcome = await harness.run({
      spec: { args: ["sh", "-c", script] },
      timeoutMs: 400,
      killGraceMs: 5000,
    });
    expect(outcome.stdout).toBe("ready\ngot TERM\n");
    expect(outcome.result).toEqual({ exitCode: 7, timedOut: true });
    expect(outcome.elapsedMs).toBeLessThan(4000);
  });

  it("aborted mid-run, is killed and leaves no mount, no runc state and no process", async () => {
    const tag = marker(4244);
    const outcome = await harness.run({
      spec: {
        args: ["sh", "-c", `sleep ${tag} & sleep ${tag}`],
        mounts: [{ type: "tmpfs", destination: "/scratch" }],
      },
      abortAfterMs: 300,
      killGraceMs: 100,
    });
    expect(outcome.error?.name).toBe("AbortError");
    expect(outcome.elapsedMs).toBeLessThan(5000);
    expectNothingLeft(harness, outcome, `sleep ${tag}`);
    expect(existsSync(path.join(harness.rootfs, "scratch"))).toBe(false);
  });

  it("runs in parallel with others in one state directory", async () => {
    const stateDir = harness.makeDir("shared-state");
    const outcomes = await Promise.all(
      [1, 2, 3].map((n) => harness.run({ spec: { args: ["sh", "-c", `sleep 0.2; echo ${n}`] }, stateDir })),
    );
    // Each outcome whole in the message: a run that failed says why, not only that its output is missing.
    expect(
      outcomes.map((o) => o.stdout),
      JSON.stringify(outcomes),
    ).toEqual(["1\n", "2\n", "3\n"]);
    expect(readdirSync(stateDir)).toEqual([]);
  });

  it("refuses a second container with an id already running in the state directory", async () => {
    const stateDir = harness.makeDir("same-id");
    // The first container says it runs (a file in a bound directory), then waits on a FIFO until
    // the second has been refused: no guess at how long either takes to start.
    const signals = harness.makeDir("same-id-signals");
    const go = path.join(signals, "go");
    execFileSync("mkfifo", ["-m", "666", go]);
    const started = path.join(signals, "started");
    const watcher = watch(signals);
    const running = new Promise<void>((resolve) => {
      watcher.on("change", () => {
        if (existsSync(started)) resolve();
      });
    });
    const first = harness.run({
      spec: {
        args: ["sh", "-c", "touch /signals/started; cat /signals/go"],
        mounts: [{ type: "bind", source: signals, destination: "/signals" }],
      },
      stateDir,
      id: "twin",
    });
    try {
      await Promise.race([running, first.then((o) => Promise.reject(new Error(JSON.stringify(o))))]);
    } finally {
      watcher.close();
    }
    const second = await harness.run({ spec: { args: ["true"] }, stateDir, id: "twin" });
    writeFileSync(go, "go\n");
    const firstOutcome = await first;
    expect(firstOutcome.result?.exitCode, JSON.stringify(firstOutcome)).toBe(0);
    expect(firstOutcome.stdout).toBe("go\n");
    expect(second.error).toMatchObject({ code: "E_SANDBOX_ID" });
    expect(readdirSync(stateDir)).toEqual([]);
  });

  it("binds host directories read-write and read-only, and mounts a tmpfs", async () => {
    const shared = harness.makeDir("shared");
    const readonly = harness.makeDir("readonly");
    writeFileSync(path.join(readonly, "input"), "from the host\n");
    if (mode === "rootless") {
      // The user's own files are root's inside its namespace.
      execFileSync("chown", ["tbuild-test:tbuild-test", path.join(readonly, "input")]);
    }
    const outcome = await harness.run({
      spec: {
        args: [
          "sh",
          "-c",
          "echo made inside > /out/file; cat /in/input; touch /in/x && echo WROTE; echo t > /scratch/t && cat /scratch/t",
        ],
        mounts: [
          { type: "bind", source: shared, destination: "/out" },
          { type: "bind", source: readonly, destination: "/in", readonly: true },
          { type: "tmpfs", destination: "/scratch" },
        ],
      },
    });
    expect(outcome.stdout).toBe("from the host\nt\n");
    expect(outcome.stderr).toMatch(/Read-only file system/);
    expect(readFileSync(path.join(shared, "file"), "utf8")).toBe("made inside\n");
    expect(readdirSync(readonly)).toEqual(["input"]);
    expectNothingLeft(harness, outcome);
    for (const stub of ["out", "in", "scratch"])
      expect(existsSync(path.join(harness.rootfs, stub))).toBe(false);
  });

  it("with a read-only root filesystem cannot write to it", async () => {
    const outcome = await harness.run({
      spec: { args: ["sh", "-c", "touch /etc/newfile || echo REFUSED"], readonlyRootfs: true },
    });
    expect(outcome.stdout).toBe("REFUSED\n");
    expect(outcome.stderr).toMatch(/Read-only file system/);
    expect(existsSync(path.join(harness.rootfs, "etc/newfile"))).toBe(false);
  });

  it("creates a missing working directory, owned by the user", async () => {
    const outcome = await harness.run({
      spec: { args: ["sh", "-c", "pwd; stat -c %u:%g ."], cwd: "/work/dir", user: "app" },
    });
    expect(outcome.stdout).toBe("/work/dir\n1000:1000\n");
    expect(existsSync(path.join(harness.rootfs, "work/dir"))).toBe(true);
  });

  it("creates a missing working directory owned by root when asked, as docker run does", async () => {
    const outcome = await harness.run({
      spec: {
        args: ["sh", "-c", "pwd; stat -c %u:%g ."],
        cwd: "/work/rooted",
        user: "app",
        workdirOwner: "root",
      },
    });
    expect(outcome.stdout).toBe("/work/rooted\n0:0\n");
  });

  it("gives the process a terminal when asked", async () => {
    const outcome = await harness.run({
      spec: {
        args: ["sh", "-c", "tty; test -t 0 && test -t 1 && echo BOTH; ls /dev/console; echo $TERM"],
        terminal: true,
      },
      underTerminal: true,
    });
    expect(outcome.error).toBeUndefined();
    // script(1) echoes the end of its own (empty) input onto the terminal: "^@" may precede the first line.
    const text = outcome.stdout.replaceAll("\r", "");
    expect(text).toMatch(/\/dev\/pts\/0\nBOTH\n\/dev\/console\nxterm\n/);
    expect(outcome.result?.exitCode).toBe(0);
  });
});

describe("without privileges", () => {
  it("a plain user outside tbuild's user namespace is told what the sandbox needs", async () => {
    const harness = await SandboxHarness.create("rootless");
    try {
      const outcome = await harness.run({ spec: { args: ["true"] }, outsideUserNamespace: true });
      expect(outcome.error).toMatchObject({ name: "SandboxError", code: "E_SANDBOX_PRIVILEGES" });
      expect(outcome.error?.message).toMatch(/user namespace/);
      expect(outcome.stateLeft).toEqual([]);
    } finally {
      await harness.cleanup();
    }
  });
});

describe("cancellation before the start", () => {
  it("rejects at once with the signal's reason and creates nothing", async () => {
    const harness = await SandboxHarness.create("root");
    try {
      const stateDir = path.join(harness.workDir, "never");
      mkdirSync(stateDir);
      const controller = new AbortController();
      controller.abort(new Error("cancelled by the user"));
      await expect(
        runInSandbox(harness.specFor({ args: ["true"] }), { stateDir, signal: controller.signal }),
      ).rejects.toThrow("cancelled by the user");
      expect(readdirSync(stateDir)).toEqual([]);
    } finally {
      await harness.cleanup();
    }
  });
});
