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
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, makeBusyboxRootfs } from "./lib/busybox.ts";

const RUNS = Number(process.env.RUNS ?? 3);
const PROJECT_FILES = 2000;
/** The project's "dependency install": a step of its own, after copying only the manifest. */
const INSTALL = "cp requirements.txt /installed.txt";

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-build-"));

/**
 * A run, timed. The disk is synced first (untimed): runs alternate, and on ext4 a tool's first
 * fsync would otherwise wait for the data the other tool's run left to write back.
 */
function timed(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): number {
  return timedWithOutput(command, args, env).ms;
}

/** The same, with what the command wrote to stderr (tbuild's progress). */
function timedWithOutput(command: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  spawnSync("sync");
  const start = process.hrtime.bigint();
  const result = spawnSync(command, args, { env, stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  check(result, `${command} ${args.join(" ")}`);
  return { ms, stderr: result.stderr };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

async function startRegistry(dir: string) {
  const port = await freePort();
  mkdirSync(dir, { recursive: true });
  const config = join(dir, "config.yml");
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "data")}\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: ${randomBytes(16).toString("hex")}\n`,
  );
  const child = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/v2/`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { port, stop: () => child.kill() };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill();
  throw new Error("docker-registry did not start");
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

class Tbuild {
  private n = 0;
  private root = "";
  private readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
    this.fresh();
  }
  fresh(): void {
    if (this.root) rmSync(this.root, { recursive: true, force: true });
    this.root = join(this.dir, `s${this.n++}`);
  }
  /** Steps that ran in the last build (by their Dockerfile text), from its plain progress. */
  lastRan: string[] = [];
  build(context: string, tag: string): number {
    const { ms, stderr } = timedWithOutput(tbuild, ["build", "--progress=plain", "-t", tag, context], {
      ...process.env,
      TBUILD_ROOT: this.root,
    });
    const names = new Map<string, string>();
    this.lastRan = [];
    for (const line of stderr.split("\n")) {
      const named = /^#(\d+) \[(?!internal\])[^\]]+\] (.*)$/.exec(line);
      if (named) names.set(named[1]!, named[2]!);
      const done = /^#(\d+) DONE/.exec(line);
      const name = done ? names.get(done[1]!) : undefined;
      if (name !== undefined) this.lastRan.push(name);
    }
    return ms;
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
  const base = `127.0.0.1:${registry.port}/bench/busybox:latest`;
  const seedStore = join(work, "seed");
  const rootfs = join(work, "rootfs");
  makeBusyboxRootfs(rootfs);
  const seedEnv = { ...process.env, TBUILD_ROOT: seedStore };
  check(
    spawnSync(tbuild, ["import", rootfs, base, "--change", 'CMD ["sh"]'], { env: seedEnv }),
    "tbuild import",
  );
  check(spawnSync(tbuild, ["push", base], { env: seedEnv }), "tbuild push");
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
  for (let i = 0; i < PROJECT_FILES; i++) {
    const dir = join(project, "src", `module${Math.floor(i / 50)}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, `file${i % 50}.c`),
      `/* file ${i} */\nint f${i}(void) { return ${i}; }\n${"//".repeat(200)}\n`,
    );
  }
  // The dependency-first shape of Docker's tutorials: the manifest, the install, then the sources.
  writeFileSync(join(project, "requirements.txt"), "flask==3.0.0\nrequests==2.31.0\n");
  writeFileSync(
    join(project, "Dockerfile"),
    `FROM ${base}\nWORKDIR /app\nCOPY requirements.txt .\nRUN ${INSTALL}\nCOPY . .\nRUN find /app -type f | wc -l > /count && cat /app/src/module0/file0.c > /first\n`,
  );
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
  const edited = join(project, "src", "module0", "file0.c");
  let installCached = true;
  for (let i = 0; i < RUNS; i++) {
    writeFileSync(edited, `/* edit ${i} */\nint f0(void) { return ${i}; }\n`);
    changedT.push(t.build(project, "bench/project:latest"));
    if (t.lastRan.includes(INSTALL)) installCached = false;
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
