/**
 * `git` (ADD https://host/repo.git#ref:subdir): a checkout as a one-layer filesystem. The cache
 * key is the commit the ref names on the remote (`git ls-remote`), so a moved branch re-runs the
 * steps that use it and an unmoved one does not. The checkout fetches only that commit
 * (`--depth 1`) when the remote allows it, else everything; `subdir` keeps one directory;
 * `.git` is dropped unless `keepGitDir`. Every entry is owned by 0:0 with git's modes and the
 * commit's time, so the same commit always gives the same layer.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { TbuildError } from "../../errors/index.js";
import { writeLayer } from "../../oci/layer.js";
import type { GitOp } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import { rootPath } from "../root-path.js";
import type { OpContext } from "./context.js";
import { selectContext, treeTar } from "./context-walk.js";

const run = promisify(execFile);

export class GitSourceError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_GIT_SOURCE", message, cause === undefined ? {} : { cause });
  }
}

const FULL_COMMIT = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

/** Runs git without ever asking a question on the terminal. */
async function git(args: string[], options: { cwd?: string; signal: AbortSignal }): Promise<string> {
  try {
    const { stdout } = await run("git", args, {
      ...(options.cwd ? { cwd: options.cwd } : {}),
      signal: options.signal,
      maxBuffer: 64 << 20,
      env: { ...process.env, GIT_TERMINAL_PROMPT: "0", GIT_ASKPASS: "", LC_ALL: "C" },
    });
    return stdout;
  } catch (err) {
    if (options.signal.aborted) throw err;
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT") {
      throw new GitSourceError(
        "git is not installed: ADD of a git repository needs it (apt-get install git)",
        err,
      );
    }
    throw new GitSourceError(`git ${args[0]} failed: ${(e.stderr ?? e.message).trim()}`, err);
  }
}

function describe(op: GitOp): string {
  return `${op.remote}${op.ref ? `#${op.ref}` : ""}`;
}

export async function gitContentKey(op: GitOp, ctx: OpContext): Promise<string> {
  return resolveCommit(op, ctx);
}

/**
 * The commit `op.ref` names: a full commit id as it is; else what the remote's refs say (a branch,
 * then a tag, peeled to its commit); remembered for the rest of the build, so that the step runs
 * on the commit its key was computed from even if the branch moves meanwhile.
 */
async function resolveCommit(op: GitOp, ctx: OpContext): Promise<string> {
  const ref = op.ref ?? "HEAD";
  if (FULL_COMMIT.test(ref)) return ref;
  const record = path.join(
    ctx.stateDir,
    "git",
    `${createHash("sha256").update(`${op.remote}\n${ref}`).digest("hex").slice(0, 32)}.commit`,
  );
  const known = await readFile(record, "utf8").catch(() => undefined);
  if (known !== undefined && FULL_COMMIT.test(known)) return known;
  const listing = await git(["ls-remote", "--", op.remote, ref, `${ref}^{}`], { signal: ctx.signal });
  const refs = new Map<string, string>();
  for (const line of listing.split("\n")) {
    const [commit, name] = line.split("\t");
    if (commit && name) refs.set(name, commit);
  }
  const candidates = ref.startsWith("refs/")
    ? [`${ref}^{}`, ref]
    : ref === "HEAD"
      ? ["HEAD"]
      : [`refs/heads/${ref}`, `refs/tags/${ref}^{}`, `refs/tags/${ref}`, `${ref}^{}`, ref];
  const commit = candidates.map((c) => refs.get(c)).find((c) => c !== undefined);
  if (commit === undefined) {
    const hint = /^[0-9a-f]{4,39}$/.test(ref)
      ? ": a commit must be given in full (40 hexadecimal digits)"
      : "";
    throw new GitSourceError(`${describe(op)}: the remote has no branch or tag named ${ref}${hint}`);
  }
  await mkdir(path.dirname(record), { recursive: true });
  await writeFile(record, commit);
  return commit;
}

export async function runGit(op: GitOp, _inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  const commit = await resolveCommit(op, ctx);
  await mkdir(ctx.stateDir, { recursive: true });
  const work = await mkdtemp(path.join(ctx.stateDir, "git-"));
  try {
    const checkout = path.join(work, "checkout");
    await checkoutCommit(op, commit, checkout, ctx);
    const time = new Date(
      Number(
        (await git(["log", "-1", "--format=%ct", commit], { cwd: checkout, signal: ctx.signal })).trim(),
      ) * 1000,
    );
    if (op.keepGitDir && op.subdir === undefined) {
      // Pack only what a fresh clone of the commit has: no fetch state of ours.
      await rm(path.join(checkout, ".git", "FETCH_HEAD"), { force: true });
    } else {
      await rm(path.join(checkout, ".git"), { recursive: true, force: true });
    }
    let root = checkout;
    if (op.subdir !== undefined && op.subdir !== "" && op.subdir !== "/") {
      root = rootPath(checkout, op.subdir);
      if (!(await stat(root).catch(() => undefined))?.isDirectory()) {
        throw new GitSourceError(
          `${describe(op)}: the repository has no directory ${op.subdir} at ${commit}`,
        );
      }
    }
    const entries = await selectContext(root, { followPaths: [], excludePatterns: [] }, ctx.signal);
    const tar = treeTar(entries, {
      mtime: time,
      gitModes: true,
      warn: (rel, what) => ctx.warn(`${describe(op)}: ${rel} is ${what}: left out`),
    });
    // Only ever read by the copy that uses it: left uncompressed (see local.ts).
    const layer = await writeLayer(ctx.store.content, Readable.from(tar), {
      compression: "uncompressed",
      signal: ctx.signal,
    });
    return { layers: [{ descriptor: layer.descriptor, diffId: layer.diffId }] };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function checkoutCommit(op: GitOp, commit: string, dir: string, ctx: OpContext): Promise<void> {
  const signal = ctx.signal;
  await git(["init", "-q", dir], { signal });
  await git(["remote", "add", "origin", op.remote], { cwd: dir, signal });
  try {
    // Most servers (and every local repository) serve a commit by id: one commit, no history.
    await git(["fetch", "-q", "--depth", "1", "--no-tags", "origin", commit], { cwd: dir, signal });
  } catch (err) {
    if (signal.aborted) throw err;
    // This one does not: fetch its branches and tags, which must contain the commit.
    await git(["fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"], {
      cwd: dir,
      signal,
    });
  }
  await git(["-c", "advice.detachedHead=false", "checkout", "-q", commit], { cwd: dir, signal });
  const head = (await git(["rev-parse", "HEAD"], { cwd: dir, signal })).trim();
  if (head !== commit) throw new GitSourceError(`${describe(op)}: checked out ${head}, not ${commit}`);
  if (await stat(path.join(dir, ".gitmodules")).catch(() => undefined)) {
    await git(["submodule", "update", "--init", "--recursive", "--depth", "1"], { cwd: dir, signal });
  }
}
