/**
 * Path globs as BuildKit reads COPY sources and the context's follow paths: Go's
 * `filepath.Match`, one path component at a time (`*` and `?` never cross a `/`; `[a-z]`, `[^x]`
 * classes; `\` escapes the next character). A pattern that is not well formed is an error, as in Go.
 */
import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import { TbuildError } from "../../errors/index.js";
import { byBytes } from "../../oci/archive/byte-order.js";
import { rootPath } from "../root-path.js";

export class InvalidGlobError extends TbuildError {
  constructor(pattern: string, reason: string) {
    super("E_INVALID_GLOB", `invalid pattern "${pattern}": ${reason}`);
  }
}

/** Whether a path holds any glob syntax at all (a plain path is looked up, not matched). */
export function hasGlob(pattern: string): boolean {
  return /[*?[\\]/.test(pattern);
}

/** A test for one path component against one pattern component. */
export function compileComponentGlob(pattern: string): (name: string) => boolean {
  if (!hasGlob(pattern)) return (name) => name === pattern;
  const regexp = new RegExp(`^${componentSource(pattern)}$`, "su");
  return (name) => regexp.test(name);
}

/** Escapes a character outside a `[...]` class (the syntax characters of a `u` regular expression). */
function escapeRegexp(ch: string): string {
  return /[\\^$.*+?()[\]{}|]/.test(ch) ? `\\${ch}` : ch;
}

/** Escapes a character inside a `[...]` class. */
function escapeClassChar(ch: string): string {
  return /[\\\][^-]/.test(ch) ? `\\${ch}` : ch;
}

function componentSource(pattern: string): string {
  const chars = [...pattern];
  let source = "";
  let k = 0;
  while (k < chars.length) {
    const ch = chars[k++]!;
    if (ch === "*") {
      source += "[^/]*";
    } else if (ch === "?") {
      source += "[^/]";
    } else if (ch === "\\") {
      if (k >= chars.length) throw new InvalidGlobError(pattern, "it ends with a lone \\");
      source += escapeRegexp(chars[k++]!);
    } else if (ch === "[") {
      let negate = false;
      if (chars[k] === "^") {
        negate = true;
        k++;
      }
      let body = "";
      let ranges = 0;
      for (;;) {
        if (k >= chars.length) throw new InvalidGlobError(pattern, "a [ class is not closed");
        if (chars[k] === "]" && ranges > 0) {
          k++;
          break;
        }
        const lo = classChar(pattern, chars, k);
        k = lo.next;
        let item = escapeClassChar(lo.char);
        if (chars[k] === "-") {
          const hi = classChar(pattern, chars, k + 1);
          k = hi.next;
          item += `-${escapeClassChar(hi.char)}`;
        }
        body += item;
        ranges++;
      }
      source += negate ? `[^${body}]` : `[${body}]`;
    } else {
      source += escapeRegexp(ch);
    }
  }
  return source;
}

function classChar(pattern: string, chars: string[], at: number): { char: string; next: number } {
  let k = at;
  const ch = chars[k];
  if (ch === undefined) throw new InvalidGlobError(pattern, "a [ class is not closed");
  if (ch === "-" || ch === "]") throw new InvalidGlobError(pattern, `unexpected "${ch}" in a [ class`);
  k++;
  if (ch === "\\") {
    const escaped = chars[k];
    if (escaped === undefined) throw new InvalidGlobError(pattern, "a [ class is not closed");
    return { char: escaped, next: k + 1 };
  }
  return { char: ch, next: k };
}

/** `/a/./b//c/` → `["a", "b", "c"]`: the components of a path inside a filesystem. */
export function pathComponents(p: string): string[] {
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return out;
}

/**
 * Which paths a set of path patterns selects: a path is selected when a pattern matches it or one
 * of its parents (everything under a selected directory comes along); a directory is on the way
 * when it could lead to a match, so a walk must look inside it.
 */
export class PathSelector {
  private readonly patterns: ((name: string) => boolean)[][];
  /** No patterns, or one naming the root: everything is selected. */
  readonly all: boolean;

  constructor(patterns: readonly string[]) {
    const split = patterns.map(pathComponents);
    this.all = split.length === 0 || split.some((p) => p.length === 0);
    this.patterns = this.all ? [] : split.map((p) => p.map(compileComponentGlob));
  }

  /** `selected`: the path is in; `partial`: something below may be; `none`: nothing here is. */
  classify(components: readonly string[]): "selected" | "partial" | "none" {
    if (this.all) return "selected";
    let partial = false;
    for (const pattern of this.patterns) {
      const n = Math.min(pattern.length, components.length);
      let ok = true;
      for (let i = 0; i < n && ok; i++) ok = pattern[i]!(components[i]!);
      if (!ok) continue;
      if (pattern.length <= components.length) return "selected";
      partial = true;
    }
    return partial ? "partial" : "none";
  }
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
  const baseHost = rootPath(root, base.join("/"), { followFinal: followBase });
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
