/**
 * A build killed with SIGKILL cannot clean up: its state directory stays in the store, and so does
 * the container of the step it was running (a `runc init` waiting for ever, when the kill came
 * between runc's create and start). The next build finds them, owner dead, and removes them, as
 * root and rootless (where the whole process group is killed: tbuild, `unshare` and the tbuild
 * re-executed in the user namespace).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tbuildBin } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";
import { eventually, type ModeEnv, modes, setUpMode } from "../runtime/harness.js";

const tempDir = tempDirs();

// The nap is a build arg: the killed build's container is found by its command line (`sleep
// 86417`), and the next build of the same Dockerfile (no nap) ends at once.
const NAP = "86417";
const dockerfile = (user?: string) =>
  `FROM busybox\nARG NAP=0\n${user ? `USER ${user}\n` : ""}RUN echo $((6*7))-begun && sleep $NAP\n`;

/** The build state directories in a store. */
function stateDirs(store: string): string[] {
  return readdirSync(store).filter((name) => name.startsWith("tmp-build-"));
}

/**
 * Host processes of a store's builds: the step's shell and sleep, and any runc process whose state
 * lies in the store (a `runc init` names it in its environment).
 */
function processesOf(store: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      const environ = readFileSync(`/proc/${entry}/environ`, "utf8");
      if (
        cmdline.includes(`sleep ${NAP}`) ||
        cmdline.includes(store) ||
        environ.includes(`_LIBCONTAINER_STATEDIR=${store}`)
      )
        found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** The runc container ids of a build state directory (its runs' ids: worker/ops/exec.ts runs one per id). */
function containerIds(stateDir: string): string[] {
  const sandbox = path.join(stateDir, "sandbox");
  return existsSync(sandbox) ? readdirSync(sandbox) : [];
}

/** The cgroups runc made for a container, as real root (`/tbuild/<id>` in every hierarchy). */
function cgroupsOf(id: string): string[] {
  const root = "/sys/fs/cgroup";
  const hierarchies = existsSync(path.join(root, "cgroup.controllers"))
    ? [root]
    : readdirSync(root).map((name) => path.join(root, name));
  return hierarchies.map((dir) => path.join(dir, "tbuild", id)).filter((dir) => existsSync(dir));
}

/** `tbuild ARGS` in its own process group, as the mode's user, with `pathPrefix` before PATH. */
function spawnInOwnGroup(env: ModeEnv, args: string[], pathPrefix?: string): ChildProcess {
  const basePath = process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  const vars: Record<string, string> = {
    PATH: pathPrefix ? `${pathPrefix}:${basePath}` : basePath,
    TBUILD_ROOT: env.store,
    TBUILD_CONFIG: "/dev/null",
    HOME: env.mode.user?.home ?? process.env.HOME ?? "/",
  };
  const user = env.mode.user;
  const [file, argv] = user
    ? ["runuser", ["-u", user.name, "--", "env", "-i", ...Object.entries(vars).map(([k, v]) => `${k}=${v}`)]]
    : [tbuildBin, []];
  return spawn(file, user ? [...argv, tbuildBin, ...args] : args, {
    env: user ? { PATH: basePath } : vars,
    stdio: ["ignore", "ignore", "pipe"],
    detached: true,
  });
}

/** Kills the build's whole process group at once, as `kill -9 -PGID` would, and waits for its leader. */
async function killGroup(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once("exit", resolve));
  process.kill(-child.pid!, "SIGKILL");
  await exited;
}

/**
 * A runc that creates the container but never starts it (a build killed between runc's create
 * and start): `run` becomes `create`, then it says so in `marker` and waits.
 */
function writeRuncStoppingBeforeStart(dir: string, marker: string): void {
  const runc = execFileSync("sh", ["-c", "command -v runc"], {
    encoding: "utf8",
    env: { PATH: `${process.env.PATH}:/usr/sbin:/sbin` },
  }).trim();
  const file = path.join(dir, "runc");
  writeFileSync(
    file,
    `#!/bin/sh
created=
for arg in "$@"; do
  shift
  if [ "$arg" = run ] && [ -z "$created" ]; then set -- "$@" create; created=1; else set -- "$@" "$arg"; fi
done
[ -n "$created" ] || exec ${runc} "$@"
${runc} "$@" </dev/null >/dev/null 2>&1 && echo created > ${marker}
exec sleep ${NAP}0
`,
  );
  chmodSync(file, 0o755);
}

let store: string | undefined;

afterEach(() => {
  // A failed test leaves no container behind for the next ones.
  if (!store) return;
  for (const pid of processesOf(store)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  store = undefined;
});

interface Killed {
  env: ModeEnv;
  dir: string;
  /** The runc container of the step the kill found running. */
  containerId: string;
}

describe.each(modes())("a build killed with SIGKILL ($name)", (mode) => {
  /** A store with busybox and a context with `dockerfile`, both the mode's user's. */
  async function setUp(dockerfile: string): Promise<{ env: ModeEnv; dir: string }> {
    const env = await setUpMode(mode, tempDir);
    store = env.store;
    const dir = env.ownedDir("ctx");
    writeFileSync(path.join(dir, "Dockerfile"), dockerfile);
    if (mode.user) chownSync(path.join(dir, "Dockerfile"), mode.user.uid, mode.user.gid);
    return { env, dir };
  }

  /**
   * Starts a build that naps in a RUN, kills its process group once `ready` holds, and checks
   * what the kill left: the build's state directory and its step's container.
   */
  async function killDuringStep(
    { env, dir }: { env: ModeEnv; dir: string },
    ready: (stderr: string) => boolean,
    pathPrefix?: string,
  ): Promise<Killed> {
    const build = spawnInOwnGroup(
      env,
      ["build", "--no-cache", "--progress=plain", "--build-arg", `NAP=${NAP}`, dir],
      pathPrefix,
    );
    let stderr = "";
    build.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    expect(await eventually(() => ready(stderr) || build.exitCode !== null, 60_000), stderr).toBe(true);
    expect(build.exitCode, stderr).toBe(null);
    await killGroup(build);

    const left = stateDirs(env.store);
    expect(left).toHaveLength(1);
    const ids = containerIds(path.join(env.store, left[0]!));
    expect(ids).toHaveLength(1);
    expect(processesOf(env.store)).not.toEqual([]);
    if (!mode.user) expect(cgroupsOf(ids[0]!)).not.toEqual([]);
    return { env, dir, containerId: ids[0]! };
  }

  function expectNothingLeft({ env, containerId }: Killed): void {
    expect(stateDirs(env.store)).toEqual([]);
    expect(processesOf(env.store)).toEqual([]);
    expect(cgroupsOf(containerId)).toEqual([]);
  }

  async function expectNextBuildCleans(killed: Killed): Promise<void> {
    const next = await killed.env.runAsync(["build", "--progress=plain", "-t", "after-kill:1", killed.dir]);
    expect(next.status, next.stderr).toBe(0);
    expect(next.stderr).not.toContain("WARNING");
    expectNothingLeft(killed);
  }

  // The step's own output (the shell's arithmetic, not the echoed command line) means it runs.
  const stepRuns = (stderr: string) => /^#\d+ [\d.]+ 42-begun$/m.test(stderr);

  it("during a RUN: the next build removes its state directory and stops its container", async () => {
    await expectNextBuildCleans(await killDuringStep(await setUp(dockerfile()), stepRuns));
  });

  it("during a RUN as another user: the next build stops that user's container too", async () => {
    await expectNextBuildCleans(await killDuringStep(await setUp(dockerfile("1000")), stepRuns));
  });

  it("between runc's create and start: the next build deletes the waiting container", async () => {
    const context = await setUp(dockerfile());
    const wrapperDir = context.env.ownedDir("runc");
    const marker = path.join(wrapperDir, "created");
    writeRuncStoppingBeforeStart(wrapperDir, marker);
    await expectNextBuildCleans(await killDuringStep(context, () => existsSync(marker), wrapperDir));
  });

  it("during a RUN: tbuild prune cleans up as well", async () => {
    const killed = await killDuringStep(await setUp(dockerfile()), stepRuns);
    const pruned = await killed.env.runAsync(["prune"]);
    expect(pruned.status, pruned.stderr).toBe(0);
    expect(pruned.stderr).toBe("");
    expectNothingLeft(killed);
    killed.env.ok(["build", "-t", "after-prune:1", killed.dir]);
  });
});
