/**
 * `tbuild build` beside Debian's buildah 1.28 (`buildah bud --isolation chroot --layers`), on the
 * same Dockerfiles and the same busybox base image (Debian's busybox-static, imported with
 * `tbuild import`) served by a loopback `docker-registry`, which both pull from. Runs alternate,
 * RUNS of each per case; medians and ratios are printed against the targets of issues 5 and 12:
 *
 *   (a) cold build (empty stores) of a Dockerfile with two independent ~3 s stages: ≤ 0.6× buildah
 *   (b) fully cached rebuild of a ~2,000-file project: ≤ 0.25×
 *   (c) rebuild after one source file of that project changed: ≤ 0.5×, its install step cached
 *
 * The project has the dependency-first shape of Docker's tutorials (WORKDIR, COPY the manifest,
 * an install step, COPY . ., a build step), so (c) also checks that editing a source keeps the
 * install step cached.
 *
 * buildah uses a throwaway --root/--runroot with the overlay driver (vfs when overlay does not
 * mount), as root; tbuild a throwaway TBUILD_ROOT. Each run starts on a synced disk.
 *
 *   node_modules/.bin/node benchmarks/build.ts   (after `npm run build`; as root)
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  INSTALL,
  median,
  pushBusyboxBase,
  startRegistry,
  Tbuild,
  timedWithOutput,
  writeDependencyFirstProject,
} from "./lib/build-bench.ts";

const RUNS = Number(process.env.RUNS ?? 3);
const PROJECT_FILES = 2000;

const work = mkdtempSync(join(tmpdir(), "tbuild-bench-build-"));

/** A run, timed (on a synced disk). */
function timed(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): number {
  return timedWithOutput(command, args, env).ms;
}

/** Each tool in its own throwaway storage; `fresh()` empties it (for cold builds). */
class Buildah {
  private n = 0;
  private root = "";
  private readonly dir: string;
  private readonly driver: string;
  constructor(dir: string, driver: string) {
    this.dir = dir;
    this.driver = driver;
    this.fresh();
  }
  fresh(): void {
    this.cleanup();
    this.root = join(this.dir, `s${this.n++}`);
  }
  private global(): string[] {
    return [
      "--root",
      join(this.root, "root"),
      "--runroot",
      join(this.root, "run"),
      "--storage-driver",
      this.driver,
    ];
  }
  build(context: string, tag: string): number {
    return timed("buildah", [
      ...this.global(),
      "bud",
      "--isolation",
      "chroot",
      "--layers",
      "--tls-verify=false",
      "-t",
      tag,
      context,
    ]);
  }
  cleanup(): void {
    if (!this.root) return;
    // overlay leaves its merged mounts behind; they go before the directory does.
    const mounts = readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .map((line) => line.split(" ")[1] ?? "")
      .filter((mount) => mount.startsWith(this.root))
      .sort((a, b) => b.length - a.length);
    for (const mount of mounts) spawnSync("umount", ["-l", mount]);
    rmSync(this.root, { recursive: true, force: true });
  }
}

function overlayWorks(dir: string): boolean {
  const probe = new Buildah(join(dir, "probe"), "overlay");
  const context = join(dir, "probe-ctx");
  mkdirSync(context, { recursive: true });
  writeFileSync(join(context, "Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n");
  try {
    probe.build(context, "probe");
    return true;
  } catch {
    return false;
  } finally {
    probe.cleanup();
  }
}

function report(name: string, target: number, t: number[], b: number[]): boolean {
  const tm = median(t);
  const bm = median(b);
  const ratio = tm / bm;
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  console.log(`${name}`);
  console.log(`  tbuild  median ${tm.toFixed(0)} ms  (runs: ${fmt(t)})`);
  console.log(`  buildah median ${bm.toFixed(0)} ms  (runs: ${fmt(b)})`);
  console.log(`  ratio ${ratio.toFixed(2)}× (target ≤ ${target}×: ${ratio <= target ? "met" : "NOT met"})`);
  return ratio <= target;
}

const registryDir = join(work, "registry");
let registry: { port: number; stop: () => void } | undefined;
const buildahs: Buildah[] = [];
try {
  if (process.getuid?.() !== 0)
    throw new Error("run this benchmark as root (buildah's rootful chroot isolation is the peer)");
  const driver = overlayWorks(work) ? "overlay" : "vfs";
  registry = await startRegistry(registryDir);
  const base = pushBusyboxBase(work, registry.port);
  console.log(
    `buildah ${execFileSync("buildah", ["--version"], { encoding: "utf8" }).trim()}, storage driver ${driver}`,
  );
  console.log(`base image ${base}; ${RUNS} alternating runs per case\n`);

  // (a) cold: two independent ~3 s stages, every run from empty stores (the base is pulled too).
  const cold = join(work, "cold");
  mkdirSync(cold);
  writeFileSync(
    join(cold, "Dockerfile"),
    `FROM ${base} AS one\nRUN sleep 3 && echo one > /one\n\nFROM ${base} AS two\nRUN sleep 3 && echo two > /two\n\nFROM one\nCOPY --from=two /two /two\n`,
  );
  const coldT: number[] = [];
  const coldB: number[] = [];
  const t = new Tbuild(join(work, "tbuild"));
  const b = new Buildah(join(work, "buildah"), driver);
  buildahs.push(b);
  for (let i = 0; i < RUNS; i++) {
    t.fresh();
    b.fresh();
    coldT.push(t.build(cold, "bench/cold:latest"));
    coldB.push(b.build(cold, "bench/cold:latest"));
  }

  // (b) and (c): a project of PROJECT_FILES source files, copied whole and then read by a RUN.
  const project = join(work, "project");
  const edited = writeDependencyFirstProject(project, base, PROJECT_FILES);
  t.fresh();
  b.fresh();
  t.build(project, "bench/project:latest");
  b.build(project, "bench/project:latest");
  const cachedT: number[] = [];
  const cachedB: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    cachedT.push(t.build(project, "bench/project:latest"));
    cachedB.push(b.build(project, "bench/project:latest"));
  }
  const changedT: number[] = [];
  const changedB: number[] = [];
  let installCached = true;
  for (let i = 0; i < RUNS; i++) {
    writeFileSync(edited, `/* edit ${i} */\nint f0(void) { return ${i}; }\n`);
    changedT.push(t.build(project, "bench/project:latest"));
    if (t.lastRan.includes(`RUN ${INSTALL}`)) installCached = false;
    changedB.push(b.build(project, "bench/project:latest"));
  }
  console.log(
    `(c) tbuild kept the install step (RUN ${INSTALL}) cached in every run: ${installCached ? "yes" : "NO"}`,
  );

  const met = [
    report("(a) cold build, two independent 3 s stages", 0.6, coldT, coldB),
    report(`(b) fully cached rebuild, ${PROJECT_FILES}-file project`, 0.25, cachedT, cachedB),
    report(
      `(c) rebuild after one source file changed, ${PROJECT_FILES}-file project`,
      0.5,
      changedT,
      changedB,
    ),
  ];
  process.exitCode = met.every(Boolean) && installCached ? 0 : 1;
} finally {
  registry?.stop();
  for (const b of buildahs) b.cleanup();
  rmSync(work, { recursive: true, force: true });
}
