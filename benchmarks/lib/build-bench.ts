/**
 * What the build benchmarks share (build.ts against buildah, buildkit.ts against BuildKit): a
 * loopback `docker-registry` serving the busybox base both sides pull, the dependency-first project
 * of Docker's tutorials, timed runs on a synced disk, and tbuild in a throwaway store.
 */
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, makeBusyboxRootfs } from "./busybox.ts";

const tbuild = fileURLToPath(new URL("../../bin/tbuild", import.meta.url));

/** The project's "dependency install": a step of its own, after copying only the manifest. */
export const INSTALL = "cp requirements.txt /installed.txt";

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Writes the page cache back, before a timed run: runs alternate, and on ext4 a tool's first fsync
 * would otherwise wait for the data the other tool's run left to write back.
 */
export function syncDisk(): void {
  spawnSync("sync");
}

/** A run, timed on a synced disk, with what it wrote to stderr (tbuild's progress). */
export function timedWithOutput(command: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  syncDisk();
  const start = process.hrtime.bigint();
  const result = spawnSync(command, args, {
    env,
    stdio: ["ignore", "ignore", "pipe"],
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  check(result, `${command} ${args.join(" ")}`);
  return { ms, stderr: result.stderr };
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

/** `docker-registry` on a free loopback port, storing in `dir`, once it answers `/v2/`. */
export async function startRegistry(dir: string): Promise<{ port: number; stop: () => void }> {
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

/**
 * Imports Debian's busybox-static as an image (`CMD ["sh"]`) with `tbuild import` in a store of
 * its own under `work`, and pushes it to the registry on `port`; returns its reference.
 */
export function pushBusyboxBase(work: string, port: number): string {
  const base = `127.0.0.1:${port}/bench/busybox:latest`;
  const rootfs = join(work, "rootfs");
  makeBusyboxRootfs(rootfs);
  const env = { ...process.env, TBUILD_ROOT: join(work, "seed") };
  check(spawnSync(tbuild, ["import", rootfs, base, "--change", 'CMD ["sh"]'], { env }), "tbuild import");
  check(spawnSync(tbuild, ["push", base], { env }), "tbuild push");
  return base;
}

/** `files` small C sources under `dir`/src, 50 to a directory, and a requirements.txt manifest. */
export function writeProjectSources(dir: string, files: number): void {
  for (let i = 0; i < files; i++) {
    const sub = join(dir, "src", `module${Math.floor(i / 50)}`);
    mkdirSync(sub, { recursive: true });
    writeFileSync(
      join(sub, `file${i % 50}.c`),
      `/* file ${i} */\nint f${i}(void) { return ${i}; }\n${"//".repeat(200)}\n`,
    );
  }
  writeFileSync(join(dir, "requirements.txt"), "flask==3.0.0\nrequests==2.31.0\n");
}

/**
 * A project of `files` small C sources in `dir`, in the dependency-first shape of Docker's
 * tutorials: WORKDIR, COPY the manifest, the install step (INSTALL), COPY . ., a build step that
 * reads every source. Returns the path of a source to edit.
 */
export function writeDependencyFirstProject(dir: string, base: string, files: number): string {
  writeProjectSources(dir, files);
  writeFileSync(
    join(dir, "Dockerfile"),
    `FROM ${base}\nWORKDIR /app\nCOPY requirements.txt .\nRUN ${INSTALL}\nCOPY . .\nRUN find /app -type f | wc -l > /count && cat /app/src/module0/file0.c > /first\n`,
  );
  return join(dir, "src", "module0", "file0.c");
}

/** tbuild in a throwaway store under `dir`; `fresh()` starts an empty one (for cold builds). */
export class Tbuild {
  private n = 0;
  private root = "";
  private readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true });
    this.fresh();
  }
  fresh(): void {
    if (this.root) rmSync(this.root, { recursive: true, force: true });
    this.root = join(this.dir, `s${this.n++}`);
  }
  /** Steps that ran in the last build (by their Dockerfile text), from its plain progress. */
  lastRan: string[] = [];
  /** The last build's peak RSS in MB, when it was asked for (`measureRss`). */
  lastPeakRssMb: number | undefined;
  /**
   * `tbuild build --progress=plain [-t TAG] [FLAGS] CONTEXT`, timed. With `measureRss` it runs under
   * GNU time, which reports the largest resident set among the processes it waited for.
   */
  build(
    context: string,
    tag: string | undefined,
    options: { flags?: string[]; measureRss?: boolean } = {},
  ): number {
    const tagArgs = tag === undefined ? [] : ["-t", tag];
    const args = ["build", "--progress=plain", ...tagArgs, ...(options.flags ?? []), context];
    const env = { ...process.env, TBUILD_ROOT: this.root };
    const rssFile = join(this.dir, "peak-rss");
    const { ms, stderr } = options.measureRss
      ? timedWithOutput("/usr/bin/time", ["-o", rssFile, "-f", "%M", tbuild, ...args], env)
      : timedWithOutput(tbuild, args, env);
    this.lastPeakRssMb = options.measureRss ? Number(readFileSync(rssFile, "utf8").trim()) / 1024 : undefined;
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
