/**
 * How fast `tbuild run --rm IMAGE true` starts and ends a container, beside `podman run --rm IMAGE
 * true`, on the same busybox image (made from Debian's busybox-static, imported with `tbuild
 * import`, and given to podman through `tbuild save --format docker | podman load`). Both warm:
 * the image is unpacked by each once before timing. Runs alternate, RUNS of each, and the medians
 * and their ratio are printed. Target: tbuild no slower than podman (ratio ≤ 1), with a margin
 * (≤ 0.9) so that it holds on other machines too.
 *
 * podman runs as this machine needs it (runc, cgroupfs, ulimits within the hard limits), on the
 * host's network as tbuild's default is, in a throwaway --root with the overlay driver.
 *
 *   node_modules/.bin/node benchmarks/container-run.ts   (after `npm run build`; as root)
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, makeBusyboxRootfs } from "./lib/busybox.ts";
import { median, PODMAN_RUN_OPTIONS, podmanGlobal, timed } from "./lib/podman.ts";

const RUNS = 15;
const WARMUP = 3;
const IMAGE = "docker.io/library/busybox:latest";
const ROOTLESS_USER = "tbuild-test";

const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-run-"));
const store = join(work, "store");
const podmanRoot = join(work, "podman");
const podman = podmanGlobal(podmanRoot);
const podmanRun = [...podman, "run", "--rm", ...PODMAN_RUN_OPTIONS, IMAGE, "true"];

/**
 * tbuild as the unprivileged test user (when it exists), in a store of its own: what a rootless
 * user pays on top (a second Node start, in the user namespace). Undefined without that user.
 */
function rootlessTimes(archive: string): number[] | undefined {
  if (spawnSync("id", [ROOTLESS_USER]).status !== 0) return undefined;
  const dir = join(work, "rootless");
  mkdirSync(dir);
  spawnSync("chown", [ROOTLESS_USER, dir]);
  chmodSync(work, 0o755);
  chmodSync(archive, 0o644);
  const asUser = (args: string[]) => [
    "-u",
    ROOTLESS_USER,
    "--",
    "env",
    `TBUILD_ROOT=${join(dir, "store")}`,
    tbuild,
    ...args,
  ];
  check(spawnSync("runuser", asUser(["load", "-i", archive])), "rootless tbuild load");
  const args = asUser(["run", "--rm", IMAGE, "true"]);
  for (let i = 0; i < WARMUP; i++) timed("runuser", args, process.env);
  return Array.from({ length: RUNS }, () => timed("runuser", args, process.env));
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

  const tbuildArgs = ["run", "--rm", IMAGE, "true"];
  for (let i = 0; i < WARMUP; i++) {
    timed(tbuild, tbuildArgs, tbuildEnv);
    timed("podman", podmanRun, process.env);
  }
  const times = { tbuild: [] as number[], podman: [] as number[] };
  for (let i = 0; i < RUNS; i++) {
    times.tbuild.push(timed(tbuild, tbuildArgs, tbuildEnv));
    times.podman.push(timed("podman", podmanRun, process.env));
  }
  const rootless = rootlessTimes(archive);
  const t = median(times.tbuild);
  const p = median(times.podman);
  console.log(`runs: ${RUNS} each, alternating, after ${WARMUP} warm-up runs each`);
  console.log(
    `tbuild run --rm ${IMAGE} true   median ${t.toFixed(0)} ms (min ${Math.min(...times.tbuild).toFixed(0)}, max ${Math.max(...times.tbuild).toFixed(0)})`,
  );
  console.log(
    `podman run --rm ${IMAGE} true   median ${p.toFixed(0)} ms (min ${Math.min(...times.podman).toFixed(0)}, max ${Math.max(...times.podman).toFixed(0)})`,
  );
  if (rootless) {
    console.log(
      `rootless: tbuild run --rm as ${ROOTLESS_USER}   median ${median(rootless).toFixed(0)} ms (its own user namespace; for information, podman is not run rootless here)`,
    );
  }
  // No slower than podman is the goal; 0.90 leaves room for a machine where tbuild's share costs more.
  const ratio = t / p;
  console.log(
    `ratio tbuild/podman: ${ratio.toFixed(2)} (target ≤ 1.00: ${ratio <= 1 ? "met" : "NOT met"}; with margin, ≤ 0.90: ${ratio <= 0.9 ? "met" : "NOT met"})`,
  );
  process.exitCode = t <= p ? 0 : 1;
} finally {
  // podman's overlay storage holds mounts of its own until it is told to let go.
  spawnSync("podman", [...podman, "system", "reset", "--force"], { stdio: "ignore" });
  rmSync(work, { recursive: true, force: true });
}
