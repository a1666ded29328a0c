/**
 * Random Dockerfiles through the oracle (issue 19): cases of the differential build test's
 * generator (test/build/differential/scenario.ts), limited to what BuildKit 0.8's embedded
 * frontend builds (the 1.2 syntax), each built once (each of its stages, as the target) by tbuild
 * and by BuildKit and judged as conformance.test.ts judges: the differences no kept rule (kept.ts)
 * explains must be none. Both builders failing is agreement; one failing is not, but for BuildKit
 * 0.8 failing on its own mount stubs (compare.ts).
 *
 * `npm test` runs ORACLE_DIFFERENTIAL_RUNS cases (default 4), `npm run oracle` (TBUILD_ORACLE=full)
 * 40, from the seed ORACLE_DIFFERENTIAL_SEED (default: the time), seed after seed. A failure shows
 * its seed, Dockerfile, context and differences, and shrinks for at most
 * ORACLE_DIFFERENTIAL_SHRINK_SECONDS (default 60). The cases kept in
 * test/fixtures/oracle-differential/ (each found a difference tbuild then fixed) are replayed first.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { syncContext } from "../build/differential/context.js";
import { contextTree } from "../build/differential/run.js";
import {
  OBSERVE_SCRIPT,
  planDockerfile,
  renderDockerfile,
  type Scenario,
  scenarioArb,
  type Tree,
} from "../build/differential/scenario.js";
import { projectRoot } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";
import {
  type Built,
  buildWithBuildKit,
  buildWithTbuild,
  caseWork,
  failedOnMountStub,
  type OracleCase,
} from "./compare.js";
import { explainingTbuildFailure } from "./kept.js";
import { type OracleSetup, startOracleWithBaseImages, unexplained } from "./oracle-setup.js";

const FULL = process.env.TBUILD_ORACLE === "full";
const runs = Number(process.env.ORACLE_DIFFERENTIAL_RUNS ?? (FULL ? 40 : 4));
const seed =
  process.env.ORACLE_DIFFERENTIAL_SEED !== undefined
    ? Number(process.env.ORACLE_DIFFERENTIAL_SEED)
    : Date.now() % 2 ** 31;
const SHRINK_MS = Number(process.env.ORACLE_DIFFERENTIAL_SHRINK_SECONDS ?? 60) * 1000;

/** One build of a Dockerfile BuildKit 0.8 can read, as root: the daemon runs as root. */
const oracleScenarioArb = scenarioArb({
  maxEdits: 0,
  modes: ["root"],
  snapshots: ["overlay"],
  syntax: "1.2",
});

const tempDir = tempDirs();
const fixturesDir = path.join(projectRoot, "test/fixtures/oracle-differential");
const fixtures = readdirSync(fixturesDir, { withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith(".json"))
  .map((e) => ({
    name: e.name,
    fixture: JSON.parse(readFileSync(path.join(fixturesDir, e.name), "utf8")) as {
      note: string;
      scenario: Scenario;
    },
  }));

/** How many differences each kept rule explained. */
const used = new Map<string, number>();
/** How many stage builds both builders refused. */
let failedAlike = 0;
/** How many stage builds BuildKit 0.8 alone failed, on its own mount stubs (compare.ts's KNOWN_ARTIFACTS). */
let failedOnStubs = 0;
/** How many stage builds were judged. */
let stageBuilds = 0;

let setup: OracleSetup | undefined;
let work = "";
let counter = 0;

/**
 * Builds each stage of the case (`--target`) with both builders; throws what tells them apart
 * (with the Dockerfile and the context), for fast-check to shrink and print. Every stage, not only
 * the last: what a stage's RUN steps saw is judged in that stage, not only through another stage
 * that mounts or copies it.
 */
async function judgeScenario(scenario: Scenario): Promise<void> {
  const planned = planDockerfile(scenario.dockerfile);
  const tree = contextTree(scenario.context, planned, scenario.dockerignore);
  const source = { dockerfile: renderDockerfile(planned), dockerignore: contentOf(tree, ".dockerignore") };
  const w = caseWork(work, `case-${++counter}`);
  try {
    const context = path.join(w.dir, "context");
    mkdirSync(context);
    syncContext(context, {}, tree, { uid: 0, gid: 0 });
    const found: string[] = [];
    for (const stage of planned) {
      const c = { name: `differential-${counter}-${stage.name}`, context, target: stage.name };
      found.push(...(await judgeStage(c, w.dir, source)).map((d) => `stage ${stage.name}: ${d}`));
    }
    if (found.length > 0) {
      throw new Error(
        [
          "tbuild and BuildKit differ:",
          ...found.map((d) => `  ${d}`),
          `Dockerfile (<observe> is scenario.ts's OBSERVE_SCRIPT):\n${source.dockerfile.replaceAll(OBSERVE_SCRIPT, "<observe>")}`,
          `context:\n${listContext(tree)}`,
        ].join("\n"),
      );
    }
  } finally {
    w.remove();
  }
}

/** What tells the builders' results of one stage apart, that no kept rule explains. */
async function judgeStage(
  c: OracleCase,
  dir: string,
  source: { dockerfile: string; dockerignore: string },
): Promise<string[]> {
  stageBuilds++;
  const ours = await outcome(() => buildWithTbuild(c, setup!.store, dir));
  const theirs = await outcome(() => buildWithBuildKit(c, setup!.oracle, dir));
  if ("error" in ours && "error" in theirs) {
    failedAlike++;
    return [];
  }
  if ("error" in ours) {
    const rule = explainingTbuildFailure(ours.error, source.dockerignore);
    if (rule === undefined) return [`only tbuild failed: ${lastLines(ours.error, 8)}`];
    used.set(rule.id, (used.get(rule.id) ?? 0) + 1);
    return [];
  }
  if ("error" in theirs) {
    if (!failedOnMountStub(theirs.error, source.dockerfile))
      return [`only BuildKit failed: ${lastLines(theirs.error.split("\ndockerd's log:")[0]!, 8)}`];
    failedOnStubs++;
    return [];
  }
  return unexplained(withoutNestedListings(ours.built), withoutNestedListings(theirs.built), source, used);
}

/**
 * The result with the lines of RUN steps' listings that name another listing (an `obs-*` file of
 * a stage the step mounted, or one copied) left out: that listing is judged itself, in the stage
 * that wrote it, where a kept difference in it is explained; here it would show only as another
 * size and md5sum.
 */
function withoutNestedListings(built: Built): Built {
  const rootfs = new Map(built.rootfs);
  for (const [name, entry] of rootfs) {
    if (entry.small === undefined || !NESTED_LISTING.test(entry.small)) continue;
    const small = entry.small
      .split("\n")
      .filter((line) => !NESTED_LISTING.test(line))
      .join("\n");
    rootfs.set(name, { ...entry, small, sha256: createHash("sha256").update(small).digest("hex") });
  }
  return { ...built, rootfs };
}

/** A listing's line naming a listing (scenario.ts writes them as /tmp/obs-STAGE-RUN). */
const NESTED_LISTING = /\/obs-\d+-\d+\b/;

async function outcome(build: () => Promise<Built>): Promise<{ built: Built } | { error: string }> {
  try {
    return { built: await build() };
  } catch (err) {
    return { error: String(err) };
  }
}

function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

function contentOf(tree: Tree, file: string): string {
  const entry = tree[file];
  return entry?.kind === "file" ? entry.content : "";
}

/** The context as a user would list it: one line a path, with its kind, mode and content. */
function listContext(tree: Tree): string {
  return Object.keys(tree)
    .sort()
    .map((p) => {
      const e = tree[p]!;
      const mode = "mode" in e ? ` ${e.mode.toString(8).padStart(4, "0")}` : "";
      const what =
        e.kind === "file"
          ? ` ${JSON.stringify(e.content.length > 40 ? `${e.content.slice(0, 40)}…` : e.content)}`
          : e.kind === "symlink"
            ? ` -> ${e.target}`
            : e.kind === "hardlink"
              ? ` (a hard link of ${e.of})`
              : "";
      return `  ${p}: ${e.kind}${mode}${what}`;
    })
    .join("\n");
}

describe("random Dockerfiles: tbuild's results equal BuildKit's", () => {
  beforeAll(async () => {
    work = tempDir("oracle-differential");
    setup = await startOracleWithBaseImages(work);
  }, 180_000);
  afterAll(() => setup?.oracle.stop());

  it.each(fixtures)("kept case $name", async ({ fixture }) => {
    await judgeScenario(fixture.scenario);
  });

  it(
    `random cases (${runs}, seeds from ${seed})`,
    async () => {
      console.log(`oracle differential: ${runs} case(s), seeds ${seed}..${seed + runs - 1}`);
      const failures: string[] = [];
      for (let i = 0; i < runs; i++) {
        const caseSeed = seed + i;
        const details = await fc.check(fc.asyncProperty(oracleScenarioArb, judgeScenario), {
          seed: caseSeed,
          numRuns: 1,
          // The time limit covers the first run too: 0 means no shrinking at all.
          ...(SHRINK_MS > 0
            ? { interruptAfterTimeLimit: SHRINK_MS, markInterruptAsFailure: false }
            : { endOnFailure: true }),
        });
        if (!details.failed) continue;
        const found = details.counterexample
          ? `${JSON.stringify(details.counterexample[0])}\n${String(details.errorInstance)}`
          : fc.defaultReportMessage(details);
        failures.push(
          `seed ${caseSeed} (ORACLE_DIFFERENTIAL_SEED=${caseSeed} ORACLE_DIFFERENTIAL_RUNS=1 replays it):\n${found}`,
        );
      }
      console.log(
        `oracle differential: ${runs - failures.length} of ${runs} case(s) agree (${stageBuilds} stage builds: ${failedAlike} failed in both, ${failedOnStubs} only in BuildKit, on its mount stubs); ` +
          `kept differences that explained differences: ${[...used].map(([id, n]) => `${id} ×${n}`).join(", ") || "none"}`,
      );
      expect(failures.join("\n\n")).toBe("");
    },
    900_000 + runs * (60_000 + SHRINK_MS),
  );
});
