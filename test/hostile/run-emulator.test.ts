/**
 * `tbuild run` of a hostile foreign-platform image (linux/arm64 on this amd64 host, no binfmt_misc
 * handler), as root and rootless: its process runs under the host's qemu-aarch64-static, bound
 * read-only at /dev/.tbuild-qemu-emulator (a tmpfs). The process cannot change that file, a kept
 * container's changes and the image committed from them never hold it, and an image that ships
 * its own file there does not replace the host's emulator. An image whose /dev is a symlink out
 * of its root (runc would make /dev's links through it, on the host) is refused, emulated or not,
 * by run and by a build's RUN. Every case holds the binfmt lock (binfmt.ts) with the aarch64
 * handler disabled, whatever order the cases run in. Rootless, tbuild would rather register a
 * handler of its own (userns-binfmt.test.ts): these cases ask for the mounted emulator
 * (TBUILD_NO_USERNS_BINFMT=1), its fallback.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { arm64BusyboxRootfs } from "../helpers/images.js";
import { lockBinfmt, withMountedEmulator, withoutAarch64Handler } from "./binfmt.js";
import { hostileWorld, MODES, type Mode } from "./harness.js";
import {
  busyboxLayer,
  type EntrySpec,
  type LayerFile,
  ociArchive,
  rootfsLayer,
  writeLayer,
} from "./layer-images.js";

const world = withMountedEmulator(hostileWorld());
const EMULATOR = "/usr/bin/qemu-aarch64-static";
const MOUNTED = "/dev/.tbuild-qemu-emulator";
const ARM64 = ["--platform", "linux/arm64"];

let release: () => Promise<void>;
let restoreHandler: () => void;
let arm64Layer: LayerFile;
beforeAll(async () => {
  release = await lockBinfmt();
  restoreHandler = withoutAarch64Handler();
  // Debian's arm64 busybox tree as one layer, the base of every hostile image here.
  arm64Layer = await rootfsLayer(
    await arm64BusyboxRootfs(),
    path.join(world.dir("arm64-layer"), "busybox-arm64"),
  );
}, 600_000);
afterAll(async () => {
  restoreHandler?.();
  await release?.();
});

/**
 * A busybox image (arm64 by default, else this host's amd64) with `extra` entries on top, loaded
 * into `store` as `name`.
 */
async function loadImage(
  mode: Mode,
  store: string,
  name: string,
  extra: EntrySpec[] = [],
  architecture: "arm64" | "amd64" = "arm64",
) {
  const dir = world.dir("image");
  const layers = [architecture === "arm64" ? arm64Layer : await busyboxLayer(dir)];
  if (extra.length > 0) layers.push(await writeLayer(path.join(dir, "hostile.tar.gz"), extra));
  const archive = ociArchive(dir, name, {
    layers,
    configText: JSON.stringify({
      architecture,
      os: "linux",
      config: { Cmd: ["sh"], Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] },
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    }),
  });
  const loaded = world.tbuild(mode, store, ["load", "-i", archive]);
  expect(loaded.status, loaded.stderr).toBe(0);
}

/** What a hostile process could change of the host's emulator: its bytes, mode, owner and times. */
function emulatorState(): string {
  const info = statSync(EMULATOR);
  const digest = createHash("sha256").update(readFileSync(EMULATOR)).digest("hex");
  return `${digest} ${info.mode.toString(8)} ${info.uid}:${info.gid} ${info.mtimeMs} ${info.ctimeMs}`;
}

/** Every path under `dir` whose name is the emulator's mount point's (found as root). */
function emulatorCopies(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.name === path.basename(MOUNTED))
    .map((entry) => path.join(entry.parentPath, entry.name));
}

describe.each(MODES)("a hostile foreign-platform container (%s)", (mode) => {
  it("cannot change the host's emulator it runs under: each try fails with the kernel's refusal", async () => {
    const before = emulatorState();
    const canary = world.canary(mode);
    const store = world.store(mode);
    await loadImage(mode, store, "attacker");
    // Each attack is the container's first process, so QEMU runs it (a program a shell started would
    // fail with "Exec format error" before trying anything), and each must fail for the right reason.
    const attacks: [string[], RegExp][] = [
      [["sh", "-c", `echo overwritten > ${MOUNTED}`], /Read-only file system/],
      [["sh", "-c", `cat /bin/busybox > ${MOUNTED}`], /Read-only file system/],
      [["chmod", "777", MOUNTED], /Read-only file system/],
      [["touch", MOUNTED], /Read-only file system/],
      [["rm", "-f", MOUNTED], /Resource busy|Device or resource busy/],
      [["mount", "-o", "remount,bind,rw", MOUNTED], /operation not permitted|permission denied/i],
      [["umount", MOUNTED], /Operation not permitted|Invalid argument/],
    ];
    const outputs: string[] = [];
    for (const [command, refusal] of attacks) {
      const ran = world.tbuild(mode, store, ["run", "--rm", ...ARM64, "attacker", ...command]);
      outputs.push(ran.stdout, ran.stderr);
      expect(ran.status, `${command.join(" ")}: ${ran.stderr}`).not.toBe(0);
      expect(ran.stderr, command.join(" ")).toMatch(refusal);
      expect(ran.stderr).not.toMatch(/Exec format error/);
    }
    // After all of it, the emulator still runs the image.
    const after = world.tbuild(mode, store, ["run", "--rm", ...ARM64, "attacker", "uname", "-m"]);
    expect(after.stdout).toBe("aarch64\n");
    expect(emulatorState()).toBe(before);
    canary.expectUntouched(...outputs, after.stdout, after.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("leaves no emulator in a kept container's changes, nor in the image committed from them", async () => {
    const store = world.store(mode);
    await loadImage(mode, store, "keeper");
    const name = `kept-${mode}`;
    const kept = world.tbuild(mode, store, [
      "run",
      "--name",
      name,
      ...ARM64,
      "keeper",
      "sh",
      "-c",
      `echo changed > /changed; [ -e ${MOUNTED} ] && echo mounted`,
    ]);
    expect(kept.status, kept.stderr).toBe(0);
    expect(kept.stdout).toBe("mounted\n");
    // Nothing of the store (the container's writable layer included) holds a copy or a mount point.
    expect(emulatorCopies(store)).toEqual([]);
    const committed = world.tbuild(mode, store, ["commit", name, "committed:1"]);
    expect(committed.status, committed.stderr).toBe(0);
    const out = world.dir("out", mode);
    const exported = world.tbuild(mode, store, [
      "build",
      ...ARM64,
      "-o",
      `type=local,dest=${out}`,
      world.context({ Dockerfile: "FROM committed:1\n" }),
    ]);
    expect(exported.status, exported.stderr).toBe(0);
    expect(readFileSync(path.join(out, "changed"), "utf8")).toBe("changed\n");
    expect(emulatorCopies(out)).toEqual([]);
    const removed = world.tbuild(mode, store, ["rm", name]);
    expect(removed.status, removed.stderr).toBe(0);
    world.expectStoreUsable(mode, store);
  });

  it("an image's own /dev/.tbuild-qemu-emulator does not replace the host's emulator", async () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    // A fake "emulator" that would leave a mark in the canary if it ever ran on the host's side.
    await loadImage(mode, store, "impostor", [
      { path: "dev/", type: "Directory" },
      {
        path: "dev/.tbuild-qemu-emulator",
        content: `#!/bin/sh\necho impostor > ${canary.dir}/sub/file\necho impostor\n`,
        mode: 0o755,
      },
    ]);
    const ran = world.tbuild(mode, store, ["run", "--rm", ...ARM64, "impostor", "uname", "-m"]);
    expect(ran.status, ran.stderr).toBe(0);
    expect(ran.stdout).toBe("aarch64\n");
    // The host's emulator is the one there, over the image's file.
    const seen = world.tbuild(mode, store, ["run", "--rm", ...ARM64, "impostor", "head", "-c", "4", MOUNTED]);
    expect(seen.stdout).toBe("\x7fELF");
    canary.expectUntouched(ran.stdout, ran.stderr, seen.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("an image whose /dev is a symlink out of its root is refused before runc starts (run, emulated or not, and a build's RUN): nothing is written outside", async () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    // runc would make /dev's links (fd, stdin, stdout, stderr, ptmx) in the canary.
    const link: EntrySpec[] = [{ path: "dev", type: "SymbolicLink", linkpath: `${canary.dir}/sub` }];
    await loadImage(mode, store, "devlink-arm64", link);
    await loadImage(mode, store, "devlink-amd64", link, "amd64");
    const refusal = `ERROR: the image's /dev is a symbolic link (to "${canary.dir}/sub"): runc would make the container's device links outside the container; use an image whose /dev is a directory, or has none\n`;
    const outputs: string[] = [];
    for (const args of [
      ["--rm", ...ARM64, "devlink-arm64"],
      ["--name", `devlink-${mode}`, ...ARM64, "devlink-arm64"],
      ["--rm", "devlink-amd64"],
    ]) {
      const ran = world.tbuild(mode, store, ["run", ...args, "uname", "-m"]);
      outputs.push(ran.stdout, ran.stderr);
      expect(ran.stderr, args.join(" ")).toBe(refusal);
      expect(ran.status).toBe(1);
      canary.expectUntouched();
    }
    const built = world.tbuild(mode, store, [
      "build",
      "--progress=plain",
      world.context({ Dockerfile: "FROM devlink-amd64\nRUN uname -m\n" }),
    ]);
    expect(built.status).toBe(1);
    expect(built.stderr).toContain(refusal.slice("ERROR: ".length, -1));
    const removed = world.tbuild(mode, store, ["rm", `devlink-${mode}`]);
    expect(removed.status, removed.stderr).toBe(0);
    canary.expectUntouched(...outputs, built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });
});
