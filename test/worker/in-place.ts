/**
 * What the tests of the fast paths that update an earlier result in place share
 * (source-snapshot-update.test.ts, copy-update.test.ts): the context edits they replay, tbuild run
 * as root or as the rootless user on a store of their own, and a tree described as a step reading
 * it sees it, to compare a warm store's result with an empty store's.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import type { Owner } from "../build/differential/context.js";
import type { Edit } from "../build/differential/scenario.js";
import { tbuildBin } from "../helpers/cli.js";
import { userIds } from "../helpers/judges.js";

export type Mode = "root" | "rootless";

const ROOTLESS_USER = "tbuild-test";

/** The differential generator's edits that change the context (not the Dockerfile's steps). */
export const CONTEXT_EDITS = new Set<Edit["edit"]>([
  "content",
  "mode",
  "mtime",
  "add",
  "remove",
  "file-to-dir",
  "dir-to-file",
  "retarget",
  "unlink",
]);

/** Who owns the context's files: the user tbuild runs as. */
export function ownerOf(mode: Mode): Owner {
  return mode === "root" ? { uid: 0, gid: 0 } : userIds(ROOTLESS_USER);
}

/** `tbuild ARGS` on `store`, as root or as the rootless user, with a fixed environment. */
export function tbuildIn(
  mode: Mode,
  store: string,
  args: string[],
): { status: number | null; stderr: string } {
  const home =
    mode === "rootless"
      ? execFileSync("getent", ["passwd", ROOTLESS_USER], { encoding: "utf8" }).split(":")[5]!
      : (process.env.HOME ?? "/");
  const command = [
    "env",
    "-i",
    `PATH=${process.env.PATH}`,
    `TBUILD_ROOT=${store}`,
    `HOME=${home}`,
    tbuildBin,
  ];
  const argv = [...(mode === "rootless" ? ["runuser", "-u", ROOTLESS_USER, "--"] : []), ...command, ...args];
  return spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
}

/**
 * Every entry below `dir`, with what a step reading it can see of it: type, mode, owner, mtime
 * (by `time`), size, link count, content and link target.
 */
export function describeTree(dir: string, time: (mtimeMs: number) => string, rel = ""): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(dir, rel)).sort()) {
    const p = rel === "" ? name : `${rel}/${name}`;
    const full = path.join(dir, p);
    const st = lstatSync(full);
    const head = `${p} ${(st.mode & 0o170000).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${time(st.mtimeMs)}`;
    if (st.isDirectory()) {
      out.push(head, ...describeTree(dir, time, p));
    } else if (st.isSymbolicLink()) {
      out.push(`${head} -> ${readlinkSync(full)}`);
    } else {
      const sha = createHash("sha256").update(readFileSync(full)).digest("hex");
      out.push(`${head} size=${st.size} links=${st.nlink} ${sha}`);
    }
  }
  return out;
}
