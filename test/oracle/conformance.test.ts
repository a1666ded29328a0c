/**
 * tbuild judged by BuildKit itself (compare.ts): each case (cases.ts) is built by both, and the
 * root filesystems and image configs must not differ but for BuildKit 0.8's known artifacts
 * (KNOWN_ARTIFACTS) and the differences kept in docs/compat.md (kept.ts, each with its reason).
 *
 * The cases: the examples, the ported BuildKit scenarios in reach of BuildKit 0.8, and BuildKit's
 * parser fixtures (each built on busybox under the names its FROM lines give).
 *
 * `npm test` runs a bounded set (every example, every BOUNDED_STRIDE-th scenario in reach and
 * parser fixture);
 * `npm run oracle` (TBUILD_ORACLE=full) runs every case.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";
import { DEBIAN_EXAMPLES, EXAMPLES, layOut, parserFixtureCases, scenarioCases } from "./cases.js";
import { buildWithBuildKit, buildWithTbuild, caseWork } from "./compare.js";
import { KEPT } from "./kept.js";
import {
  giveDebianSlim,
  judge,
  judgeAgainstItself,
  type OracleSetup,
  outcome,
  startOracleWithBaseImages,
  unexplained,
} from "./oracle-setup.js";

const FULL = process.env.TBUILD_ORACLE === "full";
/** In `npm test`, one scenario in this many (in file order) runs. */
const BOUNDED_STRIDE = 6;

const tempDir = tempDirs();

const scenarios = scenarioCases();
const inReach = scenarios.filter((s) => s.outOfReach === undefined).map((s) => s.scenario);
const chosen = FULL ? inReach : inReach.filter((_, i) => i % BOUNDED_STRIDE === 0);
const parserFixtures = parserFixtureCases();
const chosenFixtures = FULL ? parserFixtures : parserFixtures.filter((_, i) => i % BOUNDED_STRIDE === 0);
/** What each parser fixture came to, for the summary. */
const fixtureOutcomes = new Map<string, string>();
/** How many differences each kept rule explained. */
const used = new Map<string, number>();

describe("tbuild's results equal BuildKit's", () => {
  let setup: OracleSetup | undefined;
  let work = "";
  beforeAll(async () => {
    work = tempDir("oracle-work");
    setup = await startOracleWithBaseImages(work);
  }, 180_000);
  afterAll(() => setup?.oracle.stop());

  it.each(EXAMPLES)("$name", async (c) => {
    const w = caseWork(work, c.name);
    try {
      expect(await judge(setup!, c, w.dir, used)).toEqual([]);
    } finally {
      w.remove();
    }
  });

  it.each(chosen.map((s) => [s.name, s] as const))("scenario %s", async (_name, scenario) => {
    const w = caseWork(work, scenario.name);
    try {
      mkdirSync(w.dir, { recursive: true });
      const c = await layOut(scenario, w.dir);
      expect(await judge(setup!, c, w.dir, used)).toEqual([]);
    } finally {
      w.remove();
    }
  });

  // BuildKit's parser fixtures are real projects' Dockerfiles: most install packages with apt-get
  // or copy files their directory does not hold, and both builders fail those on busybox (the
  // first failure may be another step: BuildKit checks COPY sources while RUNs run). What both
  // build is compared whole; a fixture only one builder builds is a difference.
  it.each(chosenFixtures.map((c) => [c.name, c] as const))("parser fixture %s", async (_name, c) => {
    for (const base of c.bases) {
      const tagged = tbuild(["tag", "busybox:latest", base], { env: { TBUILD_ROOT: setup!.store } });
      const theirs = setup!.oracle.docker(["tag", "busybox:latest", base]);
      // A name that is no reference (the escape fixture's "`") is refused by both, as its FROM is.
      expect(tagged.status === 0).toBe(theirs.status === 0);
    }
    const w = caseWork(work, c.name);
    try {
      const result = await outcome(setup!, c, w.dir, used);
      fixtureOutcomes.set(c.name, result.kind);
      if (c.negative) expect(result.kind).toBe("both failed");
      if (result.kind === "compared") expect(result.differences).toEqual([]);
      else expect(result).toMatchObject({ kind: "both failed" });
    } finally {
      w.remove();
    }
  });

  it("a context file's extended attributes: BuildKit's COPY keeps them, tbuild's cannot yet and says so, and nothing else differs", async () => {
    const w = caseWork(work, "context-xattrs");
    try {
      const context = path.join(w.dir, "context");
      mkdirSync(context, { recursive: true });
      writeFileSync(path.join(context, "Dockerfile"), "FROM busybox\nCOPY f /f\n");
      writeFileSync(path.join(context, "f"), "with an attribute\n");
      execFileSync("setfattr", ["-n", "user.origin", "-v", "context", path.join(context, "f")]);
      const c = { name: "context-xattrs", context };
      const ours = await buildWithTbuild(c, setup!.store, w.dir);
      expect(ours.output).toContain(
        "WARNING: extended attributes left out of the build context: 1 entry carried them (user.origin on f); tbuild does not keep extended attributes yet",
      );
      const theirs = await buildWithBuildKit(c, setup!.oracle, w.dir);
      const before = used.get("xattrs-not-kept") ?? 0;
      const source = { dockerfile: "FROM busybox\nCOPY f /f\n", dockerignore: "" };
      expect(unexplained(ours, theirs, source, used)).toEqual([]);
      expect(used.get("xattrs-not-kept") ?? 0).toBe(before + 1);
    } finally {
      w.remove();
    }
  });

  if (FULL) {
    describe("the examples on debian:bookworm-slim", () => {
      beforeAll(() => giveDebianSlim(setup!, work), 20 * 60_000);
      it.each(DEBIAN_EXAMPLES)(
        "$name",
        async (c) => {
          const w = caseWork(work, c.name);
          try {
            const judged = await judgeAgainstItself(setup!, c, w.dir, used);
            console.log(
              `${c.name}: content BuildKit's own second build changed: ${judged.unstable.join(" ")}`,
            );
            expect(judged.differences).toEqual([]);
          } finally {
            w.remove();
          }
        },
        20 * 60_000,
      );
    });
  }

  // Only a run of every case can tell that a rule no longer explains anything (BuildKit or tbuild
  // changed): the bounded set may leave a rule's cases out. A rule only random cases showed has no
  // case here to show it.
  if (FULL) {
    it("every kept difference still explains one (else it is stale: remove it, and its row in docs/compat.md)", () => {
      const fixed = KEPT.filter((k) => !k.foundByRandomCases);
      expect(fixed.map((k) => k.id).filter((id) => !used.has(id))).toEqual([]);
    });
  }
});

afterAll(() => {
  const out = scenarios.filter((s) => s.outOfReach !== undefined);
  const reasons = new Map<string, number>();
  for (const s of out) reasons.set(s.outOfReach!, (reasons.get(s.outOfReach!) ?? 0) + 1);
  console.log(
    [
      `BuildKit oracle: ${scenarios.length} ported scenarios, ${inReach.length} in reach of BuildKit 0.8, ${chosen.length} run${FULL ? "" : ` (one in ${BOUNDED_STRIDE}; npm run oracle runs all)`}; out of reach:`,
      ...[...reasons].sort((a, b) => b[1] - a[1]).map(([reason, n]) => `  ${n} × ${reason}`),
      `BuildKit's parser fixtures: ${parserFixtures.length}, ${chosenFixtures.length} run: ${[...fixtureOutcomes.values()].filter((k) => k === "compared").length} built by both and compared, ${[...fixtureOutcomes.values()].filter((k) => k === "both failed").length} refused or failed by both`,
      `kept differences (docs/compat.md) that explained differences: ${[...used].map(([id, n]) => `${id} ×${n}`).join(", ") || "none"}`,
    ].join("\n"),
  );
});
