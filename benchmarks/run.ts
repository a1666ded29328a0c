/**
 * Runs the benchmarks: `npm run bench` runs every one, `npm run bench -- parse pull` the named
 * ones. Each benchmark is its own script that prints its figures; this only builds first and runs
 * them in turn with the Node that runs this script.
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const all = readdirSync(here)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts")
  .map((f) => f.slice(0, -3))
  .sort();
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !all.includes(w));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(", ")}; there are: ${all.join(", ")}`);
  process.exit(2);
}
const build = spawnSync("npm", ["run", "build"], { cwd: `${here}..`, stdio: "inherit" });
if (build.status !== 0) process.exit(build.status ?? 1);
let failed = false;
for (const name of wanted.length > 0 ? wanted : all) {
  console.log(`\n== ${name}`);
  const result = spawnSync(process.execPath, [`${here}${name}.ts`], { stdio: "inherit" });
  if (result.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
