/**
 * Where tbuild keeps Node's compiled code between runs (cli/compile-cache.ts). Node's default is
 * one directory under the temporary directory for every user, made by the first; its entries are
 * 0600, so another user (the SSH user of a worker host where root ran tbuild first) could read
 * none back and compiled everything again on every start. Each user now keeps a directory of their
 * own, and a directory someone else made is never used for code.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { compileCacheDir } from "../../cli/compile-cache.js";
import { tbuildBin } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const TEST_USER = "tbuild-test";
const testUser = () => {
  const id = spawnSync("id", ["-u", TEST_USER], { encoding: "utf8" });
  return id.status === 0 ? Number(id.stdout.trim()) : undefined;
};

/** The entries Node wrote under `dir` (one directory per Node version, entries in it). */
function cachedEntries(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((version) => readdirSync(path.join(dir, version)));
}

describe("the compile cache directory", () => {
  it("is the shared one when this user made it, and made private when there is none", () => {
    const tmp = tempDir("cc-tmp");
    const uid = process.getuid!();
    const env = { HOME: "/nonexistent-home" };
    expect(compileCacheDir(env, tmp, uid)).toBe(path.join(tmp, "node-compile-cache"));
    const made = lstatSync(path.join(tmp, "node-compile-cache"));
    expect(made.mode & 0o777).toBe(0o700);
    expect(made.uid).toBe(uid);
    // Made before, by this user: used as it is.
    expect(compileCacheDir(env, tmp, uid)).toBe(path.join(tmp, "node-compile-cache"));
  });

  it("is the user's own cache directory when the shared one is another user's, or others may write it", () => {
    const tmp = tempDir("cc-other");
    const shared = path.join(tmp, "node-compile-cache");
    mkdirSync(shared, { mode: 0o755 });
    const uid = process.getuid!();
    // Another user's (as seen by a user other than its owner).
    expect(compileCacheDir({ HOME: "/home/someone" }, tmp, uid + 1)).toBe(
      "/home/someone/.cache/tbuild/node-compile-cache",
    );
    expect(compileCacheDir({ HOME: "/home/someone", XDG_CACHE_HOME: "/xdg" }, tmp, uid + 1)).toBe(
      "/xdg/tbuild/node-compile-cache",
    );
    // This user's, but writable by others: someone else could have put code there.
    chmodSync(shared, 0o777);
    expect(compileCacheDir({ HOME: "/home/me" }, tmp, uid)).toBe("/home/me/.cache/tbuild/node-compile-cache");
    // Nowhere of the user's own to go: no cache rather than a shared one.
    expect(compileCacheDir({}, tmp, uid)).toBeUndefined();
  });

  it("a rootless user's tbuild keeps its compiled code in its own home when root's is in the temporary directory", () => {
    const uid = testUser();
    if (uid === undefined || process.getuid!() !== 0) {
      throw new Error(`this test runs as root with the user ${TEST_USER} (.ci/install makes it)`);
    }
    const tmp = tempDir("cc-tmp-root");
    chmodSync(tmp, 0o1777);
    // Root ran tbuild first: the shared directory is root's, its entries 0600.
    const asRoot = spawnSync(tbuildBin, ["version"], {
      env: { ...process.env, TMPDIR: tmp },
      encoding: "utf8",
    });
    expect(asRoot.status, asRoot.stderr).toBe(0);
    const shared = path.join(tmp, "node-compile-cache");
    expect(cachedEntries(shared).length).toBeGreaterThan(0);

    const home = tempDir("cc-home");
    chownSync(home, uid, uid);
    const asUser = spawnSync(
      "runuser",
      ["-u", TEST_USER, "--", "env", `TMPDIR=${tmp}`, `HOME=${home}`, tbuildBin, "version"],
      { encoding: "utf8" },
    );
    expect(asUser.status, asUser.stderr).toBe(0);
    const own = path.join(home, ".cache", "tbuild", "node-compile-cache");
    expect(cachedEntries(own).length).toBeGreaterThan(0);
    for (const version of readdirSync(own)) expect(lstatSync(path.join(own, version)).uid).toBe(uid);
  });
});
