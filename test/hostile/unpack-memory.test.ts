/**
 * A layer of 1 MB that unpacks to a file of 512 MiB must not cost 512 MiB of memory: an image
 * anyone can publish would otherwise take down the machine that builds FROM it. The peak resident
 * memory of the whole tbuild process tree (the rootless re-exec included) is measured by GNU time.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, rmSync, statfsSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH } from "../helpers/images.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "./harness.js";
import { busyboxLayer, ociArchive, writeLayer } from "./layer-images.js";

const world = hostileWorld();
/**
 * Twice the memory allowed, so a tbuild that held the file in memory could not pass; a bigger file
 * shows nothing more and costs time (compressing, unpacking and reading it is most of this file's).
 */
const FILE_BYTES = 512 * 1024 * 1024;
const MAX_RSS_BYTES = 256 * 1024 * 1024;

/** `tbuild args` as the mode's user under GNU time: its status, output and peak RSS in bytes. */
function measuredTbuild(mode: Mode, store: string, args: string[], cwd: string) {
  const report = path.join(world.dir("rss", mode), "rss");
  const home =
    mode === "rootless"
      ? execFileSync("getent", ["passwd", ROOTLESS_USER], { encoding: "utf8" }).split(":")[5]!
      : (process.env.HOME ?? "/");
  const command = [
    "/usr/bin/time",
    "-f",
    "%M",
    "-o",
    report,
    "env",
    "-i",
    `PATH=${process.env.PATH}`,
    `HOME=${home}`,
    `TBUILD_ROOT=${store}`,
    "TBUILD_CONFIG=/dev/null",
    `SOURCE_DATE_EPOCH=${FIXED_EPOCH}`,
    tbuildBin,
    ...args,
  ];
  const full = mode === "rootless" ? ["runuser", "-u", ROOTLESS_USER, "--", ...command] : command;
  const result = spawnSync(full[0]!, full.slice(1), { cwd, encoding: "utf8" });
  const kib = Number(readFileSync(report, "utf8").trim().split("\n").at(-1));
  return { status: result.status, stderr: result.stderr, rssBytes: kib * 1024 };
}

let archive = "";

beforeAll(async () => {
  const dir = world.dir("big-layer");
  // The unpacked file is written for real, once per mode; the archive itself is a few MB.
  expect(statfsSync(dir).bavail * statfsSync(dir).bsize).toBeGreaterThan(3 * FILE_BYTES);
  const base = await busyboxLayer(dir);
  const zeros = await writeLayer(path.join(dir, "zeros.tar.gz"), [{ path: "zeros", zeros: FILE_BYTES }]);
  expect(zeros.size).toBeLessThan(16 * 1024 * 1024);
  archive = ociArchive(dir, "zeros:1", { layers: [base, zeros] });
}, 300_000);

describe.each(MODES)("unpacking a layer with a 512 MiB file (%s)", (mode) => {
  it("keeps tbuild's peak memory under 256 MB, and the file whole", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const loaded = world.tbuild(mode, store, ["load", "-i", archive]);
    expect(loaded.status, loaded.stderr).toBe(0);
    const ctx = world.context({ Dockerfile: "FROM zeros:1\nRUN wc -c < /zeros > /size && rm /zeros\n" });
    const built = measuredTbuild(mode, store, ["build", "-q", "-t", "sized", ctx], ctx);
    expect(built.status, built.stderr).toBe(0);
    expect(built.rssBytes, `peak RSS ${Math.round(built.rssBytes / 2 ** 20)} MiB`).toBeLessThanOrEqual(
      MAX_RSS_BYTES,
    );
    const size = world.tbuild(mode, store, ["run", "--rm", "sized", "cat", "/size"]);
    expect(size.stdout.trim()).toBe(String(FILE_BYTES));
    canary.expectUntouched(built.stderr);
    world.expectStoreUsable(mode, store);
    // Its 512 MiB layer goes now rather than with the other mode's at the end of the file.
    rmSync(store, { recursive: true, force: true });
  }, 600_000);
});
