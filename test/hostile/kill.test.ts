/**
 * `kill -9` of a build at random moments, chosen by events in its progress output (a step
 * starting, a step's output line, a step done, the export starting) rather than by time. After
 * each kill: the canary is untouched, and after the next build in that store nothing of the store
 * is mounted, no build state or runc state is left, no process of the killed build runs, and that
 * build gives the very image a fresh store gives (SOURCE_DATE_EPOCH is fixed): the killed build
 * left nothing half-made that counts as valid. As root, and rootless (where the process killed is
 * the tbuild inside the user namespace, which does the work).
 *
 * The kill points are drawn anew on each run, one in each stretch of the build's events; a
 * failure names its seed: TBUILD_HOSTILE_SEED=N reproduces the same points.
 */
import { describe, expect, it } from "vitest";
import { type Canary, hostileWorld, MODES, type Mode, mountsUnder } from "./harness.js";
import {
  buildStateDirs,
  childrenOf,
  commandLineOf,
  exitOf,
  OutputLines,
  processesOfStore,
} from "./processes.js";

const world = hostileWorld();

const SEED = Number(process.env.TBUILD_HOSTILE_SEED ?? Math.floor(Math.random() * 1_000_000));
/** Kill points per mode. */
const POINTS = 8;

const FILES = {
  Dockerfile: [
    "FROM busybox",
    "COPY a.txt /a.txt",
    "RUN echo one && seq 1 20000 > /one",
    "COPY b.txt /b.txt",
    "RUN echo two && cat /a.txt /b.txt /one > /two && echo two-done",
    "RUN echo three && seq 1 5000 | sort -r > /three",
    "COPY c.txt /c.txt",
    "RUN echo four && ls / > /four",
    "",
  ].join("\n"),
  "a.txt": "a\n",
  "b.txt": "b\n",
  "c.txt": "c\n",
};

/** A small deterministic generator (mulberry32), so that a seed gives the same points again. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` event numbers in 1..events-1, one drawn in each of `count` equal stretches. */
function killPoints(events: number, count: number, next: () => number): number[] {
  const points: number[] = [];
  const stretch = (events - 1) / count;
  for (let i = 0; i < count; i++) {
    points.push(1 + Math.min(events - 2, Math.floor(i * stretch + next() * stretch)));
  }
  return points;
}

/** A rawjson event, told briefly: `vertex.started [3/8] RUN echo two`. */
function describeEvent(line: string): string {
  try {
    const event = JSON.parse(line) as { type: string; name?: string };
    return `${event.type}${event.name ? ` ${event.name}` : ""}`;
  } catch {
    return line.slice(0, 80);
  }
}

/** `tbuild build -q`: its image digest, after checking it succeeded. */
function buildDigest(mode: Mode, store: string, ctx: string): string {
  const built = world.tbuild(mode, store, ["build", "-q", "-t", "killed:1", ctx]);
  expect(built.status, built.stderr).toBe(0);
  return built.stdout.trim();
}

/**
 * Builds with rawjson progress and SIGKILLs the build right after its `at`-th event line: as root
 * tbuild itself, rootless the tbuild inside the user namespace. Returns the event it was killed at.
 */
async function buildKilledAt(mode: Mode, store: string, ctx: string, at: number): Promise<string> {
  const build = world.spawnTbuild(mode, store, [
    "build",
    "--no-cache",
    "--progress=rawjson",
    "-t",
    "killed:1",
    ctx,
  ]);
  const exited = exitOf(build);
  const lines = new OutputLines(build.stderr!);
  let seen = 0;
  let killedAt = "the build ended first";
  lines.onLine((line) => {
    if (++seen !== at) return;
    // Found at once, synchronously: the event is the moment.
    const outer = mode === "root" ? build.pid! : childrenOf(build.pid!)[0];
    const worker =
      mode === "root" || outer === undefined
        ? outer
        : childrenOf(outer).find((pid) => commandLineOf(pid).includes("main.js"));
    if (worker === undefined) return;
    process.kill(worker, "SIGKILL");
    killedAt = `event ${at} (${describeEvent(line)})`;
  });
  await exited;
  return killedAt;
}

describe.each(MODES)("kill -9 of a build at events of its progress (%s)", (mode) => {
  const next = random(SEED + (mode === "root" ? 0 : 1));
  let fresh: { digest: string; events: number; points: number[] } | undefined;
  let store = "";
  let ctx = "";
  let canary: Canary;

  /** The image a fresh store builds, how many progress events a whole build prints, the kill points. */
  function reference(): { digest: string; events: number; points: number[] } {
    if (fresh) return fresh;
    ctx = world.context(FILES);
    store = world.store(mode);
    canary = world.canary(mode);
    const freshStore = world.store(mode);
    const full = world.tbuild(mode, freshStore, ["build", "--progress=rawjson", "-t", "killed:1", ctx]);
    expect(full.status, full.stderr).toBe(0);
    const events = full.stderr.split("\n").filter((l) => l.startsWith("{"));
    const completed = JSON.parse(events.at(-1)!) as { type: string; digest: string };
    expect(completed.type).toBe("build.completed");
    fresh = {
      digest: completed.digest,
      events: events.length,
      points: killPoints(events.length, POINTS, next),
    };
    return fresh;
  }

  it.each(Array.from({ length: POINTS }, (_, i) => i))(
    "kill point %i: the next build cleans up and gives a fresh store's image",
    async (i) => {
      const { digest, events, points } = reference();
      const at = points[i]!;
      const killedAt = await buildKilledAt(mode, store, ctx, at);
      const where = `killed at ${killedAt} of ${events} (TBUILD_HOSTILE_SEED=${SEED})`;
      canary.expectUntouched();

      expect(buildDigest(mode, store, ctx), where).toBe(digest);
      expect(mountsUnder(store), where).toEqual([]);
      expect(buildStateDirs(store), where).toEqual([]);
      expect(processesOfStore(store), where).toEqual([]);
      const images = world.tbuild(mode, store, ["images"]);
      expect(images.status, `${where}: ${images.stderr}`).toBe(0);
    },
  );

  it("leaves a store that builds and runs", () => {
    reference();
    world.expectStoreUsable(mode, store);
  });
});
