/**
 * How long `tbuild debug graph` takes on long Dockerfiles: 100,000 `ENV` lines (each sets the
 * image config, so a scan of the config per line is quadratic), and 10,000 `RUN` lines (a chain
 * of 10,000 vertices). Runs the real CLI as a process, start-up included, each run with an empty
 * store (so nothing parsed before is reused), and prints the median wall time beside the target
 * of issue 11 (100,000 ENV lines parse and lower in under 2 s), and the median CPU time (GNU
 * time's user + system), which a busy machine does not inflate.
 *
 *   node_modules/.bin/node benchmarks/long-dockerfile.ts      (after `npm run build`)
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const RUNS = Number(process.env.RUNS ?? 5);
const TARGET_MS = 2_000;

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-long-"));

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Wall and CPU (user + system) times of `tbuild debug graph` of `dockerfile`, each run with a new
 * empty store. The CPU time, from GNU time, is what a loaded machine does not inflate.
 */
function graphTimes(name: string, dockerfile: string): { wall: number[]; cpu: number[] } {
  const context = join(work, name);
  mkdirSync(context);
  writeFileSync(join(context, "Dockerfile"), dockerfile);
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const store = join(work, `store-${name}-${run}`);
    const start = process.hrtime.bigint();
    const result = spawnSync("/usr/bin/time", ["-f", "cpu %U %S", tbuild, "debug", "graph", context], {
      env: { ...process.env, TBUILD_ROOT: store, TBUILD_CONFIG: "/dev/null" },
      stdio: ["ignore", "ignore", "pipe"],
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    wall.push(Number(process.hrtime.bigint() - start) / 1e6);
    if (result.status !== 0) throw new Error(`tbuild debug graph failed: ${result.stderr.slice(-2000)}`);
    const [, user, system] = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(result.stderr) ?? [];
    cpu.push((Number(user) + Number(system)) * 1000);
    rmSync(store, { recursive: true, force: true });
  }
  return { wall, cpu };
}

function report(what: string, times: { wall: number[]; cpu: number[] }): number {
  const wall = median(times.wall);
  console.log(`tbuild debug graph, ${what}: wall (ms) ${times.wall.map((t) => t.toFixed(0)).join(" ")}`);
  console.log(`  median wall ${wall.toFixed(0)} ms, median CPU ${median(times.cpu).toFixed(0)} ms`);
  return wall;
}

try {
  const env = ["FROM scratch"];
  for (let i = 0; i < 100_000; i++) env.push(`ENV VARIABLE_${i}=value-${i}`);
  const run = ["FROM scratch"];
  for (let i = 0; i < 10_000; i++) run.push(`RUN echo ${i} > /step`);

  const envWall = report("100,000 ENV lines", graphTimes("env", `${env.join("\n")}\n`));
  console.log(`  ${envWall < TARGET_MS ? "under" : "OVER"} the ${TARGET_MS} ms target (wall)`);
  report("10,000 RUN lines", graphTimes("run", `${run.join("\n")}\n`));
} finally {
  rmSync(work, { recursive: true, force: true });
}
