/**
 * Paths inside a filesystem being built, seen from the host. A base image, a build stage or an
 * archive is untrusted: `/etc` may be a symlink to `/`, `/app` to `/proc/self/root`. Every path is
 * resolved component by component with symlinks followed as the container would follow them
 * (absolute targets and `..` stay inside the root), as containerd's `fs.RootPath` does for
 * BuildKit's file ops, never by the host's own resolution.
 */
import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";
import { TbuildError } from "../../errors/index.js";
import { byBytes } from "../../oci/archive/byte-order.js";
import { compileComponentGlob, hasGlob, pathComponents } from "./glob.js";

/** Linux's own limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/**
 * The host path of `inside` under `root`. Components that do not exist are kept as they are, so
 * the result also names where a missing path would be created. `followFinal: false` leaves a
 * symlink in the last component unresolved (what `rm`, `lstat` and a copy without
 * `followSymlinks` need).
 */
export async function rootPath(root: string, inside: string, options: { followFinal?: boolean } = {}) {
  const followFinal = options.followFinal ?? true;
  const pending = inside.split("/").filter((c) => c !== "" && c !== ".");
  const resolved: string[] = [];
  let followed = 0;
  while (pending.length > 0) {
    const component = pending.shift()!;
    if (component === "..") {
      resolved.pop();
      continue;
    }
    const candidate = path.join(root, ...resolved, component);
    let target: string | undefined;
    if (followFinal || pending.length > 0) {
      try {
        if ((await lstat(candidate)).isSymbolicLink()) target = await readlink(candidate);
      } catch (err) {
        if (!isMissing(err)) throw err;
      }
    }
    if (target === undefined) {
      resolved.push(component);
      continue;
    }
    if (++followed > MAX_SYMLINKS) {
      throw new TbuildError("E_SYMLINK_LOOP", `too many levels of symbolic links resolving ${inside}`);
    }
    if (target.startsWith("/")) resolved.length = 0;
    pending.unshift(...target.split("/").filter((c) => c !== "" && c !== "."));
  }
  return path.join(root, ...resolved);
}

/** `/a/b/../c/` → `/a/c`: an absolute, normalized path inside a filesystem, without trailing slash. */
export function cleanInside(p: string): string {
  const joined = path.posix.join("/", p);
  return joined.length > 1 && joined.endsWith("/") ? joined.slice(0, -1) : joined;
}

export interface GlobMatch {
  /** Absolute inside the root: `/src/a.go`. */
  path: string;
  /** Below the pattern's fixed prefix (`src/*.go` → `a.go`), what `--exclude` patterns are matched against. */
  belowBase: string;
}

/**
 * What a glob names inside `root`, as fsutil's ResolveWildcards: the fixed prefix is resolved
 * (its final symlink followed only when `followBase`), then each glob component is matched in
 * turn (`*` never crosses a `/`), a matched directory is not searched further, and matches come
 * in lexical order. A pattern without glob characters is returned as it is.
 */
export async function globInRoot(root: string, pattern: string, followBase: boolean): Promise<GlobMatch[]> {
  const components = pathComponents(pattern);
  const firstGlob = components.findIndex(hasGlob);
  if (firstGlob < 0) return [{ path: `/${components.join("/")}`, belowBase: "" }];
  const base = components.slice(0, firstGlob);
  const globs = components.slice(firstGlob).map(compileComponentGlob);
  const baseHost = await rootPath(root, base.join("/"), { followFinal: followBase });
  const out: GlobMatch[] = [];
  const walk = async (host: string, rel: string[], depth: number) => {
    let names: string[];
    try {
      names = (await readdir(host)).sort(byBytes);
    } catch {
      return; // not a directory, or gone: nothing matches below it
    }
    for (const name of names) {
      if (!globs[depth]!(name)) continue;
      const childRel = [...rel, name];
      if (depth === globs.length - 1) {
        out.push({ path: `/${[...base, ...childRel].join("/")}`, belowBase: childRel.join("/") });
      } else {
        const child = path.join(host, name);
        if ((await lstat(child)).isDirectory()) await walk(child, childRel, depth + 1);
      }
    }
  };
  await walk(baseHost, [], 0);
  return out;
}
