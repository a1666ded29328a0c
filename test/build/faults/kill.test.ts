/**
 * `kill -9` of a build at moments chosen by events (traced.ts): the n-th call of a kind on the
 * store, in each stretch of a build's work (snapshotting the context, unpacking the base, a COPY, a
 * RUN with runc running, a layer's diff and compression, a blob written, a snapshot committed, a
 * cache record written, the tag written). After each kill the next build in the same store must
 * give the very image a fresh store gives (SOURCE_DATE_EPOCH is fixed, the RUN steps are
 * deterministic: the differential test's), that image must run, and nothing may be left: no
 * mount of the store, no runc state, no build state, no process of the killed build (nor its
 * namespaces, rootless), no cache record without its blobs, no temporary snapshot or blob of
 * the killed build's.
 *
 * Half the points kill a cold build (a store that never built this), half a `--no-cache` build
 * in a store that did (records and blobs overwritten, not new). The points that once found a bug
 * are kept (KEPT); the others are drawn anew on each run, and a failure names its seed:
 * TBUILD_FAULTS_SEED=N draws the same points again.
 */
import { rmSync } from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { userIds } from "../../helpers/judges.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "../../hostile/harness.js";
import { syncContext } from "../differential/context.js";
import {
  type Dockerfile,
  MTIMES,
  planDockerfile,
  renderDockerfile,
  type Tree,
} from "../differential/scenario.js";
import { leftovers } from "./leftovers.js";
import {
  type KillPoint,
  type KillStyle,
  PHASES,
  phaseCounts,
  type TracedBuild,
  tracedBuild,
} from "./traced.js";

const world = hostileWorld();

const SEED = Number(process.env.TBUILD_FAULTS_SEED ?? Math.floor(Math.random() * 1_000_000));
/**
 * Kill points per mode: the kept ones, then one in each phase (9 as root, 8 rootless, where the tag
 * is not traced). Whether a phase's point kills a cold or a warm build, tbuild alone or its group,
 * turns with the seed, so runs cover all four; a second round of phases in every run (30 points, not 23) cost a quarter of
 * this file's time for no phase left untried.
 */
const POINTS: Record<Mode, number> = { root: 12, rootless: 11 };

/** Two stages: COPY into WORKDIR and a lower layer's directory, RUN with a bind and a cache mount, COPY --from and --link. */
const DOCKERFILE: Dockerfile = {
  stages: [
    {
      base: { kind: "busybox" },
      instructions: [
        { kind: "workdir", path: "/app" },
        { kind: "copy", sources: ["a.txt"], dest: "./" },
        { kind: "run", ops: [{ op: "write", path: "out.txt", text: "w1" }], mounts: [] },
        { kind: "copy", sources: ["src"], dest: "./src/" },
        {
          kind: "run",
          ops: [
            { op: "rename", from: "out.txt", to: "main.txt" },
            { op: "chmod", path: "a.txt", mode: "600" },
          ],
          mounts: [{ type: "bind-context", source: "src" }],
        },
        { kind: "copy", sources: ["big.bin"], dest: "/data/" },
      ],
    },
    {
      base: { kind: "busybox" },
      instructions: [
        { kind: "copy", sources: ["/app*"], dest: "/dst/", from: { stage: 0 } },
        {
          kind: "run",
          ops: [
            { op: "write", path: "/dst/one", text: "w2" },
            { op: "cache-write", text: "c1" },
          ],
          mounts: [{ type: "cache", id: "c" }],
        },
        { kind: "copy", sources: ["src"], dest: "/app/", link: true },
      ],
    },
  ],
};

const file = (content: string, mtime: number = MTIMES[1]) =>
  ({ kind: "file", content, mode: 0o644, mtime }) as const;

const CONTEXT: Tree = {
  "a.txt": file("a\n", MTIMES[0]),
  src: { kind: "dir", mode: 0o755 },
  "src/main.txt": file("main\n"),
  "src/lib": { kind: "dir", mode: 0o755 },
  "src/lib/deep.txt": file("deep\n", MTIMES[2]),
  "big.bin": file("@large:1:1500000"),
  Dockerfile: file(renderDockerfile(planDockerfile(DOCKERFILE))),
};

/** What the final image's RUN saw: printed by `tbuild run`. */
const RUN_ARGS = ["run", "--rm", "killed:1", "cat", "/tmp/obs-1-1"];

interface Reference {
  ctx: string;
  digest: string;
  /** What RUN_ARGS prints for the fresh store's image. */
  ran: string;
  /** A store that built the image, for the `--no-cache` kills. */
  warm: string;
  coldCounts: Map<string, number>;
  warmCounts: Map<string, number>;
}

function digestOf(output: string): string {
  return /sha256:[0-9a-f]{64}/.exec(output)?.[0] ?? "(no digest)";
}

/**
 * Kill points that once left something behind, kept: killed while copying the context's files
 * into a snapshot (whose temp directory nothing removed), and while writing a layer's blob, the
 * tbuild process alone (its partial blob stayed in `ingest/`) or with its group (its zombie,
 * waiting for a slow init to reap it, counted as a live writer).
 */
const KEPT: { point: KillPoint; cold: boolean }[] = [
  {
    point: {
      phase: { name: "context snapshot file", pattern: /S\/snapshots\/layers\/\.tmp-source-.*\/src\// },
      ordinal: 2,
      style: "group",
    },
    cold: true,
  },
  {
    point: {
      phase: { name: "blob data", pattern: /^write[v]?\(\d+<S\/ingest\// },
      ordinal: 2,
      style: "worker",
    },
    cold: true,
  },
  {
    point: {
      phase: { name: "blob data", pattern: /^write[v]?\(\d+<S\/ingest\// },
      ordinal: 2,
      style: "group",
    },
    cold: false,
  },
];

/** The kept points, then `count` more, phase after phase, their event number and store drawn from `seed`. */
function drawPoints(mode: Mode, reference: Reference, count: number, seed: number) {
  const points = [...KEPT];
  const phases = PHASES.filter((p) => mode === "root" || !p.rootOnly);
  for (let i = 0; points.length < count; i++) {
    const phase = phases[i % phases.length]!;
    const round = Math.floor(i / phases.length);
    const cold = phase.cold === true || (i + round + seed) % 2 === 0;
    const events = (cold ? reference.coldCounts : reference.warmCounts).get(phase.name) ?? 0;
    if (events < 1) throw new Error(`a ${cold ? "cold" : "warm"} build makes no ${phase.name} events`);
    const [ordinal] = fc.sample(fc.integer({ min: 1, max: events }), { seed: seed + i, numRuns: 1 });
    const style: KillStyle = (i + round + seed) % 4 < 2 ? "worker" : "group";
    points.push({ point: { phase, ordinal: ordinal!, style }, cold });
  }
  return points;
}

describe.each(MODES)("kill -9 of a build at events of its work (%s)", (mode) => {
  let reference: Reference;
  const owner = mode === "rootless" ? userIds(ROOTLESS_USER) : { uid: 0, gid: 0 };
  const log = () => path.join(world.dir("log"), "build.log");

  beforeAll(async () => {
    const ctx = world.dir("ctx", mode);
    syncContext(ctx, {}, CONTEXT, owner);
    // A cold build and a --no-cache one in a store that has it, traced to count their events.
    const fresh = world.store(mode);
    const cold = await tracedBuild(mode, fresh, ["build", "-q", "-t", "killed:1", ctx], log());
    expect(cold.exit.code, cold.output).toBe(0);
    const ran = world.tbuild(mode, fresh, RUN_ARGS);
    expect(ran.status, ran.stderr).toBe(0);
    const warm = world.store(mode);
    expect(world.tbuild(mode, warm, ["build", "-q", "-t", "killed:1", ctx]).status).toBe(0);
    const again = await tracedBuild(mode, warm, ["build", "--no-cache", "-q", "-t", "killed:1", ctx], log());
    expect(again.exit.code, again.output).toBe(0);
    expect(digestOf(again.output)).toBe(digestOf(cold.output));
    reference = {
      ctx,
      digest: digestOf(cold.output),
      ran: ran.stdout,
      warm,
      coldCounts: phaseCounts(cold.events),
      warmCounts: phaseCounts(again.events),
    };
    rmSync(fresh, { recursive: true, force: true });
  }, 180_000);

  it.each(Array.from({ length: POINTS[mode] }, (_, i) => i))(
    "kill point %i: the next build gives a fresh store's image, which runs, and nothing is left",
    async (i) => {
      const seed = SEED + (mode === "root" ? 0 : 1000);
      const { point, cold } = drawPoints(mode, reference, POINTS[mode], seed)[i]!;
      // A kill lands a moment after its event; should the build have ended meanwhile (a busy
      // machine), the kill is tried again at an earlier event of the same stretch, in a store
      // as the first (a cold one anew).
      let store = "";
      let killed: TracedBuild | undefined;
      let where = "";
      for (let ordinal = point.ordinal, tries = 0; ; ordinal = Math.ceil(ordinal / 2), tries++) {
        store = cold ? world.store(mode) : reference.warm;
        killed = await tracedBuild(
          mode,
          store,
          ["build", ...(cold ? [] : ["--no-cache"]), "-q", "-t", "killed:1", reference.ctx],
          log(),
          { ...point, ordinal },
        );
        where = `${cold ? "cold" : "warm"} build, ${point.style} killed at ${killed.killedAt ?? `${point.phase.name} event ${ordinal}`} (TBUILD_FAULTS_SEED=${SEED})`;
        // Landed: the build did not go on to succeed (the killed tbuild's parent exits with its failure).
        if (killed.killedAt !== undefined && killed.exit.code !== 0) break;
        expect(tries < 3 && ordinal > 1, `${where}: the build ended before the kill\n${killed.output}`).toBe(
          true,
        );
      }

      const rebuilt = world.tbuild(mode, store, ["build", "-q", "-t", "killed:1", reference.ctx]);
      expect(rebuilt.status, `${where}: ${rebuilt.stderr}`).toBe(0);
      expect(digestOf(rebuilt.stdout), where).toBe(reference.digest);
      expect(leftovers(store, killed!), where).toEqual([]);
      const ran = world.tbuild(mode, store, RUN_ARGS);
      expect(ran.status, `${where}: ${ran.stderr}`).toBe(0);
      expect(ran.stdout, where).toBe(reference.ran);
      expect(leftovers(store, killed!), where).toEqual([]);
      if (cold) rmSync(store, { recursive: true, force: true });
    },
    120_000,
  );
});
