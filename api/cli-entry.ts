/** Where tbuild's own CLI is, for the processes tbuild starts as itself (rootless calls, monitors). */
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TbuildError } from "../errors/index.js";

/**
 * The CLI's entry in this package, as bin/tbuild picks it: the bundle (scripts/bundle.mjs) unless
 * dist is newer. Found from this module in dist/api/ (the library), dist/bundle/cli/ (the CLI's
 * bundle) or api/ (the sources, under tests).
 */
export function cliEntry(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = [path.join(here, ".."), path.join(here, "..", ".."), path.join(here, "..", "..", "..")].find(
    (dir) => existsSync(path.join(dir, "bin", "tbuild")),
  );
  if (root === undefined) throw new TbuildError("E_ROOTLESS_EXEC", `cannot find tbuild's CLI above ${here}`);
  const main = path.join(root, "dist", "cli", "main.js");
  const bundle = path.join(root, "dist", "bundle", "cli", "main.js");
  const mtime = (file: string) => statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? -1;
  return mtime(bundle) > mtime(main) ? bundle : main;
}
