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
import type { IdMapping } from "../userns.js";
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

/**
 * A rootless sandbox can switch only to ids its user namespace maps (0 to 65535 with the usual
 * 65536-id range in /etc/subuid), and runc's own words for another id ("unable to setup user:
 * invalid argument") say nothing of why. Throws a SandboxError naming the id, the mapped range and
 * how to widen it; does nothing outside a user namespace, where every id is mapped.
 */
export function checkUserMapped(
  ids: ResolvedUser,
  user: string,
  maps: { uid: readonly IdMapping[]; gid: readonly IdMapping[] },
): void {
  const unmapped = (id: number, map: readonly IdMapping[]) =>
    !map.some((m) => id >= m.inside && id < m.inside + m.count);
  const check = (kind: "uid" | "gid", id: number, map: readonly IdMapping[]) => {
    if (!unmapped(id, map)) return;
    const file = kind === "uid" ? "/etc/subuid" : "/etc/subgid";
    throw new SandboxError(
      "E_SANDBOX_USER",
      `user "${user}": ${kind} ${id} is outside the ${kind}s this rootless user namespace maps (${describeMapped(map)}: your own ${kind}, then the first range of your user in ${file}); use an id in that range, or widen that range in /etc/subuid and /etc/subgid to at least ${id} ids`,
    );
  };
  check("uid", ids.uid, maps.uid);
  check("gid", ids.gid, maps.gid);
  for (const gid of ids.additionalGids) check("gid", gid, maps.gid);
}

/** `0-65535`, or `0-9, 20-29` for a map with holes. */
function describeMapped(map: readonly IdMapping[]): string {
  const ranges = [...map].sort((a, b) => a.inside - b.inside);
  const merged: [number, number][] = [];
  for (const { inside, count } of ranges) {
    const last = merged.at(-1);
    if (last && inside <= last[1] + 1) last[1] = Math.max(last[1], inside + count - 1);
    else merged.push([inside, inside + count - 1]);
  }
  return merged.map(([from, to]) => (from === to ? `${from}` : `${from}-${to}`)).join(", ") || "none";
}
