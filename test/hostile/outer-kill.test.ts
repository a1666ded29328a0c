/**
 * Rootless, tbuild runs itself again inside a user namespace; the tbuild the user ran only waits
 * for it. When that outer process is killed outright (`kill -9`, the OOM killer, a CI runner
 * ending a job), the inner one must not go on unseen and name an image later: it dies with its
 * parent (a parent-death signal and a lifeline pipe), cancelling as on Ctrl-C (its container is
 * stopped, its state removed, its mounts gone with its namespace) and tagging nothing.
 */
import { afterEach, describe, expect, it } from "vitest";
import { hostileWorld, mountsUnder } from "./harness.js";
import {
  buildStateDirs,
  commandLineOf,
  eventually,
  exitOf,
  isAlive,
  killLeftovers,
  namespacedTbuild,
  OutputLines,
  type ProcessId,
  processesOfStore,
  processTree,
  userTbuild,
} from "./processes.js";

const world = hostileWorld();
const MODE = "rootless";
let started: ProcessId[] = [];

afterEach(() => {
  // A failed case leaves no build running into the next ones.
  killLeftovers(started);
  started = [];
});

/**
 * The step runs 20 seconds, then the build would tag its image: an inner tbuild that outlived its
 * parent would be seen to finish (and tag) long before the deadline for it to be gone.
 */
const DOCKERFILE = "FROM busybox\nRUN echo begun-$((6*7)) && sleep 20 && echo done > /done\n";
const STEP_RUNS = /^#\d+ [\d.]+ begun-42$/m;

/** The process tree of `outer` once it holds a process running `command`. */
async function treeWith(outer: number, command: string): Promise<ProcessId[]> {
  let tree: ProcessId[] = [];
  const found = await eventually(() => {
    tree = processTree(outer);
    started = tree;
    return tree.some((p) => commandLineOf(p.pid).startsWith(command));
  });
  expect(found, `no "${command}" under tbuild ${outer}`).toBe(true);
  return tree;
}

/** Kills the outer tbuild, then waits for every process of `tree` to be gone; true if they all went. */
async function killOuterAndWait(outer: number, tree: ProcessId[]): Promise<boolean> {
  process.kill(outer, "SIGKILL");
  return eventually(() => tree.every((p) => !isAlive(p)), 90_000);
}

describe("kill -9 of the tbuild a rootless user ran", () => {
  it("during a RUN: the build in the user namespace stops, cleans up and tags nothing", async () => {
    const store = world.store(MODE);
    const canary = world.canary(MODE);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const build = world.spawnTbuild(MODE, store, ["build", "--progress=plain", "-t", "orphan:1", ctx]);
    const stderr = new OutputLines(build.stderr!);
    expect(await stderr.waitFor(STEP_RUNS), stderr.text).toBe(true);
    const outer = await userTbuild(MODE, build);
    // What must go is the build down to its container's processes (the step's shell forks the nap).
    const tree = await treeWith(outer, "sleep 20");

    expect(await killOuterAndWait(outer, tree), "the build's processes outlived the killed tbuild").toBe(
      true,
    );
    await exitOf(build);
    expect(processesOfStore(store)).toEqual([]);
    // Cleaned up by the build itself, not left for the next command to find.
    expect(buildStateDirs(store), stderr.text).toEqual([]);
    expect(mountsUnder(store)).toEqual([]);
    const images = world.tbuild(MODE, store, ["images"]);
    expect(images.status, images.stderr).toBe(0);
    expect(images.stdout).not.toContain("orphan");
    canary.expectUntouched(stderr.text);
    world.expectStoreUsable(MODE, store);
  });

  it("as soon as it has re-run itself: the new process ends too, before building anything", async () => {
    const store = world.store(MODE);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const build = world.spawnTbuild(MODE, store, ["build", "--progress=plain", "-t", "early:1", ctx]);
    const stderr = new OutputLines(build.stderr!);
    const outer = await userTbuild(MODE, build);
    const inner = await namespacedTbuild(outer);
    const tree = processTree(outer);
    started = tree;
    expect(tree.map((p) => p.pid)).toContain(inner);

    // The inner process may not even watch its parent yet: the lifeline tells it all the same.
    expect(await killOuterAndWait(outer, tree), "the re-run tbuild outlived the killed one").toBe(true);
    // Whatever it had started meanwhile (a step's container) is gone with it.
    expect(await eventually(() => processesOfStore(store).length === 0), stderr.text).toBe(true);
    await exitOf(build);
    expect(buildStateDirs(store)).toEqual([]);
    const images = world.tbuild(MODE, store, ["images"]);
    expect(images.stdout).not.toContain("early");
    world.expectStoreUsable(MODE, store);
  });

  it("during `tbuild run`: the container stops and is removed", async () => {
    const store = world.store(MODE);
    const canary = world.canary(MODE);
    const run = world.spawnTbuild(MODE, store, [
      "run",
      "--rm",
      "--name",
      "orphan-run",
      "busybox",
      "sh",
      "-c",
      "echo started-$((6*7)); exec sleep 1000",
    ]);
    const stdout = new OutputLines(run.stdout!);
    expect(await stdout.waitFor(/^started-42$/m), stdout.text).toBe(true);
    const outer = await userTbuild(MODE, run);
    const tree = await treeWith(outer, "sleep 1000");

    expect(await killOuterAndWait(outer, tree), "the container outlived the killed tbuild").toBe(true);
    await exitOf(run);
    expect(processesOfStore(store)).toEqual([]);
    expect(mountsUnder(store)).toEqual([]);
    const ps = world.tbuild(MODE, store, ["ps", "-a"]);
    expect(ps.status, ps.stderr).toBe(0);
    expect(ps.stdout).not.toContain("orphan-run");
    canary.expectUntouched(stdout.text);
    world.expectStoreUsable(MODE, store);
  });
});
