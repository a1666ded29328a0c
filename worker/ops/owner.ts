/**
 * `--chown` and the owner of WORKDIR: names are looked up in the destination filesystem's own
 * `/etc/passwd` and `/etc/group` (never the host's), as BuildKit does. A number passes through; a
 * user given without a group gets the user's primary group (by name) or the same number (by id).
 */
import { readFile } from "node:fs/promises";
import { TbuildError } from "../../errors/index.js";
import type { Chown } from "../../solver/graph.js";
import { rootPath } from "../root-path.js";

export interface Owner {
  uid: number;
  gid: number;
}

/** A `--chown` name that the destination does not know. */
export class UnknownOwnerError extends TbuildError {
  constructor(kind: "user" | "group", name: string, file: string, reason?: string) {
    super(
      "E_UNKNOWN_OWNER",
      `unable to find ${kind} ${name}: ${reason ?? `no ${kind} named "${name}" in ${file} of the destination`}` +
        "; create it in an earlier step, or give a numeric id",
    );
  }
}

const NUMERIC = /^\d+$/;

export async function resolveOwner(root: string, chown: Chown): Promise<Owner> {
  let uid = 0;
  let gid = 0;
  if (chown.user !== "") {
    if (NUMERIC.test(chown.user)) {
      uid = Number(chown.user);
      gid = uid;
    } else {
      const entry = await lookup(root, "/etc/passwd", "user", chown.user);
      uid = Number(entry[2]);
      gid = Number(entry[3]);
    }
  }
  if (chown.group !== undefined && chown.group !== "") {
    gid = NUMERIC.test(chown.group)
      ? Number(chown.group)
      : Number((await lookup(root, "/etc/group", "group", chown.group))[2]);
  }
  return { uid, gid };
}

/** The fields of the line of `file` (passwd or group format) whose first field is `name`. */
async function lookup(root: string, file: string, kind: "user" | "group", name: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(rootPath(root, file), "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR") {
      throw new UnknownOwnerError(kind, name, file, `the destination has no ${file}`);
    }
    throw err;
  }
  for (const line of text.split("\n")) {
    const fields = line.trim().split(":");
    if (fields[0] === name && fields.length >= 3 && NUMERIC.test(fields[2]!)) {
      if (kind === "user" && !NUMERIC.test(fields[3] ?? "")) continue;
      return fields;
    }
  }
  throw new UnknownOwnerError(kind, name, file);
}
