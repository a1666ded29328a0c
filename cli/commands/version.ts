/**
 * `tbuild version`: what a bug report needs: tbuild's version and the git commit it was built
 * from, the Node running it, and the runc its steps and containers would run with. With
 * `--platforms`, what this host runs RUN steps of (worker/emulation.ts).
 */
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { promisify } from "node:util";
import { describeRunner, probePlatforms } from "../../worker/emulation.js";
import { findRunc } from "../../worker/sandbox/host.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

const execFileAsync = promisify(execFile);
/** The package root: dist/cli/commands/ is three levels below it. */
const packageRoot = new URL("../../../", import.meta.url);

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.values.platforms === true) {
    for (const support of await probePlatforms(ctx.env)) {
      ctx.stdout.write(`${support.platform.padEnd(14)} ${describeRunner(support)}\n`);
    }
    return 0;
  }
  const pkg = JSON.parse(readFileSync(new URL("package.json", packageRoot), "utf8")) as { version: string };
  const [commit, runc] = await Promise.all([sourceCommit(), runcVersion(ctx.env)]);
  ctx.stdout.write(`tbuild ${pkg.version}\ncommit ${commit}\nnode ${process.version}\nrunc ${runc}\n`);
  return 0;
}

/**
 * The commit of a clone, asked of git (so it follows every checkout); else the one
 * scripts/build-info.mjs wrote into dist/ when the package was made (`npm pack`, or the `prepare`
 * of a git dependency); else `unknown`. Only a `.git` at the package root counts: an installed copy
 * inside someone's repository must not report that repository's commit.
 */
async function sourceCommit(): Promise<string> {
  const gitDir = new URL(".git", packageRoot);
  if (existsSync(gitDir)) {
    try {
      // safe.directory: a clone owned by another user (root's, read by a user) is still only read.
      const { stdout } = await execFileAsync(
        "git",
        ["-c", "safe.directory=*", `--git-dir=${gitDir.pathname}`, "rev-parse", "HEAD"],
        { timeout: 5_000 },
      );
      if (/^[0-9a-f]{40,64}$/.test(stdout.trim())) return stdout.trim();
    } catch {
      // no git, or not a repository after all: the recorded commit, if any
    }
  }
  try {
    const info = JSON.parse(readFileSync(new URL("dist/build-info.json", packageRoot), "utf8")) as {
      commit?: unknown;
    };
    if (typeof info.commit === "string" && info.commit) return info.commit;
  } catch {
    // not recorded
  }
  return "unknown";
}

/** The first line of `runc --version`, without its `runc version ` prefix; `not found` without runc. */
async function runcVersion(env: NodeJS.ProcessEnv): Promise<string> {
  let runc: string;
  try {
    runc = findRunc(env);
  } catch {
    return "not found";
  }
  try {
    const { stdout } = await execFileAsync(runc, ["--version"], { timeout: 5_000 });
    const first = stdout.split("\n")[0]!.trim();
    return `${first.replace(/^runc version /, "")} (${runc})`;
  } catch (err) {
    return `${runc} does not run: ${(err as Error).message.split("\n")[0]}`;
  }
}
