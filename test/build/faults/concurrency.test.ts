/**
 * Builds at once on one store, with no daemon to order them: two, then four, of overlapping
 * Dockerfiles (the differential test's random ones, scenario.ts): the same base steps and COPYs
 * of the same context files, different steps after them, and two identical builds racing for the
 * very same steps. Each must succeed with the image a fresh, empty store gives for its Dockerfile
 * (SOURCE_DATE_EPOCH is fixed, RUN steps are deterministic), and afterwards nothing of the store
 * is mounted, no runc or build state is left, and `tbuild images` lists every tag. The four
 * run on the store the two left, where part of their work is cached. As root and rootless.
 *
 * The Dockerfiles are drawn from a seed, printed on failure: TBUILD_FAULTS_SEED=N draws them
 * again. A seed that failed is kept in SEEDS below.
 */
import { chownSync, writeFileSync } from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { userIds } from "../../helpers/judges.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "../../hostile/harness.js";
import { exitOf, OutputLines } from "../../hostile/processes.js";
import { syncContext } from "../differential/context.js";
import {
  type Dockerfile,
  instructionArb,
  MTIMES,
  planDockerfile,
  renderDockerfile,
  type Scenario,
  scenarioArb,
  type Tree,
} from "../differential/scenario.js";
import { leftovers } from "./leftovers.js";

const world = hostileWorld();

/** Seeds kept because they once failed (none yet), then one drawn anew on each run. */
const SEEDS: number[] = [Number(process.env.TBUILD_FAULTS_SEED ?? Math.floor(Math.random() * 1_000_000))];

interface Built {
  ok: boolean;
  digest: string;
  output: string;
}

/** `tbuild build -q -f DOCKERFILE -t TAG CTX` started now; resolves when it has ended. */
async function startBuild(
  mode: Mode,
  store: string,
  dockerfile: string,
  tag: string,
  ctx: string,
): Promise<Built> {
  const child = world.spawnTbuild(mode, store, ["build", "-q", "-f", dockerfile, "-t", tag, ctx]);
  const stdout = new OutputLines(child.stdout!);
  const stderr = new OutputLines(child.stderr!);
  const { code } = await exitOf(child);
  // The streams may still hold their last chunks when the process has exited.
  await Promise.all(
    [child.stdout, child.stderr].map(
      (s) => new Promise((r) => (s!.readableEnded ? r(0) : s!.once("end", r))),
    ),
  );
  const digest = /sha256:[0-9a-f]{64}/.exec(stdout.text)?.[0] ?? "";
  return { ok: code === 0, digest, output: `${stdout.text}${stderr.text}` };
}

/** A case: a context and a Dockerfile drawn from the seed. */
interface Case {
  context: Tree;
  dockerfile: Dockerfile;
}

function drawCase(mode: Mode, seed: number): Case {
  const [scenario] = fc.sample(scenarioArb({ maxEdits: 1, modes: [mode], snapshots: ["overlay"] }), {
    seed,
    numRuns: 1,
  }) as Scenario[];
  const context: Tree = {
    ...scenario!.context,
    ".dockerignore": {
      kind: "file",
      content: scenario!.dockerignore.map((p) => `${p}\n`).join(""),
      mode: 0o644,
      mtime: MTIMES[1],
    },
  };
  return { context, dockerfile: scenario!.dockerfile };
}

/** The last stage's first steps kept, one or two random steps after them. */
function variant(base: Dockerfile, seed: number): Dockerfile {
  const [tail] = fc.sample(fc.array(instructionArb, { minLength: 1, maxLength: 2 }), { seed, numRuns: 1 });
  const next = structuredClone(base);
  const last = next.stages.at(-1)!;
  last.instructions = [...last.instructions.slice(0, Math.max(1, last.instructions.length - 1)), ...tail!];
  return next;
}

/** Draws left before a case is given up: the generator makes Dockerfiles that fail everywhere. */
const TRIES = 12;

/** A Dockerfile in the case's files directory, readable by the mode's user. */
interface Written {
  text: string;
  file: string;
  /** Its build in an empty store. */
  fresh: Built;
}

describe.each(MODES)("builds at once on one store (%s)", (mode) => {
  it.each(SEEDS)(
    "two, then four builds of overlapping Dockerfiles each give a fresh store's image (seed %i)",
    async (seed) => {
      const owner = mode === "rootless" ? userIds(ROOTLESS_USER) : { uid: 0, gid: 0 };
      const files = world.dir("dockerfiles", mode);
      let ctx = "";
      let written = 0;
      /** Writes the Dockerfile and builds it in an empty store. */
      const tryDockerfile = async (dockerfile: Dockerfile): Promise<Written> => {
        const text = renderDockerfile(planDockerfile(dockerfile));
        const file = path.join(files, `Dockerfile.${written++}`);
        writeFileSync(file, text);
        chownSync(file, owner.uid, owner.gid);
        return { text, file, fresh: await startBuild(mode, world.store(mode), file, "fresh:1", ctx) };
      };
      // A base Dockerfile that builds in an empty store, then three that share its first steps.
      let base: { dockerfile: Dockerfile; written: Written } | undefined;
      for (let attempt = 0; !base && attempt < TRIES; attempt++) {
        const c = drawCase(mode, seed + attempt * 1000);
        ctx = world.dir("ctx", mode);
        syncContext(ctx, {}, c.context, owner);
        const tried = await tryDockerfile(c.dockerfile);
        if (tried.fresh.ok) base = { dockerfile: c.dockerfile, written: tried };
      }
      expect(base, `seed ${seed}: no Dockerfile drawn builds in an empty store`).toBeDefined();
      const variants = await Promise.all(
        [1, 2, 3].map(async (slot) => {
          for (let attempt = 0; attempt < TRIES; attempt++) {
            const tried = await tryDockerfile(variant(base!.dockerfile, seed + slot + attempt * 1000));
            if (tried.fresh.ok) return tried;
          }
          throw new Error(`seed ${seed}: no variant drawn builds in an empty store`);
        }),
      );
      const dockerfiles = [base!.written, ...variants];
      const show = (i: number) => `TBUILD_FAULTS_SEED=${seed}, Dockerfile ${i}:\n${dockerfiles[i]!.text}`;

      const store = world.store(mode);
      const rounds = [
        [0, 1],
        [2, 2, 3, 1],
      ];
      const tags: string[] = [];
      for (const [round, picks] of rounds.entries()) {
        const results = await Promise.all(
          picks.map((i, k) => {
            const tag = `at-once-${round}-${k}:${i}`;
            tags.push(tag);
            return startBuild(mode, store, dockerfiles[i]!.file, tag, ctx);
          }),
        );
        picks.forEach((i, k) => {
          const built = results[k]!;
          const expected = dockerfiles[i]!.fresh;
          const where = `round ${round + 1} (${picks.length} at once), build ${k}: ${show(i)}`;
          expect(built.ok, `${where}\n${built.output}`).toBe(true);
          expect(built.digest, where).toBe(expected.digest);
        });
        expect(
          leftovers(store, { processes: [], workers: [], namespaces: [], ticks: 0 }),
          `round ${round + 1}, seed ${seed}`,
        ).toEqual([]);
      }
      const images = world.tbuild(mode, store, ["images"]);
      expect(images.status, images.stderr).toBe(0);
      for (const tag of tags) {
        const [name, version] = tag.split(":");
        expect(images.stdout, tag).toMatch(new RegExp(`^(\\S*/)?${name}\\s+${version}\\s`, "m"));
      }
    },
    300_000,
  );
});
