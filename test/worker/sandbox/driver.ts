/**
 * Runs one sandbox job in a process of its own, for the tests that cannot run inside the test
 * runner: rootless (started as the unprivileged test user, it re-enters tbuild's user namespace
 * with `reexecInUserNamespace` exactly as tbuild does) and under a terminal (`script`). It runs the
 * built code (`dist/`, as the CLI tests do), records the mounts of its namespace before and after
 * the run, and writes the outcome as JSON to the job's result file.
 *
 * Usage: node driver.ts JOB.json
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { Readable } from "node:stream";
import type * as SandboxModule from "../../../worker/sandbox/index.js";
import type * as UsernsModule from "../../../worker/userns.js";
import type { DriverJob, DriverOutcome } from "./harness.js";

const dist = new URL("../../../dist/worker/", import.meta.url);
const job = JSON.parse(readFileSync(process.argv[2], "utf8")) as DriverJob;
if (!job.outsideUserNamespace) {
  const userns = (await import(new URL("userns.js", dist).href)) as typeof UsernsModule;
  const code = await userns.reexecInUserNamespace(process.argv.slice(2), process.env);
  if (code !== undefined) process.exit(code);
}

const sandbox = (await import(new URL("sandbox/index.js", dist).href)) as typeof SandboxModule;
const mountinfo = () => readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter(Boolean);

const outcome: DriverOutcome = { mountsBefore: mountinfo(), mountsAfter: [], stateLeft: [] };
const controller = new AbortController();
const started = performance.now();
try {
  outcome.result = await sandbox.runInSandbox(job.spec, {
    stateDir: job.stateDir,
    stdin:
      job.stdinText === undefined
        ? job.stdinInherit
          ? "inherit"
          : "ignore"
        : Readable.from([job.stdinText]),
    stdout: "inherit",
    stderr: "inherit",
    signal: controller.signal,
    ...(job.id === undefined ? {} : { id: job.id }),
    ...(job.timeoutMs === undefined ? {} : { timeoutMs: job.timeoutMs }),
    ...(job.killGraceMs === undefined ? {} : { killGraceMs: job.killGraceMs }),
    onStart: (container) => {
      if (job.abortAfterMs !== undefined) setTimeout(() => controller.abort(), job.abortAfterMs);
      if (job.killAfterMs !== undefined) setTimeout(() => container.kill("SIGKILL"), job.killAfterMs);
    },
  });
} catch (err) {
  const e = err as Error & { code?: string };
  outcome.error = { name: e.name, message: e.message, ...(e.code === undefined ? {} : { code: e.code }) };
}
outcome.elapsedMs = performance.now() - started;
outcome.mountsAfter = mountinfo();
outcome.stateLeft = readdirSync(job.stateDir);
writeFileSync(job.resultFile, JSON.stringify(outcome));
