/**
 * `tbuild run --init`: tini as the container's PID 1, as `docker run --init` has it, root and
 * rootless. It runs the process, passes a SIGTERM on to it (which, not being PID 1, dies of it)
 * and reaps orphans that would otherwise stay zombies.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { findInit } from "../../runtime/init.js";
import { tempDirs } from "../helpers/temp.js";
import { eventually, hostProcesses, type ModeEnv, modes, setUpMode } from "./harness.js";

const tempDir = tempDirs();

describe("finding the init", () => {
  it("names the package to install when no static tini is there", () => {
    const empty = tempDir("no-init");
    expect(() => findInit({ PATH: empty }, path.join(empty, "tini-static"))).toThrow(
      "--init needs tini's static build (/usr/bin/tini-static, or docker-init on PATH), which is not installed: apt-get install tini, or set TBUILD_INIT to a static init",
    );
  });
});

describe.each(modes())("tbuild run --init as $name", (mode) => {
  let env: ModeEnv;
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
  });

  it("makes the init PID 1, running the command after --, as docker's /sbin/docker-init", () => {
    const result = env.run(["run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline"]);
    expect(result.stderr).toBe("");
    expect(result.stdout.split("\0")).toEqual(["/sbin/docker-init", "--", "cat", "/proc/1/cmdline", ""]);
    expect(result.status).toBe(0);
    // The command's exit code is the container's.
    expect(env.run(["run", "--rm", "--init", "busybox", "sh", "-c", "exit 7"]).status).toBe(7);
    // Kept, it is recorded with its init: ps shows the command the user gave.
    const kept = `init-kept-${mode.name}`;
    env.ok(["run", "--init", "--name", kept, "busybox", "true"]);
    expect(env.ok(["ps", "-a"])).toMatch(new RegExp(`"true" .*Exited \\(0\\).* ${kept}`));
    env.ok(["rm", kept]);
    expect(env.mountsInStore()).toEqual([]);
  });

  it("reaps an orphan that exits, where PID 1 would otherwise leave it a zombie", () => {
    // The process is busybox xargs, which waits for its own child only (a shell would reap any):
    // without an init, as PID 1, it would leave the orphan a zombie. Its child makes the orphan,
    // which holds the pipe's write end: the read ends when it has exited. Then the child looks (a
    // bounded number of times) for the orphan's zombie to be gone.
    const script = [
      "(sh -c 'exec sleep 0' &) | cat",
      "n=0",
      'while ps -o stat= | grep -q "^Z"; do n=$((n+1)); [ $n -gt 200 ] && break; sleep 0.05; done',
      'if ps -o stat= | grep -q "^Z"; then echo zombie; else echo reaped; fi',
    ].join("\n");
    expect(env.ok(["run", "--rm", "--init", "busybox", "xargs", "sh", "-c", script])).toBe("reaped\n");
  });

  it("ends at once with exit code 143 when the foreground run is sent SIGTERM, the command being sleep", async () => {
    const marker = `1000${mode.name === "root" ? 1 : 2}${process.pid}`;
    const run = env.spawn(["run", "--rm", "--init", "busybox", "sleep", marker]);
    // The process runs once a sleep of this marker is on the host.
    expect(await eventually(() => hostProcesses().some((p) => p === `sleep ${marker}`), 60_000)).toBe(true);
    process.kill(await run.tbuildPid(), "SIGTERM");
    const { code } = await run.exited;
    expect(run.output().stderr).toBe("");
    expect(code).toBe(143);
    expect(hostProcesses().some((p) => p.includes(marker))).toBe(false);
    expect(env.mountsInStore()).toEqual([]);
  });

  it("refuses a TBUILD_INIT that is not an executable file, and records no container", () => {
    const result = env.run(["run", "--init", "--name", "init-missing", "busybox", "true"], {
      env: { TBUILD_INIT: "/nonexistent/tini" },
    });
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split("\n")).toEqual([
      "ERROR: TBUILD_INIT=/nonexistent/tini: not an executable file at an absolute path; point it at a static init such as /usr/bin/tini-static",
    ]);
    expect(env.ok(["ps", "-a"])).not.toMatch(/init-missing/);
  });

  it("stores --log-opt in the container's record, and refuses a bad one with a usage error", () => {
    const name = `log-opts-${mode.name}`;
    env.ok([
      "run",
      "--log-opt",
      "max-size=20m",
      "--log-opt",
      "max-file=5",
      "--name",
      name,
      "busybox",
      "true",
    ]);
    const id = env.ok(["ps", "-a", "--format", "json"]).match(/"id": "([a-f0-9]{64})"/)![1]!;
    const record = JSON.parse(readFileSync(path.join(env.store, "containers", id, "container.json"), "utf8"));
    expect(record.logOptions).toEqual({ maxSize: 20 * 1024 * 1024, maxFile: 5 });
    env.ok(["rm", name]);
    const bad = env.run(["run", "--rm", "--log-opt", "max-size=big", "busybox", "true"]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^ERROR: --log-opt max-size=big: max-size is a positive size/);
  });
});
