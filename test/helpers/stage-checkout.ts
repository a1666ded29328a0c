/**
 * vitest's global setup: the rootless tests run this checkout's `bin/tbuild` (and a few scripts of
 * `test/`) as the unprivileged user `tbuild-test`, who cannot reach a checkout inside a private
 * directory (a clone under `/root` or a Debian home directory, mode 0700). When that user cannot
 * reach it, the checkout is bind-mounted at a directory of its own under the system's temporary
 * directory, and the tests use it from there (`TBUILD_TEST_ROOT`, read by helpers/cli.ts). The
 * mount goes when the run ends.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmdirSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TEST_USER = "tbuild-test";
const checkout = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");

function reachableBy(user: string, dir: string): boolean {
  const probe = spawnSync("runuser", ["-u", user, "--", "test", "-x", path.join(dir, "bin/tbuild")]);
  return probe.status === 0;
}

export default function setup(): (() => void) | undefined {
  if (process.env.TBUILD_TEST_ROOT) return undefined;
  if (userInfo().uid !== 0 || spawnSync("id", [TEST_USER]).status !== 0) return undefined;
  if (reachableBy(TEST_USER, checkout)) return undefined;
  const stage = mkdtempSync(path.join(tmpdir(), "tbuild-checkout-"));
  chmodSync(stage, 0o755);
  const mounted = spawnSync("mount", ["--bind", checkout, stage], { encoding: "utf8" });
  if (mounted.status !== 0) {
    rmdirSync(stage);
    throw new Error(
      `the test user ${TEST_USER} cannot reach ${checkout}, and bind-mounting it where it can failed: ${mounted.stderr.trim()}. Clone tbuild where ${TEST_USER} can read it (e.g. under /srv or /tmp)`,
    );
  }
  process.env.TBUILD_TEST_ROOT = stage;
  return () => {
    spawnSync("umount", ["-l", stage]);
    rmdirSync(stage);
  };
}
