/**
 * A RUN that tries to hang the build: a process stopped with SIGSTOP that the step waits for,
 * processes that ignore SIGTERM, SIGINT and SIGHUP, and a PID 1 traced by a tracer of its own that
 * is then stopped (the traced PID 1 then cannot die, even of SIGKILL, while its tracer lives).
 * Ctrl-C (one SIGINT to tbuild) still ends the build, with every process of the step gone, nothing
 * mounted, no runc state left, no image named; and `--step-timeout` ends such a step by itself
 * with an error naming the step and the limit. As root and rootless.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, realpathSync } from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { hostileWorld, MODES, type Mode, mountsUnder } from "./harness.js";
import {
  buildStateDirs,
  commandLineOf,
  eventually,
  exitOf,
  isAlive,
  killLeftovers,
  OutputLines,
  type ProcessId,
  processesOfStore,
  processTree,
  stateOf,
  userTbuild,
} from "./processes.js";

const world = hostileWorld();
let started: ProcessId[] = [];

afterEach(() => {
  killLeftovers(started);
  started = [];
});

interface Hang {
  name: string;
  dockerfile: string;
  /** The context needs the host's strace (and the libraries it loads) under tracer/. */
  tracer?: boolean;
  /** The step is as hung as it will get: judged on the processes of the build's tree. */
  hung: (tree: ProcessId[]) => boolean;
}

const running = (tree: ProcessId[], command: string) =>
  tree.some((p) => commandLineOf(p.pid).startsWith(command));
const inState = (tree: ProcessId[], state: string, command?: string) =>
  tree.some(
    (p) => stateOf(p.pid) === state && (command === undefined || commandLineOf(p.pid).startsWith(command)),
  );

const HANGS: Hang[] = [
  {
    name: "a process stopped with SIGSTOP that the step waits for",
    dockerfile: "FROM busybox\nRUN echo begun-$((6*7)) && sh -c 'kill -STOP $$'; echo not-reached\n",
    hung: (tree) => inState(tree, "T", "sh -c kill -STOP"),
  },
  {
    name: "processes that ignore SIGTERM, SIGINT and SIGHUP",
    dockerfile:
      "FROM busybox\nRUN trap '' TERM INT HUP && echo begun-$((6*7)) && sh -c \"trap '' TERM INT HUP; while :; do sleep 1; done\"\n",
    hung: (tree) => running(tree, "sleep 1"),
  },
  {
    name: "a PID 1 traced (strace -p 1) by a tracer that is then stopped",
    tracer: true,
    dockerfile: [
      "FROM busybox",
      "COPY tracer/ /",
      // Stopped once attached: PID 1 then waits in a ptrace stop for a tracer that never answers.
      'RUN echo begun-$((6*7)) && (strace -o /dev/null -p 1 &) && until grep -q "^TracerPid:[[:space:]]*[1-9]" /proc/1/status; do sleep 0.1; done && kill -STOP $(pidof strace) && sleep 1000',
      "",
    ].join("\n"),
    hung: (tree) => inState(tree, "T", "strace") && inState(tree, "t"),
  },
];

/** The host's strace and the shared libraries it loads, at their host paths under `dir`/tracer. */
function addTracer(dir: string): void {
  const strace = execFileSync("sh", ["-c", "command -v strace"], { encoding: "utf8" }).trim();
  const libraries = [...execFileSync("ldd", [strace], { encoding: "utf8" }).matchAll(/(\/\S+)/g)].map(
    (m) => m[1]!,
  );
  for (const file of [strace, ...libraries]) {
    const target = path.join(dir, "tracer", file);
    mkdirSync(path.dirname(target), { recursive: true });
    copyFileSync(realpathSync(file), target);
  }
  execFileSync("chmod", ["-R", "a+rX", dir]);
}

/**
 * Starts a build of the hang, waits until the step is hung, then calls `stop` (or nothing, for a
 * timeout) and waits for tbuild to exit. Checks everything of the step is gone and nothing named.
 */
async function hangAndEnd(
  mode: Mode,
  store: string,
  ctx: string,
  hang: Hang,
  extraArgs: string[],
  stop?: (tbuildPid: number) => void,
): Promise<{ code: number | null; stderr: string }> {
  const build = world.spawnTbuild(mode, store, [
    "build",
    "--no-cache",
    "--progress=plain",
    ...extraArgs,
    "-t",
    "hung:1",
    ctx,
  ]);
  const stderr = new OutputLines(build.stderr!);
  const exited = exitOf(build);
  expect(await stderr.waitFor(/^#\d+ [\d.]+ begun-42$/m), stderr.text).toBe(true);
  const tbuildPid = await userTbuild(mode, build);
  let tree: ProcessId[] = [];
  const hung = await eventually(() => {
    tree = processTree(tbuildPid);
    started = tree;
    return hang.hung(tree) || build.exitCode !== null;
  });
  expect(hung && build.exitCode === null, `the step never hung: ${stderr.text}`).toBe(true);
  stop?.(tbuildPid);
  let code: number | null = null;
  void exited.then((e) => {
    code = e.code;
  });
  expect(await eventually(() => build.exitCode !== null), `tbuild did not end: ${stderr.text}`).toBe(true);
  await exited;
  expect(
    await eventually(() => tree.every((p) => !isAlive(p)), 30_000),
    `processes of the step outlived the build: ${tree.filter(isAlive).map((p) => commandLineOf(p.pid))}`,
  ).toBe(true);
  expect(processesOfStore(store)).toEqual([]);
  expect(buildStateDirs(store)).toEqual([]);
  expect(mountsUnder(store)).toEqual([]);
  const images = world.tbuild(mode, store, ["images"]);
  expect(images.stdout).not.toContain("hung");
  return { code: code ?? build.exitCode, stderr: stderr.text };
}

describe.each(MODES)("a RUN that hangs (%s)", (mode) => {
  it.each(HANGS)(
    "$name: Ctrl-C ends the build, and so does --step-timeout",
    async (hang) => {
      const store = world.store(mode);
      const canary = world.canary(mode);
      const ctx = world.context({ Dockerfile: hang.dockerfile });
      if (hang.tracer) addTracer(ctx);

      const interrupted = await hangAndEnd(mode, store, ctx, hang, [], (pid) => process.kill(pid, "SIGINT"));
      expect(interrupted.code, interrupted.stderr).toBe(130);
      expect(interrupted.stderr).toContain("ERROR: interrupted by SIGINT");

      const timedOut = await hangAndEnd(mode, store, ctx, hang, ["--step-timeout", "2s"]);
      expect(timedOut.code, timedOut.stderr).toBe(1);
      const error = timedOut.stderr.trimEnd().split("\n").at(-1)!;
      expect(error).toMatch(
        /^ERROR: process "\/bin\/sh -c .*" did not finish within --step-timeout 2s: it was killed/,
      );
      // The step is named above the error, with its place in the Dockerfile.
      expect(timedOut.stderr).toMatch(/ > \[\d\/\d\] RUN .*begun/);
      expect(timedOut.stderr).toMatch(/>>> RUN .*begun/);

      canary.expectUntouched(interrupted.stderr, timedOut.stderr);
      world.expectStoreUsable(mode, store);
    },
    300_000,
  );
});

describe("--step-timeout", () => {
  it("changes nothing for steps that finish within it", () => {
    const store = world.store("root");
    const ctx = world.context({ Dockerfile: "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n" });
    const built = world.tbuild("root", store, ["build", "--step-timeout", "5m", "-t", "bounded:1", ctx]);
    expect(built.status, built.stderr).toBe(0);
    const ran = world.tbuild("root", store, ["run", "--rm", "bounded:1", "cat", "/one", "/two"]);
    expect(ran.stdout).toBe("one\ntwo\n");
  });

  it("refuses a value that is not a duration, saying what it takes", () => {
    const store = world.store("root");
    const ctx = world.context({ Dockerfile: "FROM busybox\n" });
    const built = world.tbuild("root", store, ["build", "--step-timeout", "ten", ctx]);
    expect(built.status).toBe(2);
    expect(built.stderr).toBe('ERROR: --step-timeout takes a duration such as 30s, 5m or 1h, not "ten"\n');
  });

  it("is listed in `tbuild build --help`", () => {
    const help = world.tbuild("root", world.dir("help"), ["build", "--help"]);
    expect(help.stdout).toMatch(/--step-timeout DURATION\s+kill a RUN step still running after DURATION/);
  });
});
