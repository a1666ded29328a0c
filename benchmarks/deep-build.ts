/**
 * Whether a build step gets slower as the layers under it pile up. Builds one Dockerfile of STEPS
 * `RUN` steps (default 600), each writing one file of its own, from a busybox base imported with
 * `tbuild import`, cold, with `--progress=rawjson`; each step's time is the wall time between the
 * completion of the step before it and its own (every step waits for the one before: it is a
 * chain), stamped as rawjson's lines arrive. Prints the median step time of the first 50 steps
 * beside the last 50, and their ratio: flat is ~1.
 *
 * The kernel stacks at most 500 overlay layers, in at most a page of mount options: a build this
 * deep only stays flat when the snapshotter keeps each step's stack short.
 *
 *   node_modules/.bin/node benchmarks/deep-build.ts                 (after `npm run build`; as root)
 *   STEPS=300 node_modules/.bin/node benchmarks/deep-build.ts
 *   ROOTLESS=1 node_modules/.bin/node benchmarks/deep-build.ts      (as root; builds as tbuild-test)
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { check, makeBusyboxRootfs } from "./lib/busybox.ts";

const STEPS = Number(process.env.STEPS ?? 600);
const WINDOW = 50;
const ROOTLESS_USER = "tbuild-test";
const rootless = process.env.ROOTLESS === "1";

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-deep-"));

/** The command line as root, or as the rootless test user (who must reach everything under `work`). */
function asBuilder(args: string[], store: string): [string, string[]] {
  const env = [`TBUILD_ROOT=${store}`, "TBUILD_CONFIG=/dev/null", `PATH=${process.env.PATH}`];
  if (!rootless) return ["env", [...env, tbuild, ...args]];
  return ["runuser", ["-u", ROOTLESS_USER, "--", "env", ...env, `HOME=${work}`, tbuild, ...args]];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Runs the build; the wall time at which each RUN step completed, in order, and the build's total. */
async function build(store: string, context: string): Promise<{ completions: number[]; total: number }> {
  const [command, args] = asBuilder(["build", "--progress=rawjson", "-t", "deep:bench", context], store);
  const started = performance.now();
  const child = spawn(command, args, { stdio: ["ignore", "ignore", "pipe"] });
  const completions: number[] = [];
  const errors: string[] = [];
  for await (const line of createInterface({ input: child.stderr! })) {
    let event: { type: string; name?: string; internal?: boolean; error?: string };
    try {
      event = JSON.parse(line);
    } catch {
      errors.push(line);
      continue;
    }
    if (event.type === "vertex.completed" && !event.internal && / RUN /.test(event.name ?? "")) {
      completions.push(performance.now());
    }
    if (event.type === "build.failed") errors.push(event.error ?? line);
  }
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  if (code !== 0) throw new Error(`the build failed (${code}): ${errors.join("; ")}`);
  return { completions, total: performance.now() - started };
}

try {
  if (process.getuid?.() !== 0)
    throw new Error("run this benchmark as root (ROOTLESS=1 builds as the test user)");
  chmodSync(work, 0o755);
  const store = join(work, "store");
  const rootfs = join(work, "rootfs");
  makeBusyboxRootfs(rootfs);
  mkdirSync(store);
  if (rootless) execFileSync("chown", ["-R", ROOTLESS_USER, store, work]);
  const [importCommand, importArgs] = asBuilder(["import", rootfs, "busybox"], store);
  check(spawnSync(importCommand, importArgs), "tbuild import");

  const context = join(work, "context");
  mkdirSync(context);
  const lines = ["FROM busybox"];
  for (let i = 1; i <= STEPS; i++) lines.push(`RUN echo ${i} > /step-${i}`);
  writeFileSync(join(context, "Dockerfile"), `${lines.join("\n")}\n`);
  chmodSync(join(context, "Dockerfile"), 0o644);

  const { completions, total } = await build(store, context);
  if (completions.length !== STEPS) {
    throw new Error(`expected ${STEPS} RUN steps to complete, saw ${completions.length}`);
  }
  // A step's time: from the completion of the one before (the first: from the second's start).
  const steps = completions.slice(1).map((t, i) => t - completions[i]!);
  const first = median(steps.slice(0, WINDOW));
  const last = median(steps.slice(-WINDOW));
  console.log(
    `${STEPS} RUN steps, ${rootless ? `rootless (as ${ROOTLESS_USER})` : "as root"}: ${(total / 1000).toFixed(1)} s in all`,
  );
  console.log(`median step time, steps 2-${WINDOW + 1}: ${first.toFixed(0)} ms`);
  console.log(`median step time, last ${WINDOW} steps: ${last.toFixed(0)} ms`);
  console.log(`ratio last/first: ${(last / first).toFixed(2)} (flat is ~1)`);
  if (process.env.VERBOSE === "1") {
    for (let from = 0; from < steps.length; from += WINDOW) {
      console.log(
        `  steps ${from + 2}-${Math.min(from + WINDOW, steps.length) + 1}: median ${median(steps.slice(from, from + WINDOW)).toFixed(0)} ms`,
      );
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
