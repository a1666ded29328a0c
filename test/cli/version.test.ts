/**
 * `tbuild version` names what a bug report needs: tbuild's version and commit, Node, and runc.
 * The commit comes from git in a clone, and from dist/build-info.json (written by
 * scripts/build-info.mjs when npm packs or prepares tbuild) in a copy without .git.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, existsSync, readFileSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot, tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

function versionLines(stdout: string): Record<string, string> {
  return Object.fromEntries(
    stdout
      .trim()
      .split("\n")
      .map((line) => [line.slice(0, line.indexOf(" ")), line.slice(line.indexOf(" ") + 1)]),
  );
}

const headCommit = () =>
  execFileSync("git", ["-C", projectRoot, "rev-parse", "HEAD"], { encoding: "utf8" }).trim();

/** A copy of tbuild as npm installs it: bin/, dist/ and package.json, no .git, no sources. */
function installedCopy(): string {
  const dir = path.join(tempDir("installed"), "tbuild");
  for (const entry of ["bin", "dist", "package.json"]) {
    cpSync(path.join(projectRoot, entry), path.join(dir, entry), { recursive: true });
  }
  symlinkSync(path.join(projectRoot, "node_modules"), path.join(dir, "node_modules"));
  // The clone's own record, if `npm ci` ran prepare there; this copy starts unrecorded.
  rmSync(path.join(dir, "dist/build-info.json"), { force: true });
  return dir;
}

describe("tbuild version", () => {
  it("prints tbuild's version, the clone's commit, Node's version and runc's", () => {
    const { status, stdout } = tbuild(["version"]);
    expect(status).toBe(0);
    const lines = versionLines(stdout);
    const pkg = JSON.parse(readFileSync(path.join(projectRoot, "package.json"), "utf8"));
    expect(lines.tbuild).toBe(pkg.version);
    expect(lines.commit).toBe(headCommit());
    const node = execFileSync(path.join(projectRoot, "node_modules/node/bin/node"), ["--version"], {
      encoding: "utf8",
    }).trim();
    expect(lines.node).toBe(node);
    const runc = execFileSync("runc", ["--version"], { encoding: "utf8" }).split("\n")[0]!;
    expect(runc).toMatch(/^runc version /);
    expect(lines.runc).toContain(runc.slice("runc version ".length));
    expect(tbuild(["--version"]).stdout).toBe(stdout);
  });

  it("says runc is not found when it is not installed", () => {
    // A private mount namespace where every runc tbuild could find is an empty, non-executable file.
    const runcs = [
      "/usr/local/sbin/runc",
      "/usr/sbin/runc",
      "/sbin/runc",
      "/usr/local/bin/runc",
      "/usr/bin/runc",
    ]
      .filter((p) => existsSync(p))
      .map((p) => realpathSync(p));
    const hide = [...new Set(runcs)].map((p) => `mount --bind /dev/null ${p} &&`).join(" ");
    const result = spawnSync(
      "unshare",
      ["-m", "sh", "-c", `${hide} exec "$0" version`, `${projectRoot}bin/tbuild`],
      {
        encoding: "utf8",
      },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(versionLines(result.stdout).runc).toBe("not found");
  });

  it("in a copy without .git names the commit recorded when it was packed, else unknown", () => {
    const copy = installedCopy();
    const bin = path.join(copy, "bin/tbuild");
    const unrecorded = spawnSync(bin, ["version"], { encoding: "utf8" });
    expect(unrecorded.status, unrecorded.stderr).toBe(0);
    expect(versionLines(unrecorded.stdout).commit).toBe("unknown");

    // What `npm pack` (and a git dependency's install) runs: prepare, which records the commit.
    const scripts = JSON.parse(readFileSync(path.join(projectRoot, "package.json"), "utf8")).scripts;
    expect(scripts.prepare).toContain("node scripts/build-info.mjs");
    execFileSync(process.execPath, ["scripts/build-info.mjs", path.join(copy, "dist")], { cwd: projectRoot });
    const recorded = spawnSync(bin, ["version"], { encoding: "utf8" });
    expect(versionLines(recorded.stdout).commit).toBe(headCommit());
  });
});
