/**
 * Soak runs of the differential build test (test/build/differential): random Dockerfiles,
 * contexts and edits for N minutes, one case per seed from S on. A failing case is shrunk and
 * written to test/fixtures/differential/seed-<seed>.json, where `npm test` replays it from then on.
 *
 *   npm run fuzz:build -- --minutes 30 --seed 42 [--shrink-minutes 10] [--verbose]
 *
 * Run as root (the cases build as root and as the rootless user `tbuild-test`), after `npm run build`.
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { parseArgs } from "node:util";

const root = path.join(import.meta.dirname, "..");
const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    seed: { type: "string" },
    "shrink-minutes": { type: "string", default: "10" },
    verbose: { type: "boolean", default: false },
  },
});
const minutes = Number(values.minutes);
const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 2 ** 31;
if (!(minutes > 0) || !Number.isSafeInteger(seed)) {
  console.error("usage: npm run fuzz:build -- --minutes N [--seed S] [--shrink-minutes M] [--verbose]");
  process.exit(2);
}
console.log(`fuzz:build: ${minutes} minutes, seeds from ${seed}`);
const result = spawnSync(
  path.join(root, "node_modules/.bin/vitest"),
  ["run", "test/build/differential/differential.test.ts"],
  {
    cwd: root,
    stdio: "inherit",
    env: {
      ...process.env,
      DIFFERENTIAL_MINUTES: String(minutes),
      DIFFERENTIAL_SEED: String(seed),
      DIFFERENTIAL_SHRINK_MINUTES: values["shrink-minutes"],
      DIFFERENTIAL_FOUND_DIR: path.join(root, "test/fixtures/differential"),
      ...(values.verbose ? { DIFFERENTIAL_VERBOSE: "1" } : {}),
    },
  },
);
process.exit(result.status ?? 1);
