import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { Manifest } from "../../oci/spec.js";
import { tbuildBin } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";
import { eventually, hostProcesses, type ModeEnv, modes, setUpMode } from "./harness.js";

const tempDir = tempDirs();

/** The entries of a layer blob, as `tar -tv --numeric-owner` lists them. */
function layerListing(store: string, digest: string): string[] {
  const blob = path.join(store, "blobs", digest.replace(":", "/"));
  return execFileSync("tar", ["-tvzf", blob, "--numeric-owner"], { encoding: "utf8" }).split("\n");
}

describe.each(modes())("tbuild run as $name", (mode) => {
  let env: ModeEnv;
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
  });

  it("runs the process as root of the container, whatever user runs tbuild", () => {
    const result = env.run(["run", "--rm", "busybox", "id", "-u"]);
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("0\n");
    expect(result.status).toBe(0);
  });

  it("gives the process pid 1 and shows it no host process", () => {
    const stdout = env.ok(["run", "--rm", "busybox", "sh", "-c", "echo $$; ls /proc | grep '^[0-9]'"]);
    const [pid, ...visible] = stdout.trim().split("\n");
    expect(pid).toBe("1");
    // The shell itself and its `ls` and `grep`: nothing of the host's.
    expect(visible.length).toBeLessThanOrEqual(3);
    expect(visible).toContain("1");
  });

  it("exits with the process's exit code", () => {
    expect(env.run(["run", "--rm", "busybox", "sh", "-c", "exit 7"]).status).toBe(7);
    expect(env.run(["run", "--rm", "busybox", "true"]).status).toBe(0);
  });

  it("exits 127 for a command not found and 126 for one that cannot run, as docker does", () => {
    const missing = env.run(["run", "--rm", "busybox", "no-such-command"]);
    expect(missing.status).toBe(127);
    expect(missing.stderr).toMatch(/"no-such-command": executable file not found/);
    expect(env.run(["run", "--rm", "busybox", "/etc/passwd"]).status).toBe(126);
    // A kept container whose process never started is "created", as docker shows it.
    expect(env.run(["run", "--name", `never-${mode.name}`, "busybox", "no-such-command"]).status).toBe(127);
    expect(env.ok(["ps", "-a"])).toMatch(new RegExp(`Created +never-${mode.name}`));
    env.ok(["rm", `never-${mode.name}`]);
  });

  it("shares the host's network by default, and gives only loopback with --network none", () => {
    const interfaces = (network: string[]) =>
      env
        .ok(["run", "--rm", ...network, "busybox", "sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1"])
        .split("\n")
        .map((name) => name.trim())
        .filter(Boolean)
        .sort();
    expect(interfaces(["--network", "none"])).toEqual(["lo"]);
    const host = readFileSync("/proc/net/dev", "utf8")
      .split("\n")
      .slice(2)
      .map((line) => line.split(":")[0]!.trim())
      .filter(Boolean)
      .sort();
    expect(interfaces([])).toEqual(host);
  });

  it("combines ENTRYPOINT, CMD and the run flags as docker run does", () => {
    expect(env.ok(["run", "--rm", "-i", "busybox"], { input: "echo from-cmd-sh\n" })).toBe("from-cmd-sh\n");
    expect(env.ok(["run", "--rm", "--entrypoint", "echo", "busybox", "a", "b"])).toBe("a b\n");
    expect(env.ok(["run", "--rm", "--entrypoint", "pwd", "busybox"])).toBe("/\n");
    const out = env.ok(
      [
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-e",
        "FROM_HOST",
        "-w",
        "/tmp/work",
        "-u",
        "nobody",
        "busybox",
      ].concat(["sh", "-c", 'echo "$FOO $FROM_HOST $(pwd) $(id -u) $HOME"']),
      { env: { FROM_HOST: "hosts-value" } },
    );
    expect(out).toBe("bar hosts-value /tmp/work 65534 /nonexistent\n");
  });

  it("reads --env-file, and -e wins over it", () => {
    const dir = env.ownedDir("envfile");
    const file = path.join(dir, "vars");
    writeFileSync(file, "# comment\nA=from-file\n\nB=also-file\n");
    execFileSync("chmod", ["644", file]);
    const out = env.ok([
      "run",
      "--rm",
      "--env-file",
      file,
      "-e",
      "B=from-flag",
      "busybox",
      "sh",
      "-c",
      "echo $A $B",
    ]);
    expect(out).toBe("from-file from-flag\n");
  });

  it("keeps stdin open with -i, and gives /dev/null without it", () => {
    expect(env.ok(["run", "--rm", "-i", "busybox", "cat"], { input: "hello\n" })).toBe("hello\n");
    expect(env.ok(["run", "--rm", "busybox", "cat"], { input: "hello\n" })).toBe("");
  });

  it("gives the process a terminal with -t", () => {
    // `script` gives tbuild the terminal a user would have.
    const asUser = env.mode.user ? `runuser -u ${env.mode.user.name} -- ` : "";
    const command = `${asUser}env TBUILD_ROOT=${env.store} TBUILD_CONFIG=/dev/null ${tbuildBin} run --rm -t busybox sh -c 'tty; echo $TERM'`;
    const out = execFileSync("script", ["-qec", command, "/dev/null"], { encoding: "utf8" });
    expect(out.replace(/\r/g, "")).toMatch(/^\/dev\/pts\/\d+\nxterm\n$/);
  });

  it("refuses -t without a terminal, saying so", () => {
    const result = env.run(["run", "--rm", "-t", "busybox", "true"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/-t without a terminal is not supported yet/);
  });

  it("mounts a host directory both ways with -v, read-only with :ro", () => {
    const host = env.ownedDir("bind");
    writeFileSync(path.join(host, "from-host"), "written on the host\n");
    execFileSync("chmod", ["644", path.join(host, "from-host")]);
    const out = env.ok([
      "run",
      "--rm",
      "-v",
      `${host}:/mnt/shared`,
      "busybox",
      "sh",
      "-c",
      "cat /mnt/shared/from-host; stat -c %u /mnt/shared; echo written inside > /mnt/shared/from-container",
    ]);
    // The user's own directory is root's inside, and what root writes inside is the user's outside.
    expect(out).toBe("written on the host\n0\n");
    expect(readFileSync(path.join(host, "from-container"), "utf8")).toBe("written inside\n");
    expect(statSync(path.join(host, "from-container")).uid).toBe(mode.user?.uid ?? process.getuid!());
    const readOnly = env.run([
      "run",
      "--rm",
      "-v",
      `${host}:/mnt/shared:ro`,
      "busybox",
      "touch",
      "/mnt/shared/x",
    ]);
    expect(readOnly.status).not.toBe(0);
    expect(readOnly.stderr).toMatch(/Read-only file system/);
    expect(existsSync(path.join(host, "x"))).toBe(false);
  });

  it("keeps a named volume in the store between runs, seeded from the image on first use", () => {
    env.ok(["run", "--rm", "-v", "data:/var/data", "busybox", "sh", "-c", "echo kept > /var/data/file"]);
    expect(env.ok(["run", "--rm", "-v", "data:/other", "busybox", "cat", "/other/file"])).toBe("kept\n");
    expect(readFileSync(path.join(env.store, "volumes", "data", "_data", "file"), "utf8")).toBe("kept\n");
    // A new volume over /etc starts with the image's /etc, as docker's does.
    const passwd = env.ok(["run", "--rm", "-v", "etc-copy:/etc", "busybox", "head", "-1", "/etc/passwd"]);
    expect(passwd).toBe("root:x:0:0:root:/root:/bin/sh\n");
    expect(existsSync(path.join(env.store, "volumes", "etc-copy", "_data", "group"))).toBe(true);
  });

  it("removes anonymous volumes with a --rm container, and with rm -v (rm alone keeps them, as docker)", () => {
    const dir = path.join(env.store, "volumes");
    const volumes = () => (existsSync(dir) ? readdirSync(dir) : []).filter((n) => /^[a-f0-9]{64}$/.test(n));
    const before = volumes();
    expect(
      env.ok(["run", "--rm", "-v", "/scratch", "busybox", "sh", "-c", "touch /scratch/x; ls /scratch"]),
    ).toBe("x\n");
    expect(volumes()).toEqual(before);
    env.ok(["run", "--name", `anon-${mode.name}`, "-v", "/scratch", "busybox", "touch", "/scratch/x"]);
    expect(volumes().length).toBe(before.length + 1);
    env.ok(["rm", "-v", `anon-${mode.name}`]);
    expect(volumes()).toEqual(before);
    env.ok(["run", "--name", `kept-${mode.name}`, "-v", "/scratch", "busybox", "touch", "/scratch/x"]);
    const [dangling] = volumes().filter((n) => !before.includes(n));
    env.ok(["rm", `kept-${mode.name}`]);
    expect(volumes()).toEqual([...before, dangling].sort());
    env.ok(["volume", "rm", dangling!]);
  });

  it("passes SIGTERM and SIGUSR1 on to the process; its trap decides the exit code", async () => {
    const run = env.spawn([
      "run",
      "--rm",
      "busybox",
      "sh",
      "-c",
      "trap 'echo got USR1' USR1; trap 'echo got TERM; exit 143' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    expect(await eventually(() => run.output().stdout.includes("ready")), JSON.stringify(run.output())).toBe(
      true,
    );
    const pid = await run.tbuildPid();
    process.kill(pid, "SIGUSR1");
    expect(await eventually(() => run.output().stdout.includes("got USR1"))).toBe(true);
    process.kill(pid, "SIGTERM");
    const exit = await run.exited;
    expect(run.output().stdout).toBe("ready\ngot USR1\ngot TERM\n");
    expect(exit.code).toBe(143);
    expect(env.mountsInStore()).toEqual([]);
  });

  it("keeps a container without --rm: ps -a lists it, commit makes an image of its changes, rm removes it", () => {
    const run = env.run([
      "run",
      "--name",
      "changed",
      "busybox",
      "sh",
      "-c",
      "echo hello > /greeting; chown 1234:1234 /greeting; rm /bin/vi; exit 3",
    ]);
    expect(run.status).toBe(3);
    expect(env.ok(["ps"])).not.toMatch(/changed/);
    const listed = JSON.parse(env.ok(["ps", "-a", "--format", "json"])) as {
      id: string;
      name: string;
      image: string;
      state: string;
      exitCode: number;
      command: string;
    }[];
    const entry = listed.find((c) => c.name === "changed");
    expect(entry).toMatchObject({ image: "busybox", state: "exited", exitCode: 3 });
    expect(entry!.command).toMatch(/^sh -c echo hello/);
    expect(env.ok(["ps", "-a"])).toMatch(/Exited \(3\).*changed/);

    env.ok(["commit", "-c", 'CMD ["cat", "/greeting"]', "-m", "greeting added", "changed", "greeted:1"]);
    const inspected = JSON.parse(env.ok(["inspect", "greeted:1"])) as {
      manifest: Manifest;
      config: { config: { Cmd: string[] }; history: { created_by?: string; comment?: string }[] };
    };
    expect(inspected.manifest.layers).toHaveLength(2);
    expect(inspected.config.config.Cmd).toEqual(["cat", "/greeting"]);
    expect(inspected.config.history.at(-1)).toMatchObject({ comment: "greeting added" });
    expect(inspected.config.history.at(-1)!.created_by).toMatch(/^sh -c echo hello/);
    const listing = layerListing(env.store, inspected.manifest.layers[1]!.digest);
    expect(listing.find((line) => / greeting$/.test(line))).toMatch(/^-rw-r--r-- 1234\/1234 /);
    expect(listing.some((line) => / bin\/\.wh\.vi$/.test(line))).toBe(true);
    // The committed image runs with the change, and its new CMD.
    expect(env.ok(["run", "--rm", "greeted:1"])).toBe("hello\n");
    expect(env.run(["run", "--rm", "greeted:1", "ls", "/bin/vi"]).status).toBe(1);

    const id = entry!.id;
    expect(existsSync(path.join(env.store, "snapshots", "mounts", id))).toBe(true);
    expect(env.ok(["rm", "changed"])).toBe("changed\n");
    expect(existsSync(path.join(env.store, "snapshots", "mounts", id))).toBe(false);
    expect(existsSync(path.join(env.store, "containers", id))).toBe(false);
    expect(env.ok(["ps", "-a"])).not.toMatch(/changed/);
    const again = env.run(["rm", "changed"]);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/no container changed/);
  });

  it("refuses a second container of the same name", () => {
    env.ok(["run", "--name", "twice", "busybox", "true"]);
    const second = env.run(["run", "--name", "twice", "busybox", "true"]);
    expect(second.status).toBe(1);
    expect(second.stderr).toMatch(/name twice is already used/);
    env.ok(["rm", "twice"]);
  });

  it("leaves no mount and no process behind when tbuild is killed with SIGKILL", async () => {
    const marker = 4000 + Math.floor(Math.random() * 1000);
    const kept = env.spawn(["run", "--name", `killed-${mode.name}`, "busybox", "sleep", `${marker}`]);
    const removed = env.spawn(["run", "--rm", "busybox", "sleep", `${marker + 1}`]);
    const running = (n: number) => hostProcesses().some((args) => args === `sleep ${n}`);
    expect(await eventually(() => running(marker)), JSON.stringify(kept.output())).toBe(true);
    expect(await eventually(() => running(marker + 1)), JSON.stringify(removed.output())).toBe(true);
    process.kill(await kept.tbuildPid(), "SIGKILL");
    process.kill(await removed.tbuildPid(), "SIGKILL");
    await Promise.all([kept.exited, removed.exited]);
    expect(await eventually(() => !running(marker) && !running(marker + 1))).toBe(true);
    expect(await eventually(() => env.mountsInStore().length === 0)).toBe(true);
    // The kept container is shown as exited (its code unknown), and removable; the --rm one is gone.
    const containers = () => readdirSync(path.join(env.store, "containers"));
    expect(await eventually(() => containers().length === 1)).toBe(true);
    expect(env.ok(["ps", "-a"])).toMatch(new RegExp(`Exited \\(unknown\\).*killed-${mode.name}`));
    env.ok(["rm", `killed-${mode.name}`]);
    expect(containers()).toEqual([]);
    expect(readdirSync(path.join(env.store, "snapshots", "mounts"))).toEqual([]);
  });

  it("leaves no mount and no process behind when tbuild is stopped with SIGTERM", async () => {
    const marker = `${5000 + Math.floor(Math.random() * 1000)}`;
    const run = env.spawn([
      "run",
      "--rm",
      "busybox",
      "sh",
      "-c",
      `trap 'exit 1' TERM; sleep ${marker} & wait`,
    ]);
    const running = () => hostProcesses().some((args) => args === `sleep ${marker}`);
    expect(await eventually(running), JSON.stringify(run.output())).toBe(true);
    process.kill(await run.tbuildPid(), "SIGTERM");
    expect((await run.exited).code).toBe(1);
    expect(running()).toBe(false);
    expect(env.mountsInStore()).toEqual([]);
    expect(readdirSync(path.join(env.store, "containers"))).toEqual([]);
  });

  it("removes a running container with rm -f, and refuses without -f", async () => {
    const marker = `${6000 + Math.floor(Math.random() * 1000)}`;
    const run = env.spawn(["run", "--name", `forced-${mode.name}`, "busybox", "sleep", marker]);
    const running = () => hostProcesses().some((args) => args === `sleep ${marker}`);
    expect(await eventually(running), JSON.stringify(run.output())).toBe(true);
    expect(env.ok(["ps"])).toMatch(new RegExp(`"sleep ${marker}".*Up .*forced-${mode.name}`));
    const refused = env.run(["rm", `forced-${mode.name}`]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/is running/);
    const forced = await env.runAsync(["rm", "-f", `forced-${mode.name}`]);
    expect(forced.stderr).toBe("");
    expect(forced.stdout).toBe(`forced-${mode.name}\n`);
    await run.exited;
    expect(running()).toBe(false);
    expect(await eventually(() => env.mountsInStore().length === 0)).toBe(true);
    expect(env.ok(["ps", "-a"])).not.toMatch(/forced/);
  });

  it("says what is wrong with an image that is nowhere", () => {
    const result = env.run(["run", "--rm", "127.0.0.1:1/nothing-here", "true"]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/127\.0\.0\.1:1/);
  });
});
