/**
 * The ops as an unprivileged user: `tbuild-test` (made by .ci/install, with a subuid/subgid range)
 * runs a probe that re-executes itself in tbuild's user namespace, then computes a context key and
 * runs a COPY --chown=app there. The layer must say what the same COPY says as root: the names of
 * the destination's passwd, not the ids the files have on the host. Needs `npm run build` first.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contextChecksum } from "../../../worker/ops/local.js";
import { projectRoot } from "../../helpers/cli.js";

const USER = "tbuild-test";
const node = path.join(projectRoot, "node_modules/node/bin/node");
const probe = path.join(projectRoot, "test/worker/ops/fixtures/rootless-ops.mjs");

let work: string;

beforeAll(async () => {
  if (!existsSync(path.join(projectRoot, "dist/worker/ops/index.js"))) {
    throw new Error("dist/ is not built: run `npm run build` before these tests");
  }
  if (userInfo().uid !== 0) throw new Error("these tests run as root, to act as another user");
  if (spawnSync("id", [USER]).status !== 0) {
    throw new Error(`user ${USER} is missing: .ci/install creates it (with a subuid/subgid range)`);
  }
  work = await mkdtemp(path.join(tmpdir(), "tbuild-ops-rootless-"));
  await chmod(work, 0o755);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("file ops in tbuild's user namespace", () => {
  it("copies with --chown=name as root would, and keys the context as root would", async () => {
    const uid = Number(execFileSync("id", ["-u", USER], { encoding: "utf8" }).trim());
    const storeRoot = path.join(work, "store");
    await mkdir(storeRoot);
    await chown(storeRoot, uid, uid);
    const baseDir = path.join(work, "base");
    await mkdir(path.join(baseDir, "etc"), { recursive: true });
    await writeFile(
      path.join(baseDir, "etc", "passwd"),
      "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
    );
    await writeFile(path.join(baseDir, "etc", "group"), "root:x:0:\napp:x:1001:\n");
    const contextDir = path.join(work, "context");
    await mkdir(path.join(contextDir, "app"), { recursive: true });
    await writeFile(path.join(contextDir, "app", "main.sh"), "echo hi\n", { mode: 0o755 });
    // The user's own checkout: owned by the user on the host, uid 0 inside the namespace.
    execFileSync("chown", ["-R", `${uid}:${uid}`, contextDir, baseDir]);

    const result = spawnSync("runuser", ["-u", USER, "--", node, probe, storeRoot, baseDir, contextDir], {
      encoding: "utf8",
      cwd: "/",
      timeout: 60_000,
    });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const report = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
    expect(report).toMatchObject({ uid: 0, inUserNamespace: true });
    expect(report.entries).toEqual([
      { path: "srv/", uid: 1000, gid: 1001, mode: 0o755 },
      { path: "srv/app/", uid: 1000, gid: 1001, mode: 0o755 },
      { path: "srv/app/main.sh", uid: 1000, gid: 1001, mode: 0o755 },
    ]);
    expect(report.contextKey).toBe(
      await contextChecksum(contextDir, { followPaths: [], excludePatterns: [] }),
    );
  });
});
