/**
 * `--chown` and the owner of WORKDIR: names are looked up in the destination filesystem's own
 * `/etc/passwd` and `/etc/group` (never the host's), as BuildKit does. A number passes through; a
 * user given without a group gets the user's primary group (by name) or the same number (by id).
 *
 * A name the destination does not list (or no /etc/passwd, /etc/group at all) is BuildKit's
 * rule, in every version since its file ops (solver/llbsolver/ops/user_linux.go, readUser): an
 * unknown user is uid 0 and gid 0, an unknown group leaves the gid as the user gave it. So
 * `USER app` before app exists, then `WORKDIR /app`, builds, and the directory is root's. tbuild
 * follows it, so that what BuildKit builds builds here the same, and says so in a warning.
 */
import { readFile } from "node:fs/promises";
import type { Chown } from "../../solver/graph.js";
import { rootPath } from "../root-path.js";

export interface Owner {
  uid: number;
  gid: number;
}

const NUMERIC = /^\d+$/;

export async function resolveOwner(
  root: string,
  chown: Chown,
  warn: (message: string) => void,
): Promise<Owner> {
  let uid = 0;
  let gid = 0;
  if (chown.user !== "") {
    if (NUMERIC.test(chown.user)) {
      uid = Number(chown.user);
      gid = uid;
    } else {
      const entry = await lookup(root, "/etc/passwd", chown.user);
      if (typeof entry === "string") {
        warn(`user ${chown.user}: ${entry}; owned by uid 0 and gid 0, as BuildKit does`);
      } else {
        uid = Number(entry[2]);
        gid = Number(entry[3]);
      }
    }
  }
  if (chown.group !== undefined && chown.group !== "") {
    if (NUMERIC.test(chown.group)) gid = Number(chown.group);
    else {
      const entry = await lookup(root, "/etc/group", chown.group);
      if (typeof entry === "string")
        warn(`group ${chown.group}: ${entry}; gid ${gid} kept, as BuildKit does`);
      else gid = Number(entry[2]);
    }
  }
  return { uid, gid };
}

/**
 * The fields of the line of `file` (passwd or group format) whose first field is `name`, or why
 * there is none.
 */
async function lookup(root: string, file: string, name: string): Promise<string[] | string> {
  let text: string;
  try {
    text = await readFile(rootPath(root, file), "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") return `the destination has no ${file}`;
    throw err;
  }
  const user = file === "/etc/passwd";
  for (const line of text.split("\n")) {
    const fields = line.trim().split(":");
    if (fields[0] === name && fields.length >= 3 && NUMERIC.test(fields[2]!)) {
      if (user && !NUMERIC.test(fields[3] ?? "")) continue;
      return fields;
    }
  }
  return `not in the destination's ${file}`;
}
