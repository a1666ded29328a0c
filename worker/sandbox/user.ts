/**
 * USER (and `tbuild run -u`) resolved against the image's own `/etc/passwd` and `/etc/group`, with
 * the rules of moby/sys/user's `GetExecUser`, which Docker, BuildKit and runc share:
 *
 * - `""` is uid 0; a name or uid found in passwd gives its uid, primary gid and home;
 * - a numeric uid missing from passwd is used as is, with gid 0 and home `/`;
 * - a name missing from passwd is an error naming it;
 * - an explicit group (`user:group`) replaces the primary gid (a numeric gid need not exist) and
 *   then there are no supplementary groups; without one, the supplementary groups are those of
 *   `/etc/group` that list the user's name as a member.
 */
import { readFileSync } from "node:fs";
import { directoryTree, resolveInTree } from "../root-path.js";
import { SandboxError } from "./errors.js";
import type { RootTree } from "./rootfs-path.js";

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  /** The home directory from passwd, when the user has an entry there. */
  home?: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

/** The largest id the kernel accepts (ids are 32-bit, and -1 means "unchanged"). */
const MAX_ID = 2 ** 31 - 1;

function parseId(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const id = Number(text);
  return id <= MAX_ID ? id : undefined;
}

function lines(text: string): string[][] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => line.split(":"));
}

export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const [name = "", , uid = "", gid = "", , home = ""] of lines(text)) {
    const parsedUid = parseId(uid);
    const parsedGid = parseId(gid);
    if (parsedUid === undefined || parsedGid === undefined) continue;
    entries.push({ name, uid: parsedUid, gid: parsedGid, home });
  }
  return entries;
}

export function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const [name = "", , gid = "", members = ""] of lines(text)) {
    const parsedGid = parseId(gid);
    if (parsedGid === undefined) continue;
    entries.push({ name, gid: parsedGid, members: members.split(",").filter((m) => m !== "") });
  }
  return entries;
}

/** The file's text, or undefined when the image has no such file. */
async function readImageFile(tree: RootTree, inside: string): Promise<string | undefined> {
  try {
    const file = tree.hostPath(resolveInTree(tree, inside));
    return file === undefined ? undefined : readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") return undefined;
    throw err;
  }
}

/**
 * USER resolved in the image's /etc/passwd and /etc/group, as Docker does. `rootfs`: a directory,
 * or the layers an overlay will merge (rootfs-path.ts's RootTree).
 */
export async function resolveUser(rootfs: string | RootTree, user: string): Promise<ResolvedUser> {
  const tree = typeof rootfs === "string" ? directoryTree(rootfs) : rootfs;
  const parts = user.split(":");
  if (parts.length > 2 || (parts.length === 2 && (parts[0] === "" || parts[1] === ""))) {
    throw new SandboxError(
      "E_SANDBOX_USER",
      `invalid user "${user}": expected name, uid, name:group or uid:gid`,
    );
  }
  const [userArg, groupArg = ""] = parts;
  const passwd = await readImageFile(tree, "/etc/passwd");
  const uidArg = parseId(userArg);

  const wanted = (entry: PasswdEntry) =>
    userArg === "" ? entry.uid === 0 : uidArg !== undefined ? entry.uid === uidArg : entry.name === userArg;
  const found = passwd === undefined ? undefined : parsePasswd(passwd).find(wanted);
  if (!found && userArg !== "" && uidArg === undefined) {
    throw new SandboxError(
      "E_SANDBOX_USER",
      `unable to find user ${userArg}: ${passwd === undefined ? "the image has no /etc/passwd" : "no matching entry in the image's /etc/passwd"}`,
    );
  }
  const result: ResolvedUser = {
    uid: found?.uid ?? uidArg ?? 0,
    gid: found?.gid ?? 0,
    additionalGids: [],
    ...(found ? { home: found.home } : {}),
  };

  if (groupArg === "" && !found) return result;
  const groupText = await readImageFile(tree, "/etc/group");
  const groups = groupText === undefined ? [] : parseGroup(groupText);
  if (groupArg !== "") {
    const gidArg = parseId(groupArg);
    // A numeric group is always a gid, never a group's name.
    const match = groups.find((g) => (gidArg !== undefined ? g.gid === gidArg : g.name === groupArg));
    if (match) result.gid = match.gid;
    else if (gidArg !== undefined) result.gid = gidArg;
    else {
      throw new SandboxError(
        "E_SANDBOX_USER",
        `unable to find group ${groupArg}: ${groupText === undefined ? "the image has no /etc/group" : "no matching entry in the image's /etc/group"}`,
      );
    }
    return result;
  }
  const name = (found as PasswdEntry).name;
  for (const group of groups) {
    if (group.members.includes(name) && !result.additionalGids.includes(group.gid)) {
      result.additionalGids.push(group.gid);
    }
  }
  return result;
}
