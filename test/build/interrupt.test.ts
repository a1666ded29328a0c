/**
 * One Ctrl-C (a single SIGINT to tbuild) during a RUN: the build stops the step's container,
 * unmounts and removes what it made, says it was interrupted and exits 130, as root and rootless
 * (where tbuild runs again inside a user namespace and the signal must reach that inner process).
 */
import { chownSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tempDirs } from "../helpers/temp.js";
import { eventually, hostProcesses, modes, setUpMode } from "../runtime/harness.js";

const tempDir = tempDirs();

// The nap is a build arg, so the interrupted build's container is found by its command line
// (`sleep 86313`), and the next build of the same Dockerfile (no nap) ends at once.
const DOCKERFILE = "FROM busybox\nARG NAP=0\nRUN echo $((6*7))-begun && sleep $NAP && echo done > /done\n";
const NAP = "86313";

describe.each(modes())("one SIGINT during a RUN ($name)", (mode) => {
  it("exits 130 saying so, leaves no mount, container or runc state, and the next build works", async () => {
    const env = await setUpMode(mode, tempDir);
    const dir = env.ownedDir("ctx");
    writeFileSync(path.join(dir, "Dockerfile"), DOCKERFILE);
    if (mode.user) chownSync(path.join(dir, "Dockerfile"), mode.user.uid, mode.user.gid);

    const build = env.spawn(["build", "--no-cache", "--progress=plain", "--build-arg", `NAP=${NAP}`, dir]);
    // The step's own output (the shell's arithmetic, not the echoed command line) means it runs.
    const running = await eventually(() => /^#\d+ [\d.]+ 42-begun$/m.test(build.output().stderr), 60_000);
    expect(running, build.output().stderr).toBe(true);
    process.kill(await build.tbuildPid(), "SIGINT");
    const { code } = await build.exited;

    const { stderr } = build.output();
    expect(code, stderr).toBe(130);
    expect(stderr).toContain("ERROR: interrupted by SIGINT");
    expect(env.mountsInStore()).toEqual([]);
    expect(
      hostProcesses().filter((args) => args.includes(`sleep ${NAP}`) || args.includes(env.store)),
    ).toEqual([]);
    // The build's state directory (runc's state, bundles) is gone with it.
    expect(readdirSync(env.store).filter((name) => name.startsWith("tmp-"))).toEqual([]);

    env.ok(["build", "-t", "after-interrupt:1", dir]);
    expect(env.ok(["run", "--rm", "after-interrupt:1", "cat", "/done"])).toBe("done\n");
  });
});
