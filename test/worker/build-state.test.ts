/**
 * A build's state directory names its owner from the moment it exists (worker/build-state.ts): a
 * build killed right after making it leaves a directory the next build removes at once, not one
 * that must be kept for a minute because it does not say whose it is.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { makeBuildStateDir, removeAbandonedBuildStates } from "../../worker/build-state.js";
import { projectRoot } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

describe("a build's state directory", () => {
  it("is removed by the next build as soon as the process that made it is gone", async () => {
    const store = tempDir("build-state");
    // A process (running the built worker) that makes one and is gone at once, as a build killed
    // right after making it.
    const made = spawnSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { makeBuildStateDir } = await import(${JSON.stringify(path.resolve(projectRoot, "dist/worker/build-state.js"))});
         process.stdout.write(await makeBuildStateDir(${JSON.stringify(store)}));`,
      ],
      { encoding: "utf8" },
    );
    expect(made.status, made.stderr).toBe(0);
    expect(existsSync(made.stdout)).toBe(true);
    // Killed before it wrote anything inside it.
    for (const name of readdirSync(made.stdout)) rmSync(path.join(made.stdout, name), { recursive: true });
    const own = await makeBuildStateDir(store);
    const warnings: string[] = [];
    await removeAbandonedBuildStates(store, { warn: (m) => warnings.push(m) });
    expect(readdirSync(store)).toEqual([path.basename(own)]);
    expect(warnings).toEqual([]);
  });
});
