/**
 * A root overlay runc mounts itself (`rootOverlay`), as `tbuild run` asks for: the process sees
 * the layers merged as overlayfs merges them, the image's users are read from the layers before
 * anything is mounted, the process's writes land in the upper directory, a missing working
 * directory is made as `docker run` makes it, and nothing stays mounted after the run.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SandboxRootOverlay } from "../../../worker/sandbox/index.js";
import { hostMountsMentioning, MODES, mountsOf, type Outcome, SandboxHarness } from "./harness.js";

describe.each(MODES)("a root overlay mounted by runc, %s", (mode) => {
  let harness: SandboxHarness;
  let top: string;
  beforeAll(async () => {
    harness = await SandboxHarness.create(mode);
    // A layer over the busybox root: a user of its own in a new /etc/passwd, a new file, and a
    // whiteout (overlayfs's 0:0 character device) hiding /bin/vi.
    top = harness.makeDir("top");
    mkdirSync(path.join(top, "etc"));
    mkdirSync(path.join(top, "bin"));
    const passwd = readFileSync(path.join(harness.rootfs, "etc/passwd"), "utf8");
    writeFileSync(path.join(top, "etc/passwd"), `${passwd}layered:x:4242:4343::/home/layered:/bin/sh\n`);
    writeFileSync(path.join(top, "hello"), "from the top layer\n");
    execFileSync("mknod", [path.join(top, "bin/vi"), "c", "0", "0"]);
    if (mode === "rootless") execFileSync("chown", ["-R", "tbuild-test:tbuild-test", top]);
  });
  afterAll(async () => {
    await harness?.cleanup();
  });

  function overlay(lowers: string[]): { overlay: SandboxRootOverlay; rootfs: string } {
    const dir = harness.makeDir("overlay");
    const [upper, work, rootfs] = ["upper", "work", "rootfs"].map((sub) => path.join(dir, sub)) as [
      string,
      string,
      string,
    ];
    for (const d of [upper, work, rootfs]) mkdirSync(d);
    if (mode === "rootless") execFileSync("chown", ["-R", "tbuild-test:tbuild-test", dir]);
    const options = [
      `lowerdir=${[...lowers].reverse().join(":")}`,
      `upperdir=${upper}`,
      `workdir=${work}`,
      ...(mode === "rootless" ? ["userxattr"] : []),
      "index=off",
      "metacopy=off",
    ];
    return { overlay: { options, layers: [...lowers, upper], upper }, rootfs };
  }

  function expectNothingMounted(outcome: Outcome): void {
    expect(outcome.stateLeft).toEqual([]);
    expect(mountsOf(harness, outcome)).toEqual([]);
    expect(hostMountsMentioning(harness.workDir)).toEqual([]);
  }

  it("shows the layers merged, takes the user from them, and keeps the process's writes in the upper directory", async () => {
    const { overlay: rootOverlay, rootfs } = overlay([harness.rootfs, top]);
    const outcome = await harness.run({
      spec: {
        rootfs,
        rootOverlay,
        workdirOwner: "root",
        user: "layered",
        args: [
          "sh",
          "-c",
          "id -u; id -g; cat /hello; test -e /bin/vi || echo vi-hidden; echo made > /tmp/made",
        ],
      },
    });
    expect(outcome.error).toBeUndefined();
    expect(outcome.stdout).toBe("4242\n4343\nfrom the top layer\nvi-hidden\n");
    expect(outcome.result?.exitCode).toBe(0);
    expect(readFileSync(path.join(rootOverlay.upper, "tmp/made"), "utf8")).toBe("made\n");
    // The empty directory runc mounted over holds nothing, and the layers are untouched.
    expect(readdirSync(rootfs)).toEqual([]);
    expect(existsSync(path.join(harness.rootfs, "tmp/made"))).toBe(false);
    // runc's mount points for /proc, /dev, /sys and /etc/hosts stay out of the changes.
    expect(existsSync(path.join(rootOverlay.upper, "proc"))).toBe(false);
    expectNothingMounted(outcome);
  });

  it("makes a missing working directory as docker run does: root's", async () => {
    const { overlay: rootOverlay, rootfs } = overlay([harness.rootfs]);
    const outcome = await harness.run({
      spec: {
        rootfs,
        rootOverlay,
        workdirOwner: "root",
        user: "app",
        cwd: "/work/dir",
        args: ["sh", "-c", "pwd; stat -c %u:%g ."],
      },
    });
    expect(outcome.stdout).toBe("/work/dir\n0:0\n");
    expect(existsSync(path.join(rootOverlay.upper, "work/dir"))).toBe(true);
    expectNothingMounted(outcome);
  });

  it("says so when runc cannot mount it, and leaves nothing behind", async () => {
    const { overlay: rootOverlay, rootfs } = overlay([path.join(harness.workDir, "no-such-layer")]);
    const outcome = await harness.run({
      spec: { rootfs, rootOverlay, workdirOwner: "root", args: ["true"] },
    });
    expect(outcome.error).toMatchObject({ code: "E_SANDBOX_ROOT_MOUNT" });
    expect(outcome.error?.message).toMatch(/cannot mount the root overlay/);
    expectNothingMounted(outcome);
  });
});
