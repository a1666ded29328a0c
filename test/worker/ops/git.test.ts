/**
 * ADD of a git repository (`git` op) from a real bare repository over `file://`: the key is the
 * commit the ref names, the layer is the checkout at that commit (a tag, a branch, a commit id),
 * `subdir` and `keepGitDir` shape it, and the same commit always gives the same layer.
 */
import { execFileSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { GitOp } from "../../../solver/graph.js";
import { gitContentKey, runGit } from "../../../worker/ops/git.js";
import { tempDirs } from "../../helpers/temp.js";
import { layerEntries, type OpsFixture, opsFixture } from "./helpers.js";

const tempDir = tempDirs();
let fixture: OpsFixture;
let remote: string;
let work: string;
let firstCommit: string;
let secondCommit: string;
const COMMIT_TIME = 1_500_000_000;

function git(args: string[], cwd = work): string {
  return execFileSync("git", args, {
    cwd,
    encoding: "utf8",
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: "t",
      GIT_AUTHOR_EMAIL: "t@example.com",
      GIT_COMMITTER_NAME: "t",
      GIT_COMMITTER_EMAIL: "t@example.com",
      GIT_AUTHOR_DATE: `@${COMMIT_TIME} +0000`,
      GIT_COMMITTER_DATE: `@${COMMIT_TIME} +0000`,
    },
  }).trim();
}

beforeAll(async () => {
  fixture = await opsFixture();
  const dir = tempDir("git");
  work = path.join(dir, "work");
  await mkdir(path.join(work, "app"), { recursive: true });
  git(["init", "-q", "-b", "main", work], dir);
  await writeFile(path.join(work, "README"), "version 1\n");
  await writeFile(path.join(work, "app", "run.sh"), "#!/bin/sh\necho 1\n", { mode: 0o755 });
  git(["add", "."]);
  git(["commit", "-q", "-m", "one"]);
  firstCommit = git(["rev-parse", "HEAD"]);
  git(["tag", "-a", "v1.0", "-m", "release 1.0"]);
  await writeFile(path.join(work, "README"), "version 2\n");
  git(["commit", "-q", "-am", "two"]);
  secondCommit = git(["rev-parse", "HEAD"]);
  const bare = path.join(dir, "repo.git");
  git(["clone", "-q", "--bare", work, bare], dir);
  remote = `file://${bare}`;
});

afterAll(async () => {
  await fixture.cleanup();
});

function gitOp(extra: Partial<GitOp> = {}): GitOp {
  return { kind: "git", remote, keepGitDir: false, ...extra };
}

async function contents(op: GitOp): Promise<Record<string, string | undefined>> {
  const fs = await runGit(op, [], fixture.ctx);
  expect(fs.layers).toHaveLength(1);
  const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
  return Object.fromEntries(entries.map((e) => [e.path, e.content]));
}

describe("the git op", () => {
  it("keys on the commit an annotated tag names, and checks out that commit", async () => {
    const op = gitOp({ ref: "v1.0" });
    expect(await gitContentKey(op, fixture.ctx)).toBe(firstCommit);
    expect(await contents(op)).toEqual({
      README: "version 1\n",
      "app/": undefined,
      "app/run.sh": "#!/bin/sh\necho 1\n",
    });
  });

  it("checks out a commit given by id", async () => {
    const op = gitOp({ ref: firstCommit });
    expect(await gitContentKey(op, fixture.ctx)).toBe(firstCommit);
    expect((await contents(op)).README).toBe("version 1\n");
  });

  it("follows a branch, and the remote's default branch without a ref", async () => {
    expect(await gitContentKey(gitOp({ ref: "main" }), fixture.ctx)).toBe(secondCommit);
    expect(await gitContentKey(gitOp(), fixture.ctx)).toBe(secondCommit);
    expect((await contents(gitOp({ ref: "main" }))).README).toBe("version 2\n");
  });

  it("gives every entry root's ownership, git's modes and the commit's time", async () => {
    const fs = await runGit(gitOp({ ref: "v1.0" }), [], fixture.ctx);
    const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
    expect(entries.map((e) => [e.path, e.mode, e.uid, e.gid, e.mtime])).toEqual([
      ["README", 0o644, 0, 0, COMMIT_TIME],
      ["app/", 0o755, 0, 0, COMMIT_TIME],
      ["app/run.sh", 0o755, 0, 0, COMMIT_TIME],
    ]);
    const again = await runGit(gitOp({ ref: "v1.0" }), [], {
      ...fixture.ctx,
      stateDir: `${fixture.ctx.stateDir}-2`,
    });
    expect(again).toEqual(fs);
  });

  it("keeps only a subdirectory, or the .git directory when asked", async () => {
    expect(await contents(gitOp({ ref: "v1.0", subdir: "app" }))).toEqual({
      "run.sh": "#!/bin/sh\necho 1\n",
    });
    const withGit = await contents(gitOp({ ref: "v1.0", keepGitDir: true }));
    expect(Object.keys(withGit)).toContain(".git/HEAD");
  });

  it("names a ref the remote does not have, and a missing subdirectory", async () => {
    await expect(gitContentKey(gitOp({ ref: "no-such-branch" }), fixture.ctx)).rejects.toThrow(
      `${remote}#no-such-branch: the remote has no branch or tag named no-such-branch`,
    );
    await expect(runGit(gitOp({ ref: "v1.0", subdir: "nope" }), [], fixture.ctx)).rejects.toThrow(
      /the repository has no directory nope/,
    );
  });
});
