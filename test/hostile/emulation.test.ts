/**
 * RUN steps of a foreign platform (linux/arm64 on this amd64 host), as root and rootless: under
 * Debian's qemu-aarch64-static mounted read-only into the step when the kernel has no handler,
 * through the kernel's binfmt_misc handler when it has one, and a one-line error naming the
 * package to install when neither is there. The step is hostile too: it cannot change the host's
 * emulator it runs under. Every case holds the binfmt lock (binfmt.ts) and sets the handler state
 * it needs, so the cases do not depend on their order or on other files running at once.
 * Rootless, tbuild would rather register a handler of its own (userns-binfmt.test.ts): these
 * cases ask for the mounted emulator (TBUILD_NO_USERNS_BINFMT=1), its fallback.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { arm64BusyboxRootfs } from "../helpers/images.js";
import {
  aarch64HandlerEnabled,
  lockBinfmt,
  withAarch64Handler,
  withMountedEmulator,
  withoutAarch64Handler,
} from "./binfmt.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "./harness.js";

const world = withMountedEmulator(hostileWorld());
const EMULATOR = "/usr/bin/qemu-aarch64-static";
/** Distinguishes the two ways a step can run: the emulator file is there only when tbuild mounted it. */
const HOW =
  "RUN if [ -e /dev/.tbuild-qemu-emulator ]; then echo mounted > /how; else echo kernel > /how; fi\n";

let release: () => Promise<void>;
let rootfs: string;
let arm64Template = "";
beforeAll(async () => {
  release = await lockBinfmt();
  rootfs = await arm64BusyboxRootfs();
  arm64Template = importArm64Template();
}, 600_000);
afterAll(async () => {
  await release?.();
});

/**
 * A store with `busybox` (amd64) and `busybox-arm64`, owned by the mode's user: a copy of one
 * store imported once as root (the tree has root's private /root), as the harness copies its
 * stores, so a case costs its builds, not an import.
 */
function storeWithArm64(mode: Mode): string {
  const store = path.join(world.dir("arm64-store"), "store");
  execFileSync("cp", ["-a", arm64Template, store]);
  if (mode === "rootless") execFileSync("chown", ["-R", ROOTLESS_USER, store]);
  return store;
}

/** The store every `storeWithArm64` copies, made in `beforeAll`. */
function importArm64Template(): string {
  const store = world.store("root");
  const imported = world.tbuild("root", store, [
    "import",
    "--platform",
    "linux/arm64",
    rootfs,
    "busybox-arm64",
  ]);
  expect(imported.status, imported.stderr).toBe(0);
  return store;
}

function buildFiles(mode: Mode, store: string, dockerfile: string, platform: string, env = {}) {
  const ctx = world.context({ Dockerfile: dockerfile });
  const out = world.dir("out", mode);
  const built = world.tbuild(
    mode,
    store,
    ["build", "--progress=plain", "--platform", platform, "-o", `type=local,dest=${out}`, ctx],
    { env },
  );
  const read = (file: string) => readFileSync(path.join(out, file), "utf8");
  return { built, out, read };
}

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

describe.each(MODES)("foreign RUN steps (%s)", (mode) => {
  it("without a binfmt handler, an arm64 step runs under qemu-aarch64-static mounted into it; an amd64 step runs natively", () => {
    const restore = withoutAarch64Handler();
    try {
      expect(aarch64HandlerEnabled()).toBe(false);
      const canary = world.canary(mode);
      const store = storeWithArm64(mode);
      const arm = buildFiles(
        mode,
        store,
        `FROM busybox-arm64\nRUN uname -m > /arch\n${HOW}RUN ["mkdir", "/made-by-exec-form"]\n`,
        "linux/arm64",
      );
      expect(arm.built.status, arm.built.stderr).toBe(0);
      expect(arm.read("arch")).toBe("aarch64\n");
      expect(arm.read("how")).toBe("mounted\n");
      expect(readFileSync(path.join(arm.out, "bin", "busybox")).subarray(18, 20)).toEqual(
        Buffer.from([0xb7, 0]),
      );
      // The exec form's command was found through the step's PATH, as runc would find it.
      expect(() => readFileSync(path.join(arm.out, "made-by-exec-form"))).toThrow(/EISDIR/);
      // The emulator and its mount point are not in the image.
      expect(() => readFileSync(path.join(arm.out, "dev", ".tbuild-qemu-emulator"))).toThrow(/ENOENT/);

      const amd = buildFiles(mode, store, `FROM busybox\nRUN uname -m > /arch\n${HOW}`, "linux/amd64");
      expect(amd.built.status, amd.built.stderr).toBe(0);
      expect(amd.read("arch")).toBe("x86_64\n");
      expect(amd.read("how")).toBe("kernel\n");
      canary.expectUntouched(arm.built.stdout, arm.built.stderr, amd.built.stderr);
      world.expectStoreUsable(mode, store);
    } finally {
      restore();
    }
  });

  it("with the kernel's aarch64 binfmt handler (F flag), an arm64 step runs through it: nothing is mounted", () => {
    const restore = withAarch64Handler();
    try {
      expect(aarch64HandlerEnabled()).toBe(true);
      const store = storeWithArm64(mode);
      const arm = buildFiles(mode, store, `FROM busybox-arm64\nRUN uname -m > /arch\n${HOW}`, "linux/arm64");
      expect(arm.built.status, arm.built.stderr).toBe(0);
      expect(arm.read("arch")).toBe("aarch64\n");
      expect(arm.read("how")).toBe("kernel\n");
      const listed = world.tbuild(mode, store, ["version", "--platforms"]);
      expect(listed.stdout).toMatch(
        /^linux\/arm64 +binfmt emulator \/usr\/libexec\/qemu-binfmt\/aarch64-binfmt-P$/m,
      );
    } finally {
      restore();
    }
  });

  it("with no handler and no emulator, an arm64 step fails with one line naming the platform and the package; the store stays usable", () => {
    const restore = withoutAarch64Handler();
    try {
      const store = storeWithArm64(mode);
      const empty = world.dir("no-emulators", mode);
      const arm = buildFiles(mode, store, "FROM busybox-arm64\nRUN uname -m > /arch\n", "linux/arm64", {
        TBUILD_QEMU_DIR: empty,
      });
      expect(arm.built.status).toBe(1);
      const error = arm.built.stderr.split("\n").filter((line) => line.startsWith("ERROR: "));
      expect(error).toEqual([
        `ERROR: cannot run a linux/arm64 step on this linux/amd64 host: no binfmt_misc handler and no qemu-aarch64-static in $TBUILD_QEMU_DIR (${empty}); install one with apt-get install qemu-user-static`,
      ]);
      expect(arm.built.stderr).not.toMatch(/\n\s+at /);
      world.expectStoreUsable(mode, store);
    } finally {
      restore();
    }
  });

  it("tbuild version --platforms lists arm64 as runnable through qemu-aarch64-static, and as not runnable without it", () => {
    const restore = withoutAarch64Handler();
    try {
      const store = world.store(mode);
      const listed = world.tbuild(mode, store, ["version", "--platforms"]);
      expect(listed.status, listed.stderr).toBe(0);
      expect(listed.stdout).toMatch(/^linux\/amd64 +native$/m);
      expect(listed.stdout).toMatch(/^linux\/arm64 +qemu-aarch64-static \(mounted into steps\)$/m);
      expect(
        listed.stdout
          .trim()
          .split("\n")
          .map((line) => line.split(/ +/)[0]),
      ).toEqual([
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/386",
        "linux/riscv64",
        "linux/ppc64le",
        "linux/s390x",
      ]);
      const hidden = world.tbuild(mode, store, ["version", "--platforms"], {
        env: { TBUILD_QEMU_DIR: world.dir("no-emulators", mode) },
      });
      expect(hidden.stdout).toMatch(/^linux\/arm64 +no$/m);
      expect(hidden.stdout).toMatch(/^linux\/amd64 +native$/m);
    } finally {
      restore();
    }
  });

  it("a hostile arm64 step cannot change the host's emulator it runs under", () => {
    const restore = withoutAarch64Handler();
    try {
      const before = sha256(EMULATOR);
      const canary = world.canary(mode);
      const store = storeWithArm64(mode);
      const attack = buildFiles(
        mode,
        store,
        "FROM busybox-arm64\n" +
          "RUN E=/dev/.tbuild-qemu-emulator; " +
          "(echo overwritten > $E) 2>> /tried; (chmod 777 $E) 2>> /tried; (rm -f $E) 2>> /tried; " +
          "(mount -o remount,rw $E) 2>> /tried; (cp /bin/busybox $E) 2>> /tried; true\n",
        "linux/arm64",
      );
      expect(attack.built.status, attack.built.stderr).toBe(0);
      // Each attempt failed, and said so.
      expect(attack.read("tried").trim().split("\n").length).toBeGreaterThanOrEqual(5);
      expect(sha256(EMULATOR)).toBe(before);
      canary.expectUntouched(attack.built.stdout, attack.built.stderr);
      world.expectStoreUsable(mode, store);
    } finally {
      restore();
    }
  });
});
