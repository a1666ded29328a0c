/**
 * The CI smoke-test loop's container commands, tbuild beside podman on the same busybox image
 * (made as benchmarks/container-run.ts makes it, given to podman through `tbuild save --format
 * docker | podman load`), runs alternating, medians and ratios printed:
 * - start and stop: `tbuild run -d IMAGE sleep 1000` + `tbuild stop -t 0 NAME` against `podman run
 *   -d` + `podman stop -t 0` (each pair's container removed after, untimed). Target ≤ 1.0.
 * - `tbuild exec NAME true` against `podman exec NAME true`, on a running container. Target ≤ 1.0.
 * As root (podman's rootful mode is the peer), then tbuild rootless for information.
 *
 *   node_modules/.bin/node benchmarks/container-detached.ts   (after `npm run build`; as root)
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, makeBusyboxRootfs } from "./lib/busybox.ts";
import { median, PODMAN_RUN_OPTIONS, podmanGlobal, timed } from "./lib/podman.ts";

const RUNS = Number(process.env.RUNS ?? 11);
const WARMUP = 2;
const IMAGE = "docker.io/library/busybox:latest";
const ROOTLESS_USER = "tbuild-test";

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-detached-"));
const store = join(work, "store");
const podmanRoot = join(work, "podman");
const podman = podmanGlobal(podmanRoot);

function summary(label: string, values: number[]): string {
  return `${label}   median ${median(values).toFixed(0)} ms (min ${Math.min(...values).toFixed(0)}, max ${Math.max(...values).toFixed(0)})`;
}

/** A tool's commands: `run -d` + `stop -t 0` timed, `rm` untimed; `exec` timed. */
interface Peer {
  startStop(name: string): number;
  exec(name: string): number;
  startForExec(name: string): void;
  remove(name: string): void;
}

function tbuildPeer(command: string, prefix: string[], env: NodeJS.ProcessEnv): Peer {
  const args = (rest: string[]) => [...prefix, ...rest];
  return {
    startStop: (name) =>
      timed(command, args(["run", "-d", "--name", name, IMAGE, "sleep", "1000"]), env) +
      timed(command, args(["stop", "-t", "0", name]), env),
    exec: (name) => timed(command, args(["exec", name, "true"]), env),
    startForExec: (name) =>
      void timed(command, args(["run", "-d", "--name", name, IMAGE, "sleep", "1000"]), env),
    remove: (name) => void spawnSync(command, args(["rm", "-f", name]), { env, stdio: "ignore" }),
  };
}

const podmanPeer: Peer = {
  startStop: (name) =>
    timed(
      "podman",
      [...podman, "run", "-d", "--name", name, ...PODMAN_RUN_OPTIONS, IMAGE, "sleep", "1000"],
      process.env,
    ) + timed("podman", [...podman, "stop", "-t", "0", name], process.env),
  exec: (name) => timed("podman", [...podman, "exec", name, "true"], process.env),
  startForExec: (name) =>
    void timed(
      "podman",
      [...podman, "run", "-d", "--name", name, ...PODMAN_RUN_OPTIONS, IMAGE, "sleep", "1000"],
      process.env,
    ),
  remove: (name) => void spawnSync("podman", [...podman, "rm", "-f", "-t", "0", name], { stdio: "ignore" }),
};

function measure(peers: Record<string, Peer>): Record<string, { startStop: number[]; exec: number[] }> {
  const times = Object.fromEntries(
    Object.keys(peers).map((k) => [k, { startStop: [] as number[], exec: [] as number[] }]),
  );
  for (let i = 0; i < WARMUP + RUNS; i++) {
    for (const [key, peer] of Object.entries(peers)) {
      const ms = peer.startStop(`bench-${i}`);
      peer.remove(`bench-${i}`);
      if (i >= WARMUP) times[key]!.startStop.push(ms);
    }
  }
  for (const peer of Object.values(peers)) peer.startForExec("bench-exec");
  try {
    for (let i = 0; i < WARMUP + RUNS; i++) {
      for (const [key, peer] of Object.entries(peers)) {
        const ms = peer.exec("bench-exec");
        if (i >= WARMUP) times[key]!.exec.push(ms);
      }
    }
  } finally {
    for (const peer of Object.values(peers)) peer.remove("bench-exec");
  }
  return times;
}

try {
  if (process.getuid?.() !== 0)
    throw new Error("run this benchmark as root (podman's rootful mode is the peer)");
  const rootfs = join(work, "rootfs");
  makeBusyboxRootfs(rootfs);
  const tbuildEnv = { ...process.env, TBUILD_ROOT: store };
  check(spawnSync(tbuild, ["import", rootfs, "busybox"], { env: tbuildEnv }), "tbuild import");
  const archive = join(work, "busybox-docker.tar");
  check(
    spawnSync(tbuild, ["save", "--format", "docker", "-o", archive, "busybox"], { env: tbuildEnv }),
    "tbuild save",
  );
  check(spawnSync("podman", [...podman, "load", "-i", archive]), "podman load");

  const peers: Record<string, Peer> = { tbuild: tbuildPeer(tbuild, [], tbuildEnv), podman: podmanPeer };
  let rootless: Peer | undefined;
  if (spawnSync("id", [ROOTLESS_USER]).status === 0) {
    const dir = join(work, "rootless");
    mkdirSync(dir);
    spawnSync("chown", [ROOTLESS_USER, dir]);
    chmodSync(work, 0o755);
    chmodSync(archive, 0o644);
    const prefix = ["-u", ROOTLESS_USER, "--", "env", `TBUILD_ROOT=${join(dir, "store")}`, tbuild];
    check(spawnSync("runuser", [...prefix, "load", "-i", archive]), "rootless tbuild load");
    rootless = tbuildPeer("runuser", prefix, process.env);
    peers["tbuild rootless"] = rootless;
  }
  const times = measure(peers);
  console.log(`runs: ${RUNS} each, alternating, after ${WARMUP} warm-up runs each`);
  for (const [key, t] of Object.entries(times)) {
    console.log(summary(`${key}: run -d + stop -t 0`.padEnd(40), t.startStop));
    console.log(summary(`${key}: exec NAME true`.padEnd(40), t.exec));
  }
  const startStop = median(times.tbuild!.startStop) / median(times.podman!.startStop);
  const exec = median(times.tbuild!.exec) / median(times.podman!.exec);
  console.log(
    `ratio tbuild/podman, run -d + stop: ${startStop.toFixed(2)} (target ≤ 1.00: ${startStop <= 1 ? "met" : "NOT met"})`,
  );
  console.log(
    `ratio tbuild/podman, exec:          ${exec.toFixed(2)} (target ≤ 1.00: ${exec <= 1 ? "met" : "NOT met"})`,
  );
  if (rootless) {
    const r = times["tbuild rootless"]!;
    console.log(
      `rootless tbuild / rootful podman (for information): run -d + stop ${(median(r.startStop) / median(times.podman!.startStop)).toFixed(2)}, exec ${(median(r.exec) / median(times.podman!.exec)).toFixed(2)}`,
    );
  }
  process.exitCode = startStop <= 1 && exec <= 1 ? 0 : 1;
} finally {
  spawnSync("podman", [...podman, "system", "reset", "--force"], { stdio: "ignore" });
  rmSync(work, { recursive: true, force: true });
}
