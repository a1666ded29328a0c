/**
 * How fast and how lean `tbuild pull` is, beside `skopeo copy`, on a Debian minbase image (~170 MB
 * of files) from a loopback registry. Makes the root filesystem once with `mmdebstrap` (cached in
 * /var/tmp), imports it with `tbuild import`, pushes it to a fresh `docker-registry`, then pulls it
 * alternately with `tbuild pull` into an empty store and with `skopeo copy docker://… oci:DIR` into
 * an empty layout, RUNS times each, and prints the median wall times, their ratio and tbuild's peak
 * RSS. Targets: ratio ≤ 1.3, peak RSS < 150 MB.
 *
 *   node_modules/.bin/node benchmarks/pull.ts      (after `npm run build`; needs root for mmdebstrap)
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const RUNS = 5;
const RATIO_TARGET = 1.3;
const RSS_TARGET_MB = 150;
const CACHE = "/var/tmp/tbuild-bench";
const ROOTFS = join(CACHE, "minbase-bookworm");

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-pull-"));

function makeRootfs(): void {
  if (existsSync(ROOTFS)) return;
  console.log(`making ${ROOTFS} with mmdebstrap (once; later runs reuse it)`);
  mkdirSync(CACHE, { recursive: true });
  const partial = `${ROOTFS}.partial`;
  rmSync(partial, { recursive: true, force: true });
  execFileSync("mmdebstrap", ["--variant=minbase", "bookworm", partial], { stdio: "inherit" });
  renameSync(partial, ROOTFS);
}

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as net.AddressInfo;
      server.close(() => resolve(address.port));
    });
  });
}

async function startRegistry(): Promise<{ host: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const config = join(work, "registry.yml");
  writeFileSync(
    config,
    `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(work, "registry")}
http:
  addr: 127.0.0.1:${port}
`,
  );
  const child = spawn("docker-registry", ["serve", config], { stdio: "ignore" });
  for (let i = 0; i < 200; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.destroy();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host: `127.0.0.1:${port}`,
    stop: async () => {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}): void {
  const result = spawnSync(command, args, { env: { ...process.env, ...env }, encoding: "utf8" });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} failed (${result.status}): ${result.stderr}`);
  }
}

/** Runs a command to completion: its wall time, and its peak RSS from /proc (VmHWM), sampled. */
async function measure(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ ms: number; peakKb: number }> {
  const started = performance.now();
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  let peakKb = 0;
  const sample = () => {
    try {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
      if (hwm) peakKb = Math.max(peakKb, Number(hwm[1]));
    } catch {
      // The process has just exited.
    }
  };
  const timer = setInterval(sample, 5);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearInterval(timer);
  const ms = performance.now() - started;
  if (code !== 0) throw new Error(`${command} ${args.join(" ")} failed (${code}): ${stderr}`);
  return { ms, peakKb };
}

/** `/usr/bin/time -f %M` when installed: the kernel's own peak RSS figure for the whole run. */
function timeAvailable(): boolean {
  return existsSync("/usr/bin/time");
}

async function measureTbuild(
  name: string,
  root: string,
  config: string,
): Promise<{ ms: number; peakKb: number }> {
  const env = { TBUILD_ROOT: root, TBUILD_CONFIG: config };
  if (!timeAvailable()) return await measure(tbuild, ["pull", name], env);
  const report = join(work, "time.txt");
  // bin/tbuild execs node, so /usr/bin/time's figure is node's own.
  const measured = await measure("/usr/bin/time", ["-f", "%M", "-o", report, tbuild, "pull", name], env);
  return { ms: measured.ms, peakKb: Number(readFileSync(report, "utf8").trim().split("\n").at(-1)) };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

async function main(): Promise<void> {
  makeRootfs();
  const registry = await startRegistry();
  try {
    const config = join(work, "config.toml");
    writeFileSync(config, "");
    const sourceRoot = join(work, "source-store");
    const name = `${registry.host}/bench/debian:minbase`;
    console.log("importing the root filesystem and pushing it");
    run(tbuild, ["import", ROOTFS, name], { TBUILD_ROOT: sourceRoot, TBUILD_CONFIG: config });
    run(tbuild, ["push", name], { TBUILD_ROOT: sourceRoot, TBUILD_CONFIG: config });
    const manifest = JSON.parse(
      execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${name}`], {
        encoding: "utf8",
      }),
    ) as { layers: { size: number }[] };
    const compressed = manifest.layers.reduce((sum, l) => sum + l.size, 0);
    console.log(`image: ${manifest.layers.length} layer(s), ${(compressed / 1e6).toFixed(1)} MB compressed`);

    const tbuildMs: number[] = [];
    const skopeoMs: number[] = [];
    const peaks: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const root = join(work, `pull-${i}`);
      const tb = await measureTbuild(name, root, config);
      tbuildMs.push(tb.ms);
      peaks.push(tb.peakKb);
      rmSync(root, { recursive: true, force: true });

      const layout = join(work, `skopeo-${i}`);
      const sk = await measure(
        "skopeo",
        ["copy", "--quiet", "--src-tls-verify=false", `docker://${name}`, `oci:${layout}:minbase`],
        {},
      );
      skopeoMs.push(sk.ms);
      rmSync(layout, { recursive: true, force: true });
      console.log(
        `run ${i + 1}: tbuild ${tb.ms.toFixed(0)} ms (${(tb.peakKb / 1024).toFixed(0)} MB), skopeo ${sk.ms.toFixed(0)} ms`,
      );
    }
    const ratio = median(tbuildMs) / median(skopeoMs);
    const peakMb = Math.max(...peaks) / 1024;
    console.log(`tbuild pull  median ${median(tbuildMs).toFixed(0)} ms`);
    console.log(`skopeo copy  median ${median(skopeoMs).toFixed(0)} ms`);
    console.log(`ratio        ${ratio.toFixed(2)} (target ≤ ${RATIO_TARGET})`);
    console.log(`tbuild peak RSS ${peakMb.toFixed(0)} MB (target < ${RSS_TARGET_MB} MB)`);
    if (ratio > RATIO_TARGET || peakMb >= RSS_TARGET_MB) process.exitCode = 1;
  } finally {
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
