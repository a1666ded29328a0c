import { Worker } from "node:worker_threads";
import { expect, it } from "vitest";

/** Longest a single parse may take; the parser is linear, so this only trips on a hang. */
const CASE_LIMIT_MS = 2_000;
/** Loading the parser in the worker comes before the first case. */
const START_LIMIT_MS = 15_000;

/**
 * Runs fuzz-worker.ts and watches it: each case is announced before it runs, so a case that runs
 * too long is stopped and named.
 */
function fuzz(runs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("./fuzz-worker.ts", import.meta.url), { workerData: { runs } });
    let current = "(starting)";
    let deadline = Date.now() + START_LIMIT_MS;
    const watchdog = setInterval(() => {
      if (Date.now() <= deadline) return;
      clearInterval(watchdog);
      void worker.terminate();
      reject(new Error(`a case ran for over ${CASE_LIMIT_MS} ms: ${JSON.stringify(current).slice(0, 2000)}`));
    }, 100);
    const finish = (error?: Error) => {
      clearInterval(watchdog);
      void worker.terminate();
      if (error) reject(error);
      else resolve();
    };
    worker.on("message", (message: string | { done?: boolean; failed?: string }) => {
      if (typeof message === "string") {
        current = message;
        deadline = Date.now() + CASE_LIMIT_MS;
      } else if (message.failed !== undefined) {
        finish(new Error(message.failed));
      } else {
        finish();
      }
    });
    worker.on("error", (err) => finish(err));
    worker.on("exit", (code) => finish(new Error(`the fuzz worker exited (${code}) before finishing`)));
  });
}

it("random and mutated Dockerfiles parse, or fail with a positioned DockerfileError, never hanging", async () => {
  await expect(fuzz(6_000)).resolves.toBeUndefined();
}, 60_000);
