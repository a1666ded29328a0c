/**
 * The pieces of foreign-platform steps that need no container: the test executables the host
 * probe runs (each a real program of its architecture, run here by its QEMU emulator), the runtime
 * config of an emulated step, and the PATH lookup QEMU needs done for it. The steps themselves
 * run in test/hostile/emulation.test.ts.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { EMULATOR_MOUNT, exitZeroExecutable, PROBED_PLATFORMS } from "../../worker/emulation.js";
import { buildRuntimeSpec, type HostFacts } from "../../worker/sandbox/index.js";
import { lookPathInRoot } from "../../worker/sandbox/rootfs-path.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** Debian's qemu-user-static names, per platform: the judge of each test executable. */
const QEMU: Record<string, string> = {
  "linux/amd64": "qemu-x86_64-static",
  "linux/arm64": "qemu-aarch64-static",
  "linux/arm/v7": "qemu-arm-static",
  "linux/386": "qemu-i386-static",
  "linux/riscv64": "qemu-riscv64-static",
  "linux/ppc64le": "qemu-ppc64le-static",
  "linux/s390x": "qemu-s390x-static",
};

const host: HostFacts = {
  arch: "x64",
  kernelRelease: "6.1.0-13-amd64",
  rootless: true,
  hardLimits: {},
  bundleDir: "/state/abc/bundle",
  containerId: "0123456789abcdef0123",
};
const ids = { uid: 0, gid: 0, additionalGids: [], home: "/root" };

describe("the platform probe's test executables", () => {
  it.each(PROBED_PLATFORMS.map((p) => [p]))(
    "the %s one is a program of that architecture that exits 0",
    (platform) => {
      const file = path.join(tempDir("probe"), "exit0");
      writeFileSync(file, exitZeroExecutable(platform), { mode: 0o755 });
      const described = execFileSync("file", ["-b", file], { encoding: "utf8" });
      expect(described).toMatch(/^ELF .* executable/);
      const ran = spawnSync(`/usr/bin/${QEMU[platform]}`, [file], { encoding: "utf8" });
      expect(ran.stderr).toBe("");
      expect(ran.status).toBe(0);
    },
  );

  it("the amd64 one runs on this host without an emulator", () => {
    const file = path.join(tempDir("probe"), "exit0");
    writeFileSync(file, exitZeroExecutable("linux/amd64"), { mode: 0o755 });
    expect(spawnSync(file).status).toBe(0);
  });
});

describe("an emulated step's runtime config", () => {
  it("mounts the emulator read-only under /dev and starts the resolved program through it, keeping argv[0]", () => {
    const config = buildRuntimeSpec(
      {
        rootfs: "/rootfs",
        args: ["uname", "-m"],
        env: [],
        cwd: "/",
        user: "",
        network: "host",
        emulator: "/usr/bin/qemu-aarch64-static",
      },
      ids,
      host,
      { executable: "/bin/uname" },
    );
    expect(config.process?.args).toEqual([EMULATOR_MOUNT, "-0", "uname", "/bin/uname", "-m"]);
    const mount = config.mounts?.find((m) => m.destination === EMULATOR_MOUNT);
    expect(mount).toEqual({
      destination: "/dev/.tbuild-qemu-emulator",
      type: "bind",
      source: "/usr/bin/qemu-aarch64-static",
      options: ["rbind", "ro", "rprivate"],
    });
    // After /dev's tmpfs, or the tmpfs would hide it.
    const order = (config.mounts ?? []).map((m) => m.destination);
    expect(order.indexOf(EMULATOR_MOUNT)).toBeGreaterThan(order.indexOf("/dev"));
  });

  it("a native step's config has neither", () => {
    const config = buildRuntimeSpec(
      { rootfs: "/rootfs", args: ["uname", "-m"], env: [], cwd: "/", user: "", network: "host" },
      ids,
      host,
    );
    expect(config.process?.args).toEqual(["uname", "-m"]);
    expect(config.mounts?.some((m) => m.destination === EMULATOR_MOUNT)).toBe(false);
  });
});

describe("the PATH lookup for an emulated step", () => {
  it("finds a command as runc would: through PATH, in the root's own symlinks, executable files only", () => {
    const root = tempDir("root");
    for (const dir of ["bin", "usr/bin", "usr/local/bin/tool", "opt"])
      mkdirSync(path.join(root, dir), { recursive: true });
    writeFileSync(path.join(root, "bin/busybox"), "");
    chmodSync(path.join(root, "bin/busybox"), 0o755);
    symlinkSync("busybox", path.join(root, "bin/uname"));
    // An absolute symlink means the root's own path: the host's runc is not the root's.
    symlinkSync("/bin/busybox", path.join(root, "usr/bin/env"));
    symlinkSync("/usr/sbin/runc", path.join(root, "usr/bin/hostonly"));
    writeFileSync(path.join(root, "opt/notes"), "", { mode: 0o644 });
    const searchPath = "/usr/local/bin:/usr/bin:/bin:/opt";
    expect(lookPathInRoot(root, "uname", searchPath)).toBe("/bin/uname");
    expect(lookPathInRoot(root, "env", searchPath)).toBe("/usr/bin/env");
    expect(lookPathInRoot(root, "hostonly", searchPath)).toBeUndefined();
    // A directory of that name and a file without an execute bit are skipped.
    expect(lookPathInRoot(root, "tool", searchPath)).toBeUndefined();
    expect(lookPathInRoot(root, "notes", searchPath)).toBeUndefined();
    expect(lookPathInRoot(root, "ls", searchPath)).toBeUndefined();
    expect(lookPathInRoot(root, "./run.sh", searchPath)).toBe("./run.sh");
  });
});
