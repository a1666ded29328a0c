/**
 * A two-platform build whose RUN steps run: the amd64 one natively, the arm64 one under QEMU
 * (worker/emulation.ts), root and rootless. The base is a two-platform busybox index in the test
 * registry (Debian's busybox-static for amd64 and for arm64), as a CI job's base image would be;
 * each platform's step picks its own image from it. Judged by the files (`uname -m`) and by podman,
 * which runs the pushed index's arm64 image through the kernel's aarch64 handler.
 */
import { chmodSync, chownSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH, importArm64Busybox, importBusybox } from "../helpers/images.js";
import { PrivatePodman, tbuildAs } from "../helpers/judges.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { lockBinfmt, withAarch64Handler } from "../hostile/binfmt.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const TEST_USER = "tbuild-test";

describe("a two-platform build with RUN steps, one of them emulated", () => {
  let registry: RunningRegistry;
  let base = "";
  // Its arm64 steps are emulated: the machine's binfmt handlers must not change under them.
  let releaseBinfmt: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    releaseBinfmt = await lockBinfmt();
    registry = await startRegistry();
    // The base: one index of busybox for amd64 and for arm64, made and pushed by a build for both.
    const store = tempDir("mpe-base-store");
    await importBusybox(store, "bb-amd64");
    await importArm64Busybox(store, "bb-arm64");
    const dir = tempDir("mpe-base");
    writeFileSync(path.join(dir, "Dockerfile"), "FROM bb-$TARGETARCH\n");
    base = `${registry.host}/library/busybox:multi`;
    const pushed = tbuild(
      ["build", "--progress=plain", "--platform", "linux/amd64,linux/arm64", "-t", base, "--push", dir],
      {
        env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH },
      },
    );
    expect(pushed.status, pushed.stderr).toBe(0);
  }, 180_000);
  afterAll(async () => {
    await registry?.stop();
    await releaseBinfmt?.();
  });

  it.each(["root", "rootless"] as const)(
    "%s: each platform's RUN runs on its own image (x86_64, aarch64), and podman runs the pushed arm64 image",
    async (mode) => {
      const user = mode === "rootless" ? TEST_USER : undefined;
      const work = tempDir(`mpe-${mode}`);
      chmodSync(work, 0o755);
      const store = path.join(work, "store");
      const dir = path.join(work, "project");
      const out = path.join(work, "out");
      mkdirSync(store);
      mkdirSync(dir);
      writeFileSync(path.join(dir, "Dockerfile"), `FROM ${base}\nRUN uname -m > /arch\n`);
      if (user) for (const d of [work, store, dir]) chownSync(d, ...ids(user));
      const ref = `${registry.host}/team/arch-${mode}:1`;
      const built = tbuildAs(user, { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH }, [
        "build",
        "--progress=plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "-t",
        ref,
        "--push",
        "-o",
        `type=local,dest=${out}`,
        dir,
      ]);
      expect(built.status, built.stderr).toBe(0);
      expect(readFileSync(path.join(out, "linux_amd64", "arch"), "utf8")).toBe("x86_64\n");
      expect(readFileSync(path.join(out, "linux_arm64", "arch"), "utf8")).toBe("aarch64\n");

      // podman runs a foreign image only through the kernel: with the aarch64 handler registered.
      {
        const restore = withAarch64Handler();
        try {
          const podman = new PrivatePodman(tempDir(`mpe-podman-${mode}`));
          podman.pull(ref, "linux/arm64");
          const ran = podman.runOn("linux/arm64", ref, "cat", "/arch");
          expect(ran.status, ran.stderr).toBe(0);
          expect(ran.stdout).toBe("aarch64\n");
          // tbuild run --platform picks that platform's image of the index in the store.
          for (const [platform, machine] of [
            ["linux/arm64", "aarch64"],
            ["linux/amd64", "x86_64"],
          ] as const) {
            const own = tbuildAs(user, { TBUILD_ROOT: store }, [
              "run",
              "--rm",
              "--platform",
              platform,
              ref,
              "cat",
              "/arch",
            ]);
            expect(own.status, own.stderr).toBe(0);
            expect(own.stdout).toBe(`${machine}\n`);
          }
        } finally {
          restore();
        }
      }
    },
    300_000,
  );
});

/** The uid and gid of `user`. */
function ids(user: string): [number, number] {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`no user ${user}: run .ci/install`);
  const [, , uid, gid] = line.split(":");
  return [Number(uid), Number(gid)];
}
