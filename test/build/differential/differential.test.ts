/**
 * The differential, property-based test of the whole build (issue 12): random Dockerfiles,
 * contexts and edit sequences (scenario.ts), each build in a warm store checked against a build in
 * an empty store and against a model of content keys (model.ts, run.ts). A failure shrinks to a
 * minimal case, printed with its seed and written as JSON (into DIFFERENTIAL_FOUND_DIR when set);
 * the cases kept in test/fixtures/differential/ are replayed first.
 *
 * In `npm test` it runs a few cases (DIFFERENTIAL_RUNS, default 6); `npm run fuzz:build --
 * --minutes N --seed S` runs it for N minutes (scripts/fuzz-build.ts).
 */
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { projectRoot, tbuildBin } from "../../helpers/cli.js";
import { importBusybox } from "../../helpers/images.js";
import { tempDirs } from "../../helpers/temp.js";
import { type RunnerSetup, runScenario, stats } from "./run.js";
import { type Scenario, scenarioArb } from "./scenario.js";

const tempDir = tempDirs();
let setup: RunnerSetup;

const fixturesDir = path.join(projectRoot, "test/fixtures/differential");
const minutes = Number(process.env.DIFFERENTIAL_MINUTES ?? 0);
const runs = Number(process.env.DIFFERENTIAL_RUNS ?? 6);
const seed =
  process.env.DIFFERENTIAL_SEED !== undefined ? Number(process.env.DIFFERENTIAL_SEED) : Date.now() % 2 ** 31;
const verbose = process.env.DIFFERENTIAL_VERBOSE === "1";
/** How long shrinking a failure may take before the smallest case found so far is reported. */
const SHRINK_MS = Number(process.env.DIFFERENTIAL_SHRINK_MINUTES ?? 10) * 60_000;

beforeAll(async () => {
  const work = tempDir("differential");
  chmodSync(work, 0o755);
  const template = path.join(work, "template-store");
  await importBusybox(template, "busybox");
  setup = { work, template, tbuildBin };
});

interface Fixture {
  note: string;
  seed?: number;
  scenario: Scenario;
}

const fixtures = readdirSync(fixturesDir, { withFileTypes: true })
  .filter((e) => e.isFile() && e.name.endsWith(".json"))
  .map((e) => ({
    name: e.name,
    fixture: JSON.parse(readFileSync(path.join(fixturesDir, e.name), "utf8")) as Fixture,
  }));

describe("a rebuild equals a fresh build, and runs exactly the steps whose content keys changed", () => {
  it.each(fixtures)(
    "kept case $name",
    async ({ fixture }) => {
      await runScenario(fixture.scenario, setup);
    },
    600_000,
  );

  it(
    `random cases (${minutes > 0 ? `${minutes} minutes` : `${runs} runs`}, seeds from ${seed})`,
    async () => {
      const started = Date.now();
      const deadline = started + minutes * 60_000;
      let cases = 0;
      // One fast-check run per seed, seed after seed: each case is replayed by its own seed, and a
      // failure found late in a soak run still gets its full time to shrink.
      for (let i = 0; minutes > 0 ? Date.now() < deadline : i < runs; i++) {
        const caseSeed = seed + i;
        const details = await fc.check(
          fc.asyncProperty(scenarioArb({ maxEdits: minutes > 0 ? 6 : 3 }), async (scenario) => {
            await runScenario(scenario, setup, verbose ? (line) => console.log(line) : undefined);
          }),
          { seed: caseSeed, numRuns: 1, interruptAfterTimeLimit: SHRINK_MS, markInterruptAsFailure: false },
        );
        cases++;
        if (!details.failed) continue;
        const found = process.env.DIFFERENTIAL_FOUND_DIR ?? tempDir("differential-found");
        mkdirSync(found, { recursive: true });
        const file = path.join(found, `seed-${caseSeed}.json`);
        const fixture: Fixture = {
          note: "found by the differential test; replace this note with what it shows",
          seed: caseSeed,
          scenario: details.counterexample![0],
        };
        writeFileSync(file, `${JSON.stringify(fixture, null, 2)}\n`);
        console.log(`differential: seed ${caseSeed} fails; its smallest case is in ${file}`);
        expect.fail(`${fc.defaultReportMessage(details)}\n\n${String(details.errorInstance)}`);
      }
      const elapsed = ((Date.now() - started) / 60_000).toFixed(1);
      console.log(
        `differential: ${cases} case(s) clean in ${elapsed} minutes, seeds ${seed}..${seed + cases - 1}; ` +
          `${stats.rounds} builds (${stats.failedBuilds} failed alike in both stores), ` +
          `${stats.stepsRun} steps run and ${stats.stepsCached} cached in the warm store ` +
          `(${stats.stepsCachedByContent} of them by what they read of a stage or the image alone)`,
      );
    },
    minutes > 0 ? minutes * 60_000 + SHRINK_MS + 300_000 : 900_000,
  );
});
