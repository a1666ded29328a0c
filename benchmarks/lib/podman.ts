/**
 * podman as the container benchmarks' peer (container-run.ts, container-detached.ts): as this
 * machine needs it (runc, cgroupfs, ulimits within the hard limits), in a throwaway --root with the
 * overlay driver, on the host's network as tbuild's default is; and the timing both use.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { check } from "./busybox.ts";

/** podman's global flags for a throwaway store under `root`. */
export function podmanGlobal(root: string): string[] {
  return [
    "--root",
    join(root, "root"),
    "--runroot",
    join(root, "run"),
    "--storage-driver",
    "overlay",
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "none",
  ];
}

/** `podman run` flags: the host's network, ulimits this machine's hard limits allow. */
export const PODMAN_RUN_OPTIONS = [
  "--network",
  "host",
  "--ulimit",
  "nofile=1024:1024",
  "--ulimit",
  "nproc=1024:1024",
];

/** Milliseconds one run of the command takes, its failure thrown. */
export function timed(command: string, args: string[], env: NodeJS.ProcessEnv): number {
  const start = process.hrtime.bigint();
  const result = spawnSync(command, args, { env, stdio: ["ignore", "ignore", "pipe"] });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  check(result, `${command} ${args.join(" ")}`);
  return ms;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
