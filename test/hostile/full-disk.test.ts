/**
 * A full disk: a store on a small tmpfs, and a RUN that writes more than fits, or a layer that
 * does not fit once the step is done. The build fails with one clear line naming "no space left on
 * device" and the store; nothing half-written is left counted as valid (every blob in the store is
 * what its digest says, no image is named, nothing stays mounted); and once there is room again
 * the same build works, `images` works and the image runs. As root and rootless (the store on the
 * tmpfs owned by the unprivileged user; mounting it takes root, which the test has).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES, type Mode, mountsUnder, ROOTLESS_USER } from "./harness.js";
import { buildStateDirs } from "./processes.js";

const world = hostileWorld();

/** The blobs of the store whose content is not what their name says. */
function corruptBlobs(store: string): string[] {
  const dir = path.join(store, "blobs", "sha256");
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter(
    (name) =>
      createHash("sha256")
        .update(readFileSync(path.join(dir, name)))
        .digest("hex") !== name,
  );
}

/** A store (with busybox) on a tmpfs of `size`, owned by the mode's user; unmount() removes it. */
function storeOnSmallDisk(mode: Mode, size: string): { store: string; disk: string; unmount: () => void } {
  const disk = world.dir("disk", mode);
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0755`, "tmpfs", disk]);
  if (mode === "rootless") execFileSync("chown", [ROOTLESS_USER, disk]);
  const store = path.join(disk, "store");
  execFileSync("cp", ["-a", world.store(mode), store]);
  return { store, disk, unmount: () => execFileSync("umount", ["-l", disk]) };
}

/** The build failed on a full disk: its last line is the error, naming the cause and the store. */
function expectDiskFullError(result: { status: number | null; stderr: string }, store: string): void {
  expect(result.status, result.stderr).toBe(1);
  const last = result.stderr.trimEnd().split("\n").at(-1)!;
  expect(last).toMatch(/^ERROR: .*no space left on (the )?device/);
  expect(last).toContain(store);
  expect(result.stderr).not.toMatch(/internal error|\n\s+at .+:\d+:\d+\)?\n/);
}

function expectNothingHalfWritten(mode: Mode, store: string): void {
  expect(corruptBlobs(store)).toEqual([]);
  expect(mountsUnder(store)).toEqual([]);
  expect(buildStateDirs(store)).toEqual([]);
  const images = world.tbuild(mode, store, ["images"]);
  expect(images.status, images.stderr).toBe(0);
  expect(images.stdout).not.toContain("filled");
}

describe.each(MODES)("a store on a full disk (%s)", (mode) => {
  it("a RUN that writes more than fits fails saying so, and the build works once there is room", () => {
    const { store, disk, unmount } = storeOnSmallDisk(mode, "24m");
    try {
      const canary = world.canary(mode);
      const ctx = world.context({ Dockerfile: "FROM busybox\nRUN head -c 40000000 /dev/urandom > /big\n" });
      const full = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "filled:1", ctx]);
      expectDiskFullError(full, store);
      // The step is named above the error.
      expect(full.stderr).toContain(" > [2/2] RUN head -c 40000000");
      expectNothingHalfWritten(mode, store);

      execFileSync("mount", ["-o", "remount,size=256m", disk]);
      const built = world.tbuild(mode, store, ["build", "-q", "-t", "filled:1", ctx]);
      expect(built.status, built.stderr).toBe(0);
      expect(world.tbuild(mode, store, ["run", "--rm", "filled:1", "wc", "-c", "/big"]).stdout).toMatch(
        /^\s*40000000 \/big\n$/,
      );
      expect(corruptBlobs(store)).toEqual([]);
      canary.expectUntouched(full.stderr);
      world.expectStoreUsable(mode, store);
    } finally {
      unmount();
    }
  });

  it("a step whose layer does not fit fails saying so, keeping no part of it", () => {
    // The step's 12 MB fit; its layer (12 MB more, random data does not compress) does not.
    const { store, disk, unmount } = storeOnSmallDisk(mode, "20m");
    try {
      const ctx = world.context({ Dockerfile: "FROM busybox\nRUN head -c 12000000 /dev/urandom > /big\n" });
      const full = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "filled:1", ctx]);
      expectDiskFullError(full, store);
      expectNothingHalfWritten(mode, store);

      execFileSync("mount", ["-o", "remount,size=256m", disk]);
      const built = world.tbuild(mode, store, ["build", "-q", "-t", "filled:1", ctx]);
      expect(built.status, built.stderr).toBe(0);
      expect(world.tbuild(mode, store, ["run", "--rm", "filled:1", "wc", "-c", "/big"]).stdout).toMatch(
        /^\s*12000000 \/big\n$/,
      );
      expect(corruptBlobs(store)).toEqual([]);
      world.expectStoreUsable(mode, store);
    } finally {
      unmount();
    }
  });
});
