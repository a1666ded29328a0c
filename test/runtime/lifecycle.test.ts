/**
 * Detached containers and their lifecycle, as a CI job uses them: `run -d`, `exec`, `stop`,
 * `start`, `restart`, `kill`, `wait`, and what happens when tbuild's own processes die. Each check
 * runs as root and rootless.
 */
import { readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuildBin } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";
import { runOnTerminal } from "../helpers/terminal.js";
import { eventually, hostProcesses, type ModeEnv, modes, monitorsOf, setUpMode } from "./harness.js";

const tempDir = tempDirs();

/** A PID 1 that ends with `code` on `signal` (a shell's trap runs at once while it `wait`s). */
function exitsOn(signal: string, code: number): string[] {
  return ["sh", "-c", `trap 'exit ${code}' ${signal}; sleep 1000 & wait`];
}

describe.each(modes())("detached containers as $name", (mode) => {
  let env: ModeEnv;
  const started: string[] = [];
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
  });
  afterAll(() => {
    for (const name of started) env.run(["rm", "-f", name]);
  });

  /** `run -d --name NAME ...`: the ID it printed. */
  function runDetached(name: string, args: string[]): string {
    started.push(name);
    const result = env.run(["run", "-d", "--name", name, ...args]);
    if (result.status !== 0) throw new Error(`run -d exited ${result.status}: ${result.stderr}`);
    return result.stdout.trim();
  }

  function record(name: string): { id: string; state: { status: string; pid?: number; exitCode?: number } } {
    const id = readlinkSync(path.join(env.store, "container-names", name));
    return JSON.parse(readFileSync(path.join(env.store, "containers", id, "container.json"), "utf8"));
  }

  function status(name: string): string {
    const line = env
      .ok(["ps", "-a"])
      .split("\n")
      .find((l) => l.trimEnd().endsWith(` ${name}`));
    return line ?? "";
  }

  it("run -d prints the container's ID and returns while the container runs on", () => {
    const name = `up-${mode.name}`;
    const id = runDetached(name, ["busybox", "sleep", "1000"]);
    expect(id).toMatch(/^[a-f0-9]{64}$/);
    expect(status(name)).toMatch(/ Up /);
    // The container's hostname is its short ID, as docker's.
    expect(env.ok(["exec", name, "cat", "/etc/hostname"])).toBe(`${id.slice(0, 12)}\n`);
    // No tbuild command is left running: only the container's monitor.
    expect(hostProcesses().filter((p) => p.includes(" run -d --name ") && p.includes(name))).toEqual([]);
  });

  it("stop sends the stop signal: a container that handles it ends with its own exit code", () => {
    const name = `term-${mode.name}`;
    runDetached(name, ["busybox", ...exitsOn("TERM", 3)]);
    expect(env.ok(["stop", "-t", "300", name])).toBe(`${name}\n`);
    expect(status(name)).toMatch(/Exited \(3\) /);
    expect(env.ok(["wait", name])).toBe("3\n");
  });

  it("stop kills a PID 1 that ignores the stop signal once the grace period is over (Exited (137))", () => {
    const name = `deaf-${mode.name}`;
    runDetached(name, ["busybox", "sleep", "1000"]);
    env.ok(["stop", "-t", "1", name]);
    expect(status(name)).toMatch(/Exited \(137\) /);
  });

  it("stop sends --stop-signal (or the image's STOPSIGNAL) instead of SIGTERM", () => {
    const name = `usr1-${mode.name}`;
    runDetached(name, ["--stop-signal", "USR1", "busybox", ...exitsOn("USR1", 5)]);
    env.ok(["stop", "-t", "300", name]);
    expect(status(name)).toMatch(/Exited \(5\) /);
  });

  it("start runs a stopped container again on its own changes; restart and kill -s too", () => {
    const name = `again-${mode.name}`;
    runDetached(name, ["busybox", ...exitsOn("TERM", 0)]);
    env.ok(["exec", name, "sh", "-c", "echo kept > /kept"]);
    env.ok(["stop", name]);
    expect(env.ok(["start", name])).toBe(`${name}\n`);
    expect(status(name)).toMatch(/ Up /);
    expect(env.ok(["exec", name, "cat", "/kept"])).toBe("kept\n");
    env.ok(["restart", name]);
    expect(env.ok(["exec", name, "cat", "/kept"])).toBe("kept\n");
    // A signal the shell traps: it ends with the trap's code, which wait prints.
    env.ok(["kill", "-s", "TERM", name]);
    expect(env.ok(["wait", name])).toBe("0\n");
    expect(status(name)).toMatch(/Exited \(0\) /);
  });

  it("kill sends SIGKILL by default; stop, kill and exec of a stopped container say it is not running", () => {
    const name = `kill-${mode.name}`;
    runDetached(name, ["busybox", "sleep", "1000"]);
    env.ok(["kill", name]);
    expect(env.ok(["wait", name])).toBe("137\n");
    const exec = env.run(["exec", name, "true"]);
    expect(exec.status).toBe(1);
    expect(exec.stderr).toBe(`ERROR: container ${name} is not running\n`);
    expect(env.run(["kill", name]).stderr).toBe(`ERROR: container ${name} is not running\n`);
    // Stopping a stopped container is no error, as docker's.
    expect(env.run(["stop", name]).status).toBe(0);
  });

  it("exec runs as -u, in -w, with -e and -i, and exits as docker exec does", () => {
    const name = `exec-${mode.name}`;
    runDetached(name, ["-e", "FROM_RUN=1", "busybox", "sleep", "1000"]);
    expect(env.ok(["exec", name, "id", "-u"])).toBe("0\n");
    expect(env.ok(["exec", "-u", "nobody", name, "id", "-un"])).toBe("nobody\n");
    expect(env.ok(["exec", "-w", "/tmp", name, "pwd"])).toBe("/tmp\n");
    expect(
      env.ok(["exec", "-e", "FROM_RUN=2", "-e", "MORE=x", name, "sh", "-c", "echo $FROM_RUN$MORE"]),
    ).toBe("2x\n");
    expect(env.ok(["exec", name, "sh", "-c", "echo $FROM_RUN"])).toBe("1\n");
    expect(env.ok(["exec", "-i", name, "cat"], { input: "through stdin\n" })).toBe("through stdin\n");
    expect(env.ok(["exec", name, "cat"], { input: "not passed\n" })).toBe("");
    expect(env.run(["exec", name, "sh", "-c", "exit 9"]).status).toBe(9);
    const missing = env.run(["exec", name, "no-such-command"]);
    expect(missing.status).toBe(127);
    expect(missing.stderr).toMatch(/"no-such-command": executable file not found/);
    // The exec'd process is in the container: it sees the container's PID 1, not the host's.
    expect(env.ok(["exec", name, "cat", "/proc/1/cmdline"])).toBe("sleep\u00001000\u0000");
  });

  it("exec -it gives the process a terminal of the caller's size, with TERM set", () => {
    const name = `tty-${mode.name}`;
    runDetached(name, ["busybox", "sleep", "1000"]);
    const argv = [tbuildBin, "exec", "-it", name, "sh", "-c", "tty; stty size; echo TERM=$TERM"];
    const { PATH = "/usr/bin:/bin" } = process.env;
    const asUser = mode.user
      ? ["runuser", "-u", mode.user.name, "--", "env", `TBUILD_ROOT=${env.store}`, ...argv]
      : ["env", `TBUILD_ROOT=${env.store}`, ...argv];
    const result = runOnTerminal(asUser, {
      env: { PATH, HOME: mode.user?.home ?? "/root" },
      columns: 97,
      rows: 31,
    });
    // A NUL runc's console relay sometimes sends shows as nothing, or as its echo `^@`: not text.
    const output = result.output.toString().replaceAll("\u0000", "").replaceAll("^@", "");
    expect(result.status, output).toBe(0);
    expect(output).toMatch(/\/dev\/pts\/\d+\r?\n31 97\r?\nTERM=xterm\r?\n/);
  });

  it("--restart takes no only, as there is no daemon to restart anything", () => {
    const refused = env.run(["run", "-d", "--restart", "always", "busybox", "true"]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^ERROR: --restart always: restart policies are not supported yet/);
    const name = `restart-no-${mode.name}`;
    runDetached(name, ["--restart", "no", "busybox", "true"]);
    expect(env.ok(["wait", name])).toBe("0\n");
  });

  it("run -d of a command not found fails as run does (127) and leaves the container Created", () => {
    const name = `missing-${mode.name}`;
    started.push(name);
    const result = env.run(["run", "-d", "--name", name, "busybox", "no-such-command"]);
    expect(result.status).toBe(127);
    expect(result.stderr).toMatch(/"no-such-command": executable file not found/);
    expect(status(name)).toMatch(/ Created /);
  });

  it("a container whose monitor is killed outright is stopped and cleaned up; rm then works", async () => {
    const name = `orphan-${mode.name}`;
    const id = runDetached(name, ["busybox", "sleep", "1000"]);
    const monitor = record(name).state.pid!;
    expect(monitor).toBeGreaterThan(0);
    process.kill(monitor, "SIGKILL");
    // The container's guard kills it: no runc process for it is left, and nothing is mounted.
    const sandboxId = id.slice(0, 32);
    expect(await eventually(() => !hostProcesses().some((p) => p.includes(sandboxId)))).toBe(true);
    expect(status(name)).toMatch(/Exited /);
    env.ok(["rm", name]);
    expect(env.mountsInStore()).toEqual([]);
  });

  it("SIGTERM to a foreground tbuild run stops its container even when PID 1 ignores the signal", async () => {
    const name = `fg-${mode.name}`;
    started.push(name);
    const spawned = env.spawn(["run", "--name", name, "--stop-timeout", "1", "busybox", "sleep", "1000"]);
    // Running its command (exec reaches it), not only recorded as running.
    expect(await eventually(() => env.run(["exec", name, "true"]).status === 0)).toBe(true);
    process.kill(await spawned.tbuildPid(), "SIGTERM");
    const { code } = await spawned.exited;
    expect(code).toBe(137);
    expect(status(name)).toMatch(/Exited \(137\) /);
  });

  it("tbuild stop reaches a container running in the foreground of another tbuild", async () => {
    const name = `fg-stop-${mode.name}`;
    started.push(name);
    const spawned = env.spawn(["run", "--name", name, "busybox", ...exitsOn("TERM", 4)]);
    // Running its command (exec reaches it), not only recorded as running.
    expect(await eventually(() => env.run(["exec", name, "true"]).status === 0)).toBe(true);
    env.ok(["stop", name]);
    expect((await spawned.exited).code).toBe(4);
  });

  it("leaves nothing running or mounted once its containers are removed", () => {
    for (const name of started.splice(0)) env.run(["rm", "-f", name]);
    expect(JSON.parse(env.ok(["ps", "-a", "--format", "json"]))).toEqual([]);
    expect(env.mountsInStore()).toEqual([]);
    expect(monitorsOf(env.store)).toEqual([]);
  });
});
