/**
 * Foreign programs started by a foreign program (linux/arm64 on this amd64 host, no binfmt_misc
 * handler on the host): rootless tbuild registers a handler with the F flag in the binfmt_misc
 * instance of its own user namespace (Linux 6.7+), so every process of a step or a `tbuild run`
 * container is emulated, not only the first; the host's table never changes, and another tbuild
 * process never sees the handler. Root keeps the mounted emulator (a handler in root's namespace
 * would be the whole machine's), and its limit. A step cannot register or change a handler. The
 * image a step makes is the same whichever way it ran. Every case holds the binfmt lock
 * (binfmt.ts) with the host's aarch64 handler disabled, whatever order the cases run in.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exitZeroExecutable } from "../../worker/emulation.js";
import { arm64BusyboxRootfs } from "../helpers/images.js";
import { lockBinfmt, withAarch64Handler, withoutAarch64Handler } from "./binfmt.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "./harness.js";

const world = hostileWorld();
const BINFMT = "/proc/sys/fs/binfmt_misc";
/** Distinguishes the two ways a step can run: the emulator file is there only when tbuild mounted it. */
const HOW = "if [ -e /dev/.tbuild-qemu-emulator ]; then echo mounted; else echo kernel; fi";
/** A foreign shell that runs foreign programs: `sleep` and a second busybox are processes of their own. */
const CHILDREN =
  "FROM busybox-arm64\n" +
  "RUN sleep 0 && uname -m > /arch\n" +
  "RUN /bin/busybox sh -c '/bin/busybox echo child ok' > /child\n" +
  `RUN ${HOW} > /how\n`;

let release: () => Promise<void>;
let restoreHandler: () => void;
let rootfs: string;
let arm64Template = "";
beforeAll(async () => {
  release = await lockBinfmt();
  restoreHandler = withoutAarch64Handler();
  rootfs = await arm64BusyboxRootfs();
  arm64Template = importArm64Template();
}, 600_000);
afterAll(async () => {
  restoreHandler?.();
  await release?.();
});

/** The host's binfmt_misc entries (binfmt_misc mounted for the look if it was not). */
function hostEntries(): string[] {
  const mountedHere = !existsSync(`${BINFMT}/register`);
  if (mountedHere) execFileSync("mount", ["-t", "binfmt_misc", "binfmt_misc", BINFMT]);
  try {
    return readdirSync(BINFMT)
      .sort()
      .map((name) =>
        name === "register" ? name : `${name} ${readFileSync(path.join(BINFMT, name), "utf8")}`,
      );
  } finally {
    if (mountedHere) execFileSync("umount", [BINFMT]);
  }
}

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

function buildFiles(mode: Mode, store: string, dockerfile: string, env: Record<string, string> = {}) {
  const ctx = world.context({ Dockerfile: dockerfile });
  const out = world.dir("out", mode);
  const built = world.tbuild(
    mode,
    store,
    ["build", "--progress=plain", "--platform", "linux/arm64", "-o", `type=local,dest=${out}`, ctx],
    { env },
  );
  const read = (file: string) => readFileSync(path.join(out, file), "utf8");
  return { built, out, read };
}

describe("foreign programs started by a foreign program, rootless", () => {
  it("a RUN step's every program is emulated through tbuild's own handler; the host's table gets no entry", () => {
    const before = hostEntries();
    expect(before.some((entry) => entry.startsWith("qemu-aarch64 ") && /^enabled$/m.test(entry))).toBe(false);
    const canary = world.canary("rootless");
    const store = storeWithArm64("rootless");
    const arm = buildFiles("rootless", store, CHILDREN);
    expect(arm.built.status, arm.built.stderr).toBe(0);
    expect(arm.read("arch")).toBe("aarch64\n");
    expect(arm.read("child")).toBe("child ok\n");
    // Nothing was mounted into the step: the kernel ran it.
    expect(arm.read("how")).toBe("kernel\n");
    expect(hostEntries()).toEqual(before);
    canary.expectUntouched(arm.built.stdout, arm.built.stderr);
    world.expectStoreUsable("rootless", store);
  });

  it("tbuild run of an arm64 image whose CMD starts another program works", () => {
    const store = storeWithArm64("rootless");
    const ctx = world.context({
      Dockerfile: 'FROM busybox-arm64\nCMD ["sh", "-c", "sleep 0 && /bin/busybox uname -m"]\n',
    });
    const built = world.tbuild("rootless", store, [
      "build",
      "-q",
      "--platform",
      "linux/arm64",
      "-t",
      "child:1",
      ctx,
    ]);
    expect(built.status, built.stderr).toBe(0);
    const ran = world.tbuild("rootless", store, ["run", "--rm", "--platform", "linux/arm64", "child:1"]);
    expect(ran.status, ran.stderr).toBe(0);
    expect(ran.stdout).toBe("aarch64\n");
  });

  it("tbuild version --platforms says arm64 runs through the handler of tbuild's user namespace", () => {
    const store = world.store("rootless");
    const listed = world.tbuild("rootless", store, ["version", "--platforms"]);
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(
      /^linux\/arm64 +qemu-aarch64-static \(binfmt_misc of tbuild's user namespace\)$/m,
    );
    expect(listed.stdout).toMatch(/^linux\/amd64 +native$/m);
    const opted = world.tbuild("rootless", store, ["version", "--platforms"], {
      env: { TBUILD_NO_USERNS_BINFMT: "1" },
    });
    expect(opted.stdout).toMatch(/^linux\/arm64 +qemu-aarch64-static \(mounted into steps\)$/m);
  });

  it("with TBUILD_NO_USERNS_BINFMT=1 a step runs under the mounted emulator, and a program it starts fails as before", () => {
    const store = storeWithArm64("rootless");
    const env = { TBUILD_NO_USERNS_BINFMT: "1" };
    const mounted = buildFiles("rootless", store, `FROM busybox-arm64\nRUN ${HOW} > /how\n`, env);
    expect(mounted.built.status, mounted.built.stderr).toBe(0);
    expect(mounted.read("how")).toBe("mounted\n");
    const child = buildFiles("rootless", store, "FROM busybox-arm64\nRUN sleep 0 && uname -m > /arch\n", env);
    expect(child.built.status).toBe(1);
    expect(child.built.stderr).toMatch(/Exec format error/);
  });

  it("a handler one tbuild registered is never another tbuild's: the host's table and other builds do not see it", async () => {
    const store = storeWithArm64("rootless");
    const before = hostEntries();
    // A running container of a rootless tbuild whose handler is registered (its shell ran `sleep 0`).
    const holder = world.spawnTbuild("rootless", store, [
      "run",
      "--rm",
      "--platform",
      "linux/arm64",
      "busybox-arm64",
      "sh",
      "-c",
      "sleep 0 && echo ready && exec sleep 100000",
    ]);
    let stdout = "";
    let stderr = "";
    holder.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => holder.once("exit", (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on("data", (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes("ready\n")) resolve();
      });
      void exited.then(() => reject(new Error(`the holder exited: ${stdout}${stderr}`)));
    });
    try {
      expect(hostEntries()).toEqual(before);
      // Other tbuild processes, rootless and root, with no emulator of their own: nothing runs arm64.
      for (const mode of MODES) {
        const other = storeWithArm64(mode);
        const empty = world.dir("no-emulators", mode);
        const tried = buildFiles(mode, other, "FROM busybox-arm64\nRUN uname -m > /arch\n", {
          TBUILD_QEMU_DIR: empty,
        });
        expect(tried.built.status, `${mode}: ${tried.built.stderr}`).toBe(1);
        expect(tried.built.stderr).toContain(
          `ERROR: cannot run a linux/arm64 step on this linux/amd64 host: no binfmt_misc handler and no qemu-aarch64-static in $TBUILD_QEMU_DIR (${empty})`,
        );
      }
    } finally {
      holder.kill("SIGTERM");
      await exited;
    }
    expect(hostEntries()).toEqual(before);
    world.expectStoreUsable("rootless", store);
  });
});

/**
 * Registers Debian's qemu-arm handler (F flag) on the host for the time of `body`, then removes it
 * (and unmounts binfmt_misc when this mounted it). Call with the binfmt lock held.
 */
function withHostArmHandler(body: () => void): void {
  const entry = `${BINFMT}/qemu-arm`;
  const mountedHere = !existsSync(`${BINFMT}/register`);
  if (mountedHere) execFileSync("mount", ["-t", "binfmt_misc", "binfmt_misc", BINFMT]);
  const existed = existsSync(entry);
  const wasEnabled = existed && /^enabled$/m.test(readFileSync(entry, "utf8"));
  try {
    if (existed) writeFileSync(entry, "1");
    else writeFileSync(`${BINFMT}/register`, readFileSync("/usr/lib/binfmt.d/qemu-arm.conf", "utf8").trim());
    body();
  } finally {
    if (!existed) writeFileSync(entry, "-1");
    else if (!wasEnabled) writeFileSync(entry, "0");
    if (mountedHere) execFileSync("umount", [BINFMT]);
  }
}

describe("tbuild's own binfmt_misc, rootless, with other handlers on the host", () => {
  it("keeps running what the host's handlers ran: an arm program in an arm64 step runs through the host's qemu-arm", () => {
    withHostArmHandler(() => {
      const store = storeWithArm64("rootless");
      const ctx = world.context({
        Dockerfile:
          "FROM busybox-arm64\nCOPY arm /arm\n" +
          "RUN chmod 755 /arm && sleep 0 && /arm && uname -m > /arch && echo ran > /armran\n",
      });
      // An arm (32-bit) program that exits 0, readable by the rootless user.
      writeFileSync(path.join(ctx, "arm"), exitZeroExecutable("linux/arm/v7"), { mode: 0o644 });
      const out = world.dir("out", "rootless");
      const built = world.tbuild("rootless", store, [
        "build",
        "--progress=plain",
        "--platform",
        "linux/arm64",
        "-o",
        `type=local,dest=${out}`,
        ctx,
      ]);
      expect(built.status, built.stderr).toBe(0);
      expect(readFileSync(path.join(out, "arch"), "utf8")).toBe("aarch64\n");
      expect(readFileSync(path.join(out, "armran"), "utf8")).toBe("ran\n");
    });
  });
});

describe("foreign programs started by a foreign program, as root", () => {
  it("root registers nothing: the step runs under the mounted emulator, and a program it starts fails with Exec format error", () => {
    const before = hostEntries();
    const store = storeWithArm64("root");
    const arm = buildFiles("root", store, CHILDREN);
    expect(arm.built.status).toBe(1);
    expect(arm.built.stderr).toMatch(/Exec format error/);
    expect(hostEntries()).toEqual(before);
    const listed = world.tbuild("root", store, ["version", "--platforms"]);
    expect(listed.stdout).toMatch(/^linux\/arm64 +qemu-aarch64-static \(mounted into steps\)$/m);
    world.expectStoreUsable("root", store);
  });
});

describe.each(MODES)("a hostile arm64 step (%s)", (mode) => {
  it("cannot mount binfmt_misc nor register or change a handler; the next step runs as before", () => {
    const before = hostEntries();
    const canary = world.canary(mode);
    const store = storeWithArm64(mode);
    const B = BINFMT;
    const attack = buildFiles(
      mode,
      store,
      "FROM busybox-arm64\n" +
        // Each try is a builtin or an applet of the step's own (emulated) shell.
        `RUN (mount -t binfmt_misc binfmt_misc ${B}) 2>> /tried; ` +
        `(mkdir -p /mnt/b && mount -t binfmt_misc binfmt_misc /mnt/b) 2>> /tried; ` +
        `(echo ':evil:M::\\x7fELF::/bin/busybox:F' > ${B}/register) 2>> /tried; ` +
        `(echo 0 > ${B}/status) 2>> /tried; ` +
        `(echo -1 > ${B}/tbuild-qemu-aarch64) 2>> /tried; ` +
        "(mount -o remount,rw /proc/sys) 2>> /tried; " +
        `ls ${B} > /listed 2>&1; true\n` +
        "RUN sleep 0 && uname -m > /arch\n",
    );
    if (mode === "root") {
      // Root's first step runs under the mounted emulator; its second step's child cannot run.
      expect(attack.built.status).toBe(1);
      expect(attack.built.stderr).toMatch(/Exec format error/);
    } else {
      expect(attack.built.status, attack.built.stderr).toBe(0);
      expect(attack.read("arch")).toBe("aarch64\n");
      const tried = attack.read("tried");
      expect(tried.trim().split("\n").length, tried).toBeGreaterThanOrEqual(6);
      expect(tried).toMatch(/permission denied|operation not permitted|read-only file system/i);
      // The step sees no binfmt_misc at all.
      expect(attack.read("listed")).toBe("");
    }
    expect(hostEntries()).toEqual(before);
    canary.expectUntouched(attack.built.stdout, attack.built.stderr);
    world.expectStoreUsable(mode, store);
  });
});

describe("the image a step makes", () => {
  it("is the same whichever way the step ran: own handler, host handler, mounted emulator, root", async () => {
    const imageOf = (dockerfile: string, mode: Mode, env: Record<string, string> = {}) => {
      const store = storeWithArm64(mode);
      const ctx = world.context({ Dockerfile: dockerfile });
      const built = world.tbuild(mode, store, ["build", "-q", "--platform", "linux/arm64", ctx], { env });
      expect(built.status, built.stderr).toBe(0);
      return built.stdout.trim();
    };
    // One program: every way runs it.
    const single = "FROM busybox-arm64\nRUN uname -m > /arch && mkdir -p /made && echo made > /made/file\n";
    // Programs started by the shell: only a handler runs them.
    const children =
      "FROM busybox-arm64\nRUN sleep 0 && /bin/busybox uname -m > /arch && echo made > /file\n";
    const own = imageOf(single, "rootless");
    expect(own).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(imageOf(single, "rootless", { TBUILD_NO_USERNS_BINFMT: "1" })).toBe(own);
    expect(imageOf(single, "root")).toBe(own);
    const ownChildren = imageOf(children, "rootless");
    const restore = withAarch64Handler();
    try {
      expect(imageOf(single, "rootless")).toBe(own);
      expect(imageOf(children, "rootless")).toBe(ownChildren);
      expect(imageOf(children, "root")).toBe(ownChildren);
    } finally {
      restore();
    }
    // Seven emulated builds: longer than the default minute on a loaded 2-core machine.
  }, 300_000);
});
