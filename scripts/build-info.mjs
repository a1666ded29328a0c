#!/usr/bin/env node
// Records the git commit tbuild is built from in dist/build-info.json (or DIR/build-info.json), for
// `tbuild version` in a copy that has no .git: an npm package (`npm pack` runs `prepare`), or a git
// dependency (npm clones it and runs `prepare`). Outside a clone it records nothing and succeeds.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const dir = path.resolve(process.argv[2] ?? path.join(root, "dist"));
// Only a .git of tbuild's own: sources unpacked inside another repository must not take its commit.
if (!existsSync(path.join(root, ".git"))) process.exit(0);
let commit;
try {
  commit = execFileSync("git", ["-c", "safe.directory=*", "-C", root, "rev-parse", "HEAD"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  }).trim();
} catch {
  process.exit(0);
}
mkdirSync(dir, { recursive: true });
writeFileSync(path.join(dir, "build-info.json"), `${JSON.stringify({ commit })}\n`);
