/**
 * tbuild judged by BuildKit itself (compare.ts): each case (cases.ts) is built by both, and the
 * root filesystems and image configs must not differ but for BuildKit 0.8's known artifacts
 * (KNOWN_ARTIFACTS) and the differences kept in docs/compat.md (kept.ts, each with its reason).
 *
 * `npm test` runs a bounded set (every example and every BOUNDED_STRIDE-th scenario in reach);
 * `npm run oracle` (TBUILD_ORACLE=full) runs every case.
 */
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeScenarioBusyboxRootfs } from "../build/buildkit-scenarios-harness.js";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";
import { type BuildKitOracle, startBuildKit } from "./buildkit.js";
import { EXAMPLES, layOut, scenarioCases } from "./cases.js";
import { buildWithBuildKit, buildWithTbuild, caseWork, differences, type OracleCase } from "./compare.js";
import { KEPT } from "./kept.js";

const FULL = process.env.TBUILD_ORACLE === "full";
/** In `npm test`, one scenario in this many (in file order) runs. */
const BOUNDED_STRIDE = 6;

const tempDir = tempDirs();

const scenarios = scenarioCases();
const inReach = scenarios.filter((s) => s.outOfReach === undefined).map((s) => s.scenario);
const chosen = FULL ? inReach : inReach.filter((_, i) => i % BOUNDED_STRIDE === 0);
/** How many differences each kept rule explained. */
const used = new Map<string, number>();

describe("tbuild's results equal BuildKit's", () => {
  let oracle: BuildKitOracle;
  let store = "";
  let work = "";
  beforeAll(async () => {
    work = tempDir("oracle-work");
    const started = startBuildKit();
    // The base images, the same root filesystems in both: busybox as the scenario suite makes it
    // (Docker's busybox accounts), and an `alpine` stand-in (the same, with /etc/alpine-release).
    const busybox = await makeScenarioBusyboxRootfs(path.join(work, "busybox-rootfs"));
    const alpine = path.join(work, "alpine-rootfs");
    cpSync(busybox, alpine, { recursive: true, verbatimSymlinks: true });
    writeFileSync(path.join(alpine, "etc", "alpine-release"), "3.20.3\n");
    store = path.join(work, "store");
    for (const [rootfs, name] of [
      [busybox, "busybox:latest"],
      [alpine, "alpine:latest"],
    ] as const) {
      const imported = tbuild(["import", rootfs, name, "--change", 'CMD ["sh"]'], {
        env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
      });
      if (imported.status !== 0) throw new Error(`tbuild import of ${name} failed: ${imported.stderr}`);
    }
    oracle = await started;
    oracle.importRootfs(busybox, "busybox:latest", ['CMD ["sh"]']);
    oracle.importRootfs(alpine, "alpine:latest", ['CMD ["sh"]']);
  }, 180_000);
  afterAll(() => oracle?.stop());

  /**
   * The differences no kept rule explains (empty: the builders agree); the rules that explained
   * the others are counted in `used`.
   */
  async function judge(c: OracleCase, dir: string): Promise<string[]> {
    const ours = await buildWithTbuild(c, store, dir);
    let theirs: Awaited<ReturnType<typeof buildWithBuildKit>>;
    try {
      theirs = await buildWithBuildKit(c, oracle, dir);
    } catch (err) {
      const rule = KEPT.find((k) => k.buildKitFails?.cases.includes(c.name));
      if (!rule?.buildKitFails?.error.test(String(err))) throw err;
      used.set(rule.id, (used.get(rule.id) ?? 0) + 1);
      return [];
    }
    const dockerfile = readFileSync(path.resolve(c.context, c.dockerfile ?? "Dockerfile"), "utf8");
    const unexplained: string[] = [];
    for (const d of differences(ours, theirs)) {
      const rule = KEPT.find((k) => k.explains?.(d, dockerfile));
      if (rule) used.set(rule.id, (used.get(rule.id) ?? 0) + 1);
      else unexplained.push(d.text);
    }
    return unexplained;
  }

  it.each(EXAMPLES)("$name", async (c) => {
    const w = caseWork(work, c.name);
    try {
      expect(await judge(c, w.dir)).toEqual([]);
    } finally {
      w.remove();
    }
  });

  it.each(chosen.map((s) => [s.name, s] as const))("scenario %s", async (_name, scenario) => {
    const w = caseWork(work, scenario.name);
    try {
      mkdirSync(w.dir, { recursive: true });
      const c = await layOut(scenario, w.dir);
      expect(await judge(c, w.dir)).toEqual([]);
    } finally {
      w.remove();
    }
  });

  // Only a run of every case can tell that a rule no longer explains anything (BuildKit or tbuild
  // changed): the bounded set may leave a rule's cases out.
  if (FULL) {
    it("every kept difference still explains one (else it is stale: remove it, and its row in docs/compat.md)", () => {
      expect(KEPT.map((k) => k.id).filter((id) => !used.has(id))).toEqual([]);
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
      `kept differences (docs/compat.md) that explained differences: ${[...used].map(([id, n]) => `${id} ×${n}`).join(", ") || "none"}`,
    ].join("\n"),
  );
});
