/**
 * `tbuild run` of a foreign-platform image (linux/arm64 on this amd64 host), as root and rootless:
 * without a binfmt_misc handler its process starts under Debian's qemu-aarch64-static, mounted
 * read-only into the container as a build's RUN step has it (worker/emulation.ts); with the
 * kernel's handler nothing is mounted; with neither, the one-line E_NO_EMULATOR error. The image
 * is a two-platform index of Debian's busybox-static for amd64 and arm64, as `docker run
 * --platform` users pull one. Every case holds the binfmt lock (test/hostile/binfmt.ts) for the
 * file and sets the handler state it needs, so the cases do not depend on their order or on
 * other files running at once.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild, tbuildBin } from "../helpers/cli.js";
import { importArm64Busybox, importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";
import {
  aarch64HandlerEnabled,
  lockBinfmt,
  withAarch64Handler,
  withoutAarch64Handler,
} from "../hostile/binfmt.js";
import { type ModeEnv, modes, type SpawnedTbuild, setUpMode } from "./harness.js";

const tempDir = tempDirs();
const ARM64 = ["--platform", "linux/arm64"];
/** Says how the process was started: the emulator's file is there only when tbuild mounted it. */
const HOW = "if [ -e /dev/.tbuild-qemu-emulator ]; then echo mounted; else echo kernel; fi";

let release: () => Promise<void>;
let archive: string;
beforeAll(async () => {
  release = await lockBinfmt();
  // The two-platform index `multi` (busybox for amd64 and for arm64, CMD sh), saved once for
  // every mode's store to load.
  const dir = tempDir("rt-emu-image");
  const store = path.join(dir, "store");
  mkdirSync(store);
  await importBusybox(store, "bb-amd64");
  await importArm64Busybox(store, "bb-arm64");
  const ctx = path.join(dir, "ctx");
  mkdirSync(ctx);
  writeFileSync(path.join(ctx, "Dockerfile"), "FROM bb-$TARGETARCH\n");
  const env = { TBUILD_ROOT: store };
  const built = tbuild(["build", "-q", "--platform", "linux/amd64,linux/arm64", "-t", "multi", ctx], { env });
  expect(built.status, built.stderr).toBe(0);
  archive = path.join(dir, "multi.tar");
  const saved = tbuild(["save", "-o", archive, "multi"], { env });
  expect(saved.status, saved.stderr).toBe(0);
  execFileSync("chmod", ["755", dir]);
  execFileSync("chmod", ["644", archive]);
}, 600_000);
afterAll(async () => {
  await release?.();
});

/** Resolves once `run` has printed `text`; rejects if it exits first. */
function printed(run: SpawnedTbuild, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (run.output().stdout.includes(text)) {
        run.child.stdout!.off("data", check);
        resolve();
      }
    };
    run.child.stdout!.on("data", check);
    check();
    void run.exited.then(() => {
      check();
      reject(new Error(`tbuild exited before printing ${text}: ${JSON.stringify(run.output())}`));
    });
  });
}

describe.each(modes())("tbuild run of a linux/arm64 image as $name", (mode) => {
  let env: ModeEnv;
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
    env.ok(["load", "-i", archive]);
  }, 300_000);

  describe("without a binfmt_misc handler", () => {
    let restore: () => void;
    beforeAll(() => {
      restore = withoutAarch64Handler();
      expect(aarch64HandlerEnabled()).toBe(false);
      // Rootless, tbuild would rather register a handler of its own (test/hostile/userns-binfmt.test.ts):
      // these cases are of the mounted emulator, its fallback.
      env.baseEnv = { TBUILD_NO_USERNS_BINFMT: "1" };
    });
    afterAll(() => {
      env.baseEnv = {};
      restore?.();
    });

    it("runs the process under the mounted qemu-aarch64-static: uname -m prints aarch64", () => {
      const result = env.run(["run", "--rm", ...ARM64, "multi", "uname", "-m"]);
      expect(result.stderr).toBe("");
      expect(result.stdout).toBe("aarch64\n");
      expect(result.status).toBe(0);
      expect(env.ok(["run", "--rm", ...ARM64, "multi", "sh", "-c", HOW])).toBe("mounted\n");
      // The same index's amd64 image runs natively: nothing mounted.
      expect(env.ok(["run", "--rm", "--platform", "linux/amd64", "multi", "uname", "-m"])).toBe("x86_64\n");
      expect(env.ok(["run", "--rm", "--platform", "linux/amd64", "multi", "sh", "-c", HOW])).toBe("kernel\n");
    });

    it("runs a detached foreign container; exec starts foreign programs in it through the emulator", () => {
      const name = `emu-detached-${mode.name}`;
      env.ok(["run", "-d", ...ARM64, "--name", name, "multi", "sleep", "1000"]);
      try {
        expect(env.ok(["exec", name, "uname", "-m"])).toBe("aarch64\n");
        expect(env.ok(["exec", name, "sh", "-c", HOW])).toBe("mounted\n");
        const missing = env.run(["exec", name, "no-such-command"]);
        expect(missing.status).toBe(127);
        expect(missing.stderr).toMatch(/"no-such-command": executable file not found in \$PATH/);
      } finally {
        env.run(["rm", "-f", name]);
      }
    });

    it("exits with the foreign process's exit code", () => {
      expect(env.run(["run", "--rm", ...ARM64, "multi", "sh", "-c", "exit 7"]).status).toBe(7);
      expect(env.run(["run", "--rm", ...ARM64, "multi", "true"]).status).toBe(0);
    });

    it("looks the command up through the container's PATH, and exits 127 when it is not there, as docker does", () => {
      const elsewhere = env.run(["run", "--rm", ...ARM64, "-e", "PATH=/nowhere", "multi", "uname", "-m"]);
      expect(elsewhere.status).toBe(127);
      expect(elsewhere.stderr).toMatch(/"uname": executable file not found in \$PATH \(\/nowhere\)/);
      expect(elsewhere.stdout).toBe("");
      // A path is taken as it is, whatever PATH says.
      expect(env.ok(["run", "--rm", ...ARM64, "-e", "PATH=/nowhere", "multi", "/bin/uname", "-m"])).toBe(
        "aarch64\n",
      );
      // A kept container whose process never started is "created", as docker shows it.
      const name = `emu-never-${mode.name}`;
      expect(env.run(["run", "--name", name, ...ARM64, "multi", "no-such-command"]).status).toBe(127);
      expect(env.ok(["ps", "-a"])).toMatch(new RegExp(`Created +${name}`));
      env.ok(["rm", name]);
    });

    it("runs the image's CMD on stdin with -i, and keeps a container without --rm", () => {
      const name = `emu-kept-${mode.name}`;
      const kept = env.run(["run", "--name", name, "-i", ...ARM64, "multi"], { input: "uname -m\nexit 3\n" });
      expect(kept.stdout).toBe("aarch64\n");
      expect(kept.status).toBe(3);
      expect(env.ok(["ps", "-a"])).toMatch(new RegExp(`Exited \\(3\\).* +${name}`));
      env.ok(["rm", name]);
      expect(env.mountsInStore()).toEqual([]);
    });

    it("gives the process a terminal with -t", () => {
      const asUser = env.mode.user ? `runuser -u ${env.mode.user.name} -- ` : "";
      const command = `${asUser}env TBUILD_ROOT=${env.store} TBUILD_CONFIG=/dev/null ${tbuildBin} run --rm -t --platform linux/arm64 multi tty`;
      const out = execFileSync("script", ["-qec", command, "/dev/null"], { encoding: "utf8" });
      expect(out.replace(/\r/g, "")).toMatch(/^\/dev\/pts\/\d+\n$/);
    });

    it("passes signals on to the foreign process; its trap decides the exit code", async () => {
      // Only the shell's builtins: QEMU follows the first process, and `sleep` would be another.
      const run = env.spawn([
        "run",
        "--rm",
        ...ARM64,
        "multi",
        "sh",
        "-c",
        "trap 'echo got USR1' USR1; trap 'echo got TERM; exit 143' TERM; exec 3<>/dev/ptmx; echo ready; while true; do read -t 0.05 x <&3; done",
      ]);
      await printed(run, "ready\n");
      const pid = await run.tbuildPid();
      process.kill(pid, "SIGUSR1");
      await printed(run, "got USR1\n");
      process.kill(pid, "SIGTERM");
      const exit = await run.exited;
      expect(run.output().stdout).toBe("ready\ngot USR1\ngot TERM\n");
      expect(exit.code).toBe(143);
      expect(env.mountsInStore()).toEqual([]);
    });

    it("with no emulator either, fails with the one-line E_NO_EMULATOR error and leaves no container", () => {
      const empty = env.ownedDir("no-emulators");
      const name = `emu-none-${mode.name}`;
      const result = env.run(["run", "--name", name, ...ARM64, "multi", "uname", "-m"], {
        env: { TBUILD_QEMU_DIR: empty },
      });
      expect(result.status).toBe(1);
      expect(result.stdout).toBe("");
      expect(result.stderr).toBe(
        `ERROR: cannot run a linux/arm64 container on this linux/amd64 host: no binfmt_misc handler and no qemu-aarch64-static in $TBUILD_QEMU_DIR (${empty}); install one with apt-get install qemu-user-static\n`,
      );
      expect(env.ok(["ps", "-a"])).not.toContain(name);
      // The store stays usable: the native image still runs.
      expect(env.ok(["run", "--rm", "--platform", "linux/amd64", "multi", "uname", "-m"])).toBe("x86_64\n");
    });

    it("refuses --init under the mounted emulator, saying so in one line, and records no container", () => {
      const name = `emu-init-${mode.name}`;
      const result = env.run(["run", "--init", "--name", name, ...ARM64, "multi", "true"]);
      expect(result.status).toBe(1);
      expect(result.stderr).toBe(
        "ERROR: --init with an image for linux/arm64, which runs under QEMU user emulation here, is not supported yet: drop --init, or register a binfmt_misc handler so the kernel runs it\n",
      );
      expect(env.ok(["ps", "-a"])).not.toContain(name);
    });
  });

  it("with the kernel's aarch64 handler (F flag), runs the process through it: nothing is mounted", async () => {
    const restore = withAarch64Handler();
    try {
      expect(aarch64HandlerEnabled()).toBe(true);
      expect(env.ok(["run", "--rm", ...ARM64, "multi", "uname", "-m"])).toBe("aarch64\n");
      expect(env.ok(["run", "--rm", ...ARM64, "multi", "sh", "-c", HOW])).toBe("kernel\n");
      // The host's tini as PID 1 starts the foreign process through the kernel's handler too.
      expect(env.ok(["run", "--rm", "--init", ...ARM64, "multi", "uname", "-m"])).toBe("aarch64\n");
    } finally {
      restore();
    }
  });
});
