/**
 * config.toml's `[worker] snapshotter` chooses how build steps get their root filesystem: an
 * overlay, or a copy (the fallback where overlayfs cannot be mounted), which a step can tell from
 * its root's file system type.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
let storeRoot: string;

beforeAll(async () => {
  storeRoot = tempDir("snapshotter-store");
  await importBusybox(storeRoot, "busybox");
});

/** The file system type a RUN step's root has, with `snapshotter` in config.toml. */
function rootTypeWith(snapshotter: string): string {
  const dir = tempDir("snapshotter-ctx");
  const config = path.join(dir, "config.toml");
  writeFileSync(config, `[worker]\nsnapshotter = "${snapshotter}"\n`);
  writeFileSync(
    path.join(dir, "Dockerfile"),
    `FROM busybox\nRUN awk '$2 == "/" { print $3 }' /proc/mounts > /root-type # ${snapshotter}\n`,
  );
  const env = { TBUILD_ROOT: storeRoot, TBUILD_CONFIG: config, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) };
  const built = tbuild(["build", "-q", "-t", `fs:${snapshotter}`, dir], { env });
  expect(built.status, built.stderr).toBe(0);
  const ran = tbuild(["run", "--rm", `fs:${snapshotter}`, "cat", "/root-type"], { env });
  expect(ran.status, ran.stderr).toBe(0);
  return ran.stdout.trim();
}

describe("[worker] snapshotter in config.toml", () => {
  it("builds on an overlay, or on a copy of the layers, as it says", () => {
    expect(rootTypeWith("overlay")).toBe("overlay");
    expect(rootTypeWith("copy")).not.toBe("overlay");
  });
});
