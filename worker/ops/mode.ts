/**
 * `--chmod`: an octal mode (`755`, `4755`) replaces the permission bits of every copied file and
 * directory; a symbolic one (`u+x`, `go-w,a+X`) changes each entry's own bits, as chmod(1) does
 * (`X` adds execute only to directories and to files some execute bit is already set on).
 */
import { TbuildError } from "../../errors/index.js";

/** The new permission bits (`0o7777`) of an entry, from its current ones. */
export type ModeChange = (mode: number, isDirectory: boolean) => number;

export class InvalidChmodError extends TbuildError {
  constructor(text: string) {
    super(
      "E_INVALID_CHMOD",
      `invalid --chmod=${text}: use an octal mode such as 755 or a symbolic one such as u+x`,
    );
  }
}

const CLAUSE = /^([ugoa]*)([-+=])([rwxXst]*)$/;

export function parseChmod(text: string): ModeChange {
  if (/^[0-7]{1,4}$/.test(text)) {
    const mode = Number.parseInt(text, 8);
    return () => mode;
  }
  const clauses = text.split(",").map((clause) => {
    const match = CLAUSE.exec(clause);
    if (!match) throw new InvalidChmodError(text);
    return { who: match[1] || "a", op: match[2] as "+" | "-" | "=", perms: match[3]! };
  });
  return (current, isDirectory) => {
    let mode = current & 0o7777;
    for (const { who, op, perms } of clauses) {
      const u = who.includes("u") || who.includes("a");
      const g = who.includes("g") || who.includes("a");
      const o = who.includes("o") || who.includes("a");
      let rwx = 0;
      if (perms.includes("r")) rwx |= 4;
      if (perms.includes("w")) rwx |= 2;
      if (perms.includes("x") || (perms.includes("X") && (isDirectory || (current & 0o111) !== 0))) rwx |= 1;
      let bits = 0;
      let mask = 0;
      if (u) {
        bits |= rwx << 6;
        mask |= 0o4700;
        if (perms.includes("s")) bits |= 0o4000;
      }
      if (g) {
        bits |= rwx << 3;
        mask |= 0o2070;
        if (perms.includes("s")) bits |= 0o2000;
      }
      if (o) {
        bits |= rwx;
        mask |= 0o0007;
      }
      if (perms.includes("t") && (o || who === "a")) bits |= 0o1000;
      if (op === "+") mode |= bits;
      else if (op === "-") mode &= ~bits;
      else mode = (mode & ~(mask | (o ? 0o1000 : 0))) | bits;
    }
    return mode;
  };
}

/**
 * The mode of the directories a copy creates on the way to its destination: the permission bits
 * of an octal `--chmod` (`COPY --chmod=770 f /new/sub/f` makes /new and /new/sub 0770), as
 * BuildKit's fsutil creates them; 0755 without one or with a symbolic one.
 */
export function createdDirectoryMode(chmod: string | undefined): number {
  return chmod !== undefined && /^[0-7]{1,4}$/.test(chmod) ? Number.parseInt(chmod, 8) & 0o777 : 0o755;
}
