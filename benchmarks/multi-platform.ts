/**
 * Builds for several platforms (issue 15), cold (`--no-cache`), A B A B, RUNS pairs after one pair
 * not counted, medians and the median of the pairs' ratios:
 *
 *   (1) the cross-compiling shape, no foreign RUN: a `FROM --platform=$BUILDPLATFORM` stage whose
 *       toolchain step is the same for every target, then a step per target, copied into a
 *       `FROM scratch` image per platform. `--platform linux/amd64,linux/arm64` against
 *       `--platform linux/amd64` alone: target ≤ 1.3×.
 *   (2) what emulation costs one RUN step: the same step (a shell loop) in the arm64 busybox under
 *       QEMU against the amd64 busybox natively. Reported, no target.
 *
 * Needs Debian's qemu-user-static and the arm64 busybox that .ci/install unpacks into test/.data.
 *
 *   node_modules/.bin/node benchmarks/multi-platform.ts     (after `npm run build`)
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { check, makeBusyboxRootfs } from "./lib/busybox.ts";

const RUNS = Number(process.env.RUNS ?? 5);
const tbuild = fileURLToPath(new URL("../bin/tbuild", import.meta.url));
const arm64Busybox = fileURLToPath(new URL("../test/.data/busybox-arm64/bin/busybox", import.meta.url));
const qemu = "/usr/bin/qemu-aarch64-static";
const work = mkdtempSync(join(tmpdir(), "tbuild-bench-platforms-"));
const store = join(work, "store");

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** One cold build, timed from start to exit. */
function timedBuild(args: string[]): number {
  spawnSync("sync");
  const started = performance.now();
  const result = spawnSync(tbuild, ["build", "-q", "--no-cache", ...args], {
    env: { ...process.env, TBUILD_ROOT: store },
    encoding: "utf8",
  });
  const ms = performance.now() - started;
  check(result, `tbuild build ${args.join(" ")}`);
  return ms;
}

/** A B A B: RUNS pairs after one not counted; medians of each and of the pairs' ratios. */
function pairs(name: string, a: string[], b: string[], nameA: string, nameB: string) {
  const ta: number[] = [];
  const tb: number[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const x = timedBuild(a);
    const y = timedBuild(b);
    if (i === 0) continue;
    ta.push(x);
    tb.push(y);
  }
  const ratio = median(ta.map((x, i) => x / tb[i]!));
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
  console.log(name);
  console.log(`  ${nameA}: median ${median(ta).toFixed(0)} ms  (runs: ${fmt(ta)})`);
  console.log(`  ${nameB}: median ${median(tb).toFixed(0)} ms  (runs: ${fmt(tb)})`);
  return { ratio, a: median(ta), b: median(tb) };
}

try {
  if (!existsSync(arm64Busybox) || !existsSync(qemu)) {
    throw new Error(`needs ${arm64Busybox} and ${qemu}: run .ci/install`);
  }
  for (const [name, busybox, runner, platform] of [
    ["bb-amd64", "/bin/busybox", [], "linux/amd64"],
    ["bb-arm64", arm64Busybox, [qemu], "linux/arm64"],
  ] as const) {
    const rootfs = join(work, name);
    makeBusyboxRootfs(rootfs, busybox, [...runner]);
    check(
      spawnSync(tbuild, ["import", "--platform", platform, rootfs, name, "--change", 'CMD ["sh"]'], {
        env: { ...process.env, TBUILD_ROOT: store },
      }),
      `tbuild import ${name}`,
    );
  }
  // A loop of shell work stands for compiling.
  const work100k = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done";
  const cross = join(work, "cross");
  mkdirSync(cross);
  writeFileSync(
    join(cross, "Dockerfile"),
    [
      "FROM --platform=$BUILDPLATFORM bb-amd64 AS build",
      `RUN ${work100k}; echo toolchain > /toolchain`,
      "ARG TARGETARCH",
      `RUN ${work100k}; echo "built for $TARGETARCH" > /app`,
      "FROM scratch",
      "COPY --from=build /app /app",
      "",
    ].join("\n"),
  );
  const emulated = join(work, "emulated");
  mkdirSync(emulated);
  writeFileSync(join(emulated, "Dockerfile"), `ARG TARGETARCH\nFROM bb-$TARGETARCH\nRUN ${work100k}\n`);
  console.log(`${RUNS} alternating pairs per case after one not counted, every build cold (--no-cache)\n`);

  const one = pairs(
    "(1) cross-compiling shape, no foreign RUN",
    ["--platform", "linux/amd64,linux/arm64", cross],
    ["--platform", "linux/amd64", cross],
    "two platforms (amd64, arm64)",
    "one platform (amd64)      ",
  );
  console.log(`  ratio ${one.ratio.toFixed(2)}× (target ≤ 1.3×: ${one.ratio <= 1.3 ? "met" : "NOT met"})\n`);
  const two = pairs(
    "(2) one RUN step (a 30,000-turn shell loop), emulated against native",
    ["--platform", "linux/arm64", emulated],
    ["--platform", "linux/amd64", emulated],
    "arm64 under qemu-aarch64-static",
    "amd64 natively                 ",
  );
  console.log(
    `  ratio ${two.ratio.toFixed(2)}× for the whole build; the step costs ${(two.a - two.b).toFixed(0)} ms more emulated`,
  );
  process.exitCode = one.ratio <= 1.3 ? 0 : 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
