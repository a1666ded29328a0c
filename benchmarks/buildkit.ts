/**
 * `tbuild build` beside BuildKit, the oracle of issue 19: the BuildKit 0.8 embedded in Debian's
 * Docker 20.10 (`docker.io`), a private dockerd on its own socket and data root
 * (test/oracle/buildkit.ts), driven by Debian's `/usr/bin/docker` client with `DOCKER_BUILDKIT=1`
 * and `--network host`. Both pull the same busybox base (Debian's busybox-static, imported with
 * `tbuild import`) from one loopback `docker-registry` (Docker speaks plain HTTP to 127.0.0.0/8).
 *
 * What is timed, on each side: the whole client process, start to exit, on a synced disk:
 * `tbuild build --progress=plain ...` against `docker build --network host --progress plain ...`
 * (the daemon is warm: started once, before everything). Outputs are the same kind on both sides:
 * cases 1–4 and 6 load the image into the tool's own store (`-t TAG`: tbuild's image store,
 * dockerd's image store through BuildKit's moby exporter); case 5 writes the root filesystem as a
 * tar file (`-o type=tar,dest=FILE`; Docker 20.10's BuildKit has no `type=oci` exporter). Each case
 * runs one untimed warm-up of each side, then RUNS runs alternating tbuild, BuildKit, tbuild, …;
 * medians and the ratio tbuild/BuildKit are printed beside the targets of issue 19:
 *
 *   1. cold build of two independent ~3 s stages: an empty tbuild store; for BuildKit
 *      `docker builder prune -af` and the base and built images removed (untimed): ≤ 1.0×
 *   2. fully cached rebuild of a 2,000-file project in the dependency-first shape: ≤ 0.25×
 *   3. rebuild after one source file of it changed, its install step cached: ≤ 0.6×
 *   4. `COPY` of 10,000 small files, timed as a `--no-cache` build (base and context warm): ≤ 1.0×
 *   5. export of a 1 GiB layer (`RUN head -c 1073741824 /dev/urandom`): the warm-up builds it, the
 *      timed runs are cached builds that only export it to a tar: ≤ 1.0×, tbuild's peak RSS (GNU
 *      time's %M, the largest process it waited for) ≤ 250 MB
 *   6. a 100-step Dockerfile, cold: each step reports to a stamp server on the host (busybox wget
 *      over the host network) as it runs; a step's time is the time from the report of the step
 *      before to its own. The median of steps 2–11 against 91–100 says whether it stays flat (the
 *      warm-up is a 10-step build).
 *
 *   node_modules/.bin/node benchmarks/buildkit.ts            (after `npm run build`; as root)
 *   RUNS=5 CASES=2,3 node_modules/.bin/node benchmarks/buildkit.ts
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { type BuildKitOracle, startBuildKit } from "../test/oracle/buildkit.ts";
import {
  INSTALL,
  median,
  pushBusyboxBase,
  startRegistry,
  syncDisk,
  Tbuild,
  writeDependencyFirstProject,
} from "./lib/build-bench.ts";

const RUNS = Number(process.env.RUNS ?? 3);
const CASES = new Set((process.env.CASES ?? "1,2,3,4,5,6").split(",").map(Number));
const PROJECT_FILES = 2000;
const SMALL_FILES = 10_000;
const LAYER_BYTES = 1 << 30;
const RSS_TARGET_MB = 250;
const DEEP_STEPS = 100;
const WARMUP_STEPS = 10;
const WINDOW = 10;

const work = mkdtempSync(join(tmpdir(), "tbuild-bench-buildkit-"));

/** BuildKit through Debian's docker client, timed as tbuild is: the client process, on a synced disk. */
class BuildKit {
  private readonly oracle: BuildKitOracle;
  constructor(oracle: BuildKitOracle) {
    this.oracle = oracle;
  }
  /** The last build's plain progress. */
  lastOutput = "";
  /** `docker build --network host --progress plain [-t TAG] [FLAGS] CONTEXT`, timed. */
  build(context: string, tag: string | undefined, flags: string[] = []): number {
    const tagArgs = tag === undefined ? [] : ["-t", tag];
    const args = ["build", "--network", "host", "--progress", "plain", ...tagArgs, ...flags, context];
    syncDisk();
    const start = process.hrtime.bigint();
    const result = this.oracle.docker(args);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    if (result.status !== 0)
      throw new Error(`docker ${args.join(" ")} failed: ${result.stderr.slice(-4000)}`);
    this.lastOutput = result.stderr;
    return ms;
  }
  /** Forgets every build result and removes `images` (the base included), untimed: a cold start. */
  forget(images: string[]): void {
    const prune = this.oracle.docker(["builder", "prune", "-af"]);
    if (prune.status !== 0) throw new Error(`docker builder prune -af failed: ${prune.stderr}`);
    this.oracle.docker(["image", "rm", "-f", ...images]);
  }
  /** Whether the last build reported the step whose Dockerfile text is `step` as CACHED. */
  cached(step: string): boolean {
    const ids = this.stepIds(step);
    return ids.length > 0 && ids.every((id) => new RegExp(`^#${id} CACHED$`, "m").test(this.lastOutput));
  }
  /** Whether the last build ran the step whose Dockerfile text is `step` (reported it, not as CACHED). */
  ran(step: string): boolean {
    const ids = this.stepIds(step);
    return ids.length > 0 && !ids.some((id) => new RegExp(`^#${id} CACHED$`, "m").test(this.lastOutput));
  }
  private stepIds(step: string): string[] {
    return [...this.lastOutput.matchAll(/^#(\d+) \[[^\]]+\] (.*)$/gm)]
      .filter((m) => m[2] === step)
      .map((m) => m[1]!);
  }
  serverVersion(): string {
    return this.oracle.docker(["version", "--format", "{{.Server.Version}}"]).stdout.trim();
  }
}

/**
 * One untimed warm-up of `pair` (run -1), then RUNS timed ones; `pair` runs tbuild, then BuildKit,
 * and returns their times.
 */
function alternate(pair: (run: number) => [number, number]): { t: number[]; b: number[] } {
  const t: number[] = [];
  const b: number[] = [];
  pair(-1);
  for (let run = 0; run < RUNS; run++) {
    const [tms, bms] = pair(run);
    t.push(tms);
    b.push(bms);
  }
  return { t, b };
}

function report(name: string, target: number, { t, b }: { t: number[]; b: number[] }): boolean {
  const tm = median(t);
  const bm = median(b);
  const ratio = tm / bm;
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  console.log(name);
  console.log(`  tbuild   median ${tm.toFixed(0)} ms  (runs: ${fmt(t)})`);
  console.log(`  BuildKit median ${bm.toFixed(0)} ms  (runs: ${fmt(b)})`);
  console.log(`  ratio ${ratio.toFixed(2)}× (target ≤ ${target}×: ${ratio <= target ? "met" : "NOT met"})`);
  return ratio <= target;
}

function context(name: string, dockerfile: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "Dockerfile"), dockerfile);
  return dir;
}

/** 1: two independent ~3 s stages, from nothing: tbuild's store empty, BuildKit's pruned. */
function coldTwoStages(base: string, bk: BuildKit): boolean {
  const dir = context(
    "cold",
    `FROM ${base} AS one\nRUN sleep 3 && echo one > /one\n\nFROM ${base} AS two\nRUN sleep 3 && echo two > /two\n\nFROM one\nCOPY --from=two /two /two\n`,
  );
  const tag = "bench/cold:latest";
  const t = new Tbuild(join(work, "tbuild-cold"));
  const times = alternate(() => {
    t.fresh();
    const tms = t.build(dir, tag);
    bk.forget([base, tag]);
    return [tms, bk.build(dir, tag)];
  });
  return report("1. cold build, two independent 3 s stages", 1.0, times);
}

/** The 2,000-file project, built once by each side (untimed), for cases 2 and 3. */
function builtProject(base: string, bk: BuildKit) {
  const dir = join(work, "project");
  const edited = writeDependencyFirstProject(dir, base, PROJECT_FILES);
  const tag = "bench/project:latest";
  const t = new Tbuild(join(work, "tbuild-project"));
  t.build(dir, tag);
  bk.build(dir, tag);
  return { dir, edited, tag, t };
}

/** 2: nothing changed since the last build. */
function cachedRebuild(project: ReturnType<typeof builtProject>, bk: BuildKit): boolean {
  const { dir, tag, t } = project;
  const times = alternate(() => {
    const tms = t.build(dir, tag);
    if (t.lastRan.length > 0) throw new Error(`tbuild ran ${t.lastRan.join("; ")} in a cached rebuild`);
    const bms = bk.build(dir, tag);
    if (!bk.cached(`RUN ${INSTALL}`)) throw new Error("BuildKit ran the install step in a cached rebuild");
    return [tms, bms];
  });
  return report(`2. fully cached rebuild, ${PROJECT_FILES}-file project`, 0.25, times);
}

/** 3: one source changed (the same edit for both sides); the install step must stay cached. */
function oneFileChanged(project: ReturnType<typeof builtProject>, bk: BuildKit): boolean {
  const { dir, edited, tag, t } = project;
  let tbuildKeptInstall = true;
  let buildkitKeptInstall = true;
  const times = alternate((run) => {
    writeFileSync(edited, `/* edit ${run} */\nint f0(void) { return ${run}; }\n`);
    const tms = t.build(dir, tag);
    if (t.lastRan.includes(`RUN ${INSTALL}`)) tbuildKeptInstall = false;
    const bms = bk.build(dir, tag);
    if (!bk.cached(`RUN ${INSTALL}`)) buildkitKeptInstall = false;
    return [tms, bms];
  });
  console.log(
    `3. the install step (RUN ${INSTALL}) stayed cached in every run: tbuild ${tbuildKeptInstall ? "yes" : "NO"}, BuildKit ${buildkitKeptInstall ? "yes" : "NO"}`,
  );
  return (
    report(`3. rebuild after one source file changed, ${PROJECT_FILES}-file project`, 0.6, times) &&
    tbuildKeptInstall
  );
}

/** 4: `COPY` of 10,000 small files, every run a `--no-cache` build with the context unchanged. */
function copySmallFiles(base: string, bk: BuildKit): boolean {
  const dir = context("small-files", `FROM ${base}\nCOPY files /files\n`);
  for (let i = 0; i < SMALL_FILES; i++) {
    const sub = join(dir, "files", `d${Math.floor(i / 100)}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, `f${i}.txt`), `small file ${i}\n`);
  }
  const tag = "bench/small-files:latest";
  const t = new Tbuild(join(work, "tbuild-small-files"));
  const copy = "COPY files /files";
  const times = alternate(() => {
    const tms = t.build(dir, tag, { flags: ["--no-cache"] });
    if (!t.lastRan.includes(copy)) throw new Error(`tbuild did not run ${copy} with --no-cache`);
    const bms = bk.build(dir, tag, ["--no-cache"]);
    if (!bk.ran(copy)) throw new Error(`BuildKit did not run ${copy} with --no-cache`);
    return [tms, bms];
  });
  return report(`4. COPY of ${SMALL_FILES} small files (--no-cache build)`, 1.0, times);
}

/**
 * 5: a 1 GiB layer exported as a root filesystem tar. The warm-up runs the RUN; the timed runs
 * find it cached and only export. Each tar is checked for its size, then removed.
 */
function exportLargeLayer(base: string, bk: BuildKit): boolean {
  const write = `RUN head -c ${LAYER_BYTES} /dev/urandom > /layer`;
  const dir = context("large-layer", `FROM ${base}\n${write}\n`);
  const t = new Tbuild(join(work, "tbuild-large-layer"));
  const peaks: number[] = [];
  let coldPeak = 0;
  const exported = (dest: string) => {
    const size = statSync(dest).size;
    rmSync(dest);
    if (size < LAYER_BYTES)
      throw new Error(`${dest} holds ${size} bytes, less than the layer's ${LAYER_BYTES}`);
  };
  const times = alternate((run) => {
    const tDest = join(work, "layer-tbuild.tar");
    const tms = t.build(dir, undefined, { flags: ["-o", `type=tar,dest=${tDest}`], measureRss: true });
    exported(tDest);
    if (run < 0) coldPeak = t.lastPeakRssMb!;
    else peaks.push(t.lastPeakRssMb!);
    if (run >= 0 && t.lastRan.includes(write)) throw new Error("tbuild ran the 1 GiB RUN again");
    const bDest = join(work, "layer-buildkit.tar");
    const bms = bk.build(dir, undefined, ["-o", `type=tar,dest=${bDest}`]);
    exported(bDest);
    if (run >= 0 && !bk.cached(write)) throw new Error("BuildKit ran the 1 GiB RUN again");
    return [tms, bms];
  });
  const peak = Math.max(...peaks);
  const met = report("5. export of a 1 GiB layer, -o type=tar (the RUN cached)", 1.0, times);
  console.log(
    `  tbuild peak RSS ${peak.toFixed(0)} MB exporting (${coldPeak.toFixed(0)} MB in the build that ran the RUN) (target ≤ ${RSS_TARGET_MB} MB: ${peak <= RSS_TARGET_MB ? "met" : "NOT met"})`,
  );
  return met && peak <= RSS_TARGET_MB;
}

/**
 * A loopback HTTP server in a process of its own (the builds run synchronously here) that writes
 * each request's path and the time it arrived, in ms, to `file`.
 */
async function startStampServer(file: string): Promise<{ port: number; stop: () => void }> {
  const script = `
    const file = process.argv[1];
    require("node:http")
      .createServer((req, res) => {
        require("node:fs").appendFileSync(file, req.url + " " + performance.now() + "\\n");
        res.end();
      })
      .listen(0, "127.0.0.1", function () { console.log(this.address().port); });`;
  const child = spawn(process.execPath, ["-e", script, file], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  const [first] = await Promise.race([
    lines[Symbol.asyncIterator]()
      .next()
      .then((line) => [line.value as string | undefined]),
    new Promise<never>((_, reject) =>
      child.once("exit", (code) => reject(new Error(`stamp server exited (${code})`))),
    ),
  ]);
  return { port: Number(first), stop: () => child.kill() };
}

/**
 * 6: a chain of `steps` RUN steps, each writing a file and reporting `/KEY/N` to the stamp server.
 * KEY is new every build, so every step runs. Returns each step's time: from the report of the
 * step before to its own (steps 2 to `steps`).
 */
function deepBuild(
  build: (dir: string) => number,
  base: string,
  name: string,
  steps: number,
  stamps: { file: string; port: number },
): { total: number; stepMs: number[] } {
  const lines = Array.from(
    { length: steps },
    (_, i) =>
      `RUN echo ${i + 1} > /step${i + 1} && wget -q -O /dev/null http://127.0.0.1:${stamps.port}/${name}/${i + 1}`,
  );
  const dir = context(`deep-${name}`, `FROM ${base}\n${lines.join("\n")}\n`);
  const total = build(dir);
  const at = new Map<number, number>();
  for (const line of readFileSync(stamps.file, "utf8").split("\n")) {
    const [path, ms] = line.split(" ");
    const match = path?.match(/^\/([^/]+)\/(\d+)$/);
    if (match?.[1] === name) at.set(Number(match[2]), Number(ms));
  }
  if (at.size !== steps) throw new Error(`${name}: ${at.size} of ${steps} steps reported`);
  const stepMs = Array.from({ length: steps - 1 }, (_, i) => at.get(i + 2)! - at.get(i + 1)!);
  return { total, stepMs };
}

async function hundredSteps(base: string, bk: BuildKit): Promise<boolean> {
  const stamps = join(work, "stamps");
  writeFileSync(stamps, "");
  const server = await startStampServer(stamps);
  try {
    const t = new Tbuild(join(work, "tbuild-deep"));
    const on = { file: stamps, port: server.port };
    const tbuildBuild = (dir: string) => t.build(dir, "bench/deep:latest");
    const buildkitBuild = (dir: string) => bk.build(dir, "bench/deep:latest");
    deepBuild(tbuildBuild, base, "tbuild-warm", WARMUP_STEPS, on);
    deepBuild(buildkitBuild, base, "buildkit-warm", WARMUP_STEPS, on);
    const sides = {
      tbuild: [] as ReturnType<typeof deepBuild>[],
      BuildKit: [] as ReturnType<typeof deepBuild>[],
    };
    for (let run = 0; run < RUNS; run++) {
      sides.tbuild.push(deepBuild(tbuildBuild, base, `tbuild-${run}`, DEEP_STEPS, on));
      sides.BuildKit.push(deepBuild(buildkitBuild, base, `buildkit-${run}`, DEEP_STEPS, on));
    }
    console.log(
      `6. a ${DEEP_STEPS}-step Dockerfile, cold: median step time, steps 2–${WINDOW + 1} against ${DEEP_STEPS - WINDOW + 1}–${DEEP_STEPS}`,
    );
    let tbuildFlat = false;
    for (const [side, runs] of Object.entries(sides)) {
      const first = median(runs.flatMap((r) => r.stepMs.slice(0, WINDOW)));
      const last = median(runs.flatMap((r) => r.stepMs.slice(-WINDOW)));
      const flat = last / first <= 1.25;
      if (side === "tbuild") tbuildFlat = flat;
      console.log(
        `  ${side.padEnd(8)} ${first.toFixed(0)} ms, then ${last.toFixed(0)} ms (${(last / first).toFixed(2)}: ${flat ? "flat" : "NOT flat"}); whole build median ${median(runs.map((r) => r.total)).toFixed(0)} ms (runs: ${runs.map((r) => r.total.toFixed(0)).join(", ")})`,
      );
    }
    const ratio = median(sides.tbuild.map((r) => r.total)) / median(sides.BuildKit.map((r) => r.total));
    console.log(
      `  whole build ratio ${ratio.toFixed(2)}×; tbuild's step time ${tbuildFlat ? "stays flat" : "does NOT stay flat"} (flat: last/first ≤ 1.25)`,
    );
    return tbuildFlat;
  } finally {
    server.stop();
  }
}

let registry: { port: number; stop: () => void } | undefined;
let oracle: BuildKitOracle | undefined;
try {
  if (process.getuid?.() !== 0) throw new Error("run this benchmark as root (it starts a private dockerd)");
  registry = await startRegistry(join(work, "registry"));
  const base = pushBusyboxBase(work, registry.port);
  oracle = await startBuildKit();
  const bk = new BuildKit(oracle);
  console.log(`Docker ${bk.serverVersion()} (its embedded BuildKit), private daemon; base image ${base}`);
  console.log(
    `${RUNS} alternating runs per case after a warm-up; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}\n`,
  );
  const met: boolean[] = [];
  if (CASES.has(1)) met.push(coldTwoStages(base, bk));
  if (CASES.has(2) || CASES.has(3)) {
    const project = builtProject(base, bk);
    if (CASES.has(2)) met.push(cachedRebuild(project, bk));
    if (CASES.has(3)) met.push(oneFileChanged(project, bk));
  }
  if (CASES.has(4)) met.push(copySmallFiles(base, bk));
  if (CASES.has(5)) met.push(exportLargeLayer(base, bk));
  if (CASES.has(6)) met.push(await hundredSteps(base, bk));
  console.log(
    `\nload average at the end ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`,
  );
  process.exitCode = met.every(Boolean) ? 0 : 1;
} finally {
  await oracle?.stop();
  registry?.stop();
  rmSync(work, { recursive: true, force: true });
}
