/**
 * Which paths of a build context `.dockerignore` patterns leave out, with the semantics of
 * moby/patternmatcher as BuildKit's context walk (fsutil) applies them. The worker owns it, as
 * BuildKit's does: a `local` op carries the patterns (plain data), and the worker matches them
 * while it reads the context. Reading the ignore file into patterns is the frontend's
 * (frontend/dockerignore.ts, moby's `ignorefile`).
 *
 * `@balena/dockerignore` was measured against patternmatcher and differs: it ignores case by
 * default; it passes `(`, `)`, `|`, `{`, `}` and `+` through as regular-expression syntax (so
 * `a(b)c` never matches and `a|)` throws); it does not read `**.txt` as Docker's suffix test
 * (which matches `a/b.txt`); it accepts a lone `!`; and it follows the parent-directory rules of
 * Docker 19.03. So the matcher is written here.
 */
import { TbuildError } from "../../errors/index.js";
import { cleanPath } from "../../oci/clean-path.js";

/** A `.dockerignore` file that cannot be read, or a pattern Docker would reject. */
export class DockerignoreError extends TbuildError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super("E_DOCKERIGNORE", message, options);
  }
}

/** Decides, path by path, what `.dockerignore` patterns leave out of a build context. */
export interface ContextMatcher {
  /**
   * True when the file or directory at `relPath` (relative to the context root, `/`-separated) is
   * left out. Patterns apply in order and the last one that matches wins; a pattern that matches
   * a directory matches everything below it, and a later `!` exception can take back any path
   * below an excluded directory.
   */
  excludes(relPath: string): boolean;
  /**
   * True when a walk of the context may skip the directory `relDir` without reading it: it is
   * excluded and no exception can take back anything inside it. BuildKit skips the same
   * directories (only when every exception is a plain path, possibly ending in `/*` or `/**`).
   */
  skipsDirectory(relDir: string): boolean;
}

/**
 * A matcher for patterns as `parseDockerignore` returns them. Throws DockerignoreError for a
 * pattern Docker rejects: a lone `!`, an unterminated `[`, a misplaced `-` in `[...]`, a trailing
 * `\`, an escape Go's regular expressions do not know (`\y`).
 */
export function createContextMatcher(patterns: readonly string[]): ContextMatcher {
  const compiled = compilePatterns(patterns);
  const anyException = compiled.some((p) => p.exception);
  // BuildKit only skips excluded directories when every exception is a plain path: then "can an
  // exception reach inside" is a prefix test.
  const plainExceptions = compiled.every(
    (p) => !p.exception || !/[*[\]?^\\]/.test(withoutTrailingGlob(p.text)),
  );
  // A walk asks about each directory before its children; remembering a directory's per-pattern
  // results is how BuildKit evaluates children (see evaluate), and keeps lookups linear.
  const directoryResults = new Map<string, Evaluation>();

  const evaluate = (path: string, isParent: boolean): Evaluation => {
    const cached = directoryResults.get(path);
    if (cached !== undefined) return cached;
    const slash = path.lastIndexOf("/");
    const parent = slash < 0 ? undefined : evaluate(path.slice(0, slash), true);
    // As patternmatcher's MatchesUsingParentResults during BuildKit's walk: a pattern that matched
    // the parent directory counts as matching the child without being tried again; otherwise it is
    // tried on the child's own path, and skipped when it could not change the outcome so far.
    let excluded = false;
    const matched: boolean[] = new Array(compiled.length).fill(false);
    compiled.forEach((pattern, i) => {
      let match = parent?.matched[i] ?? false;
      if (!match) {
        if (pattern.exception !== excluded) return;
        match = pattern.matches(path);
      }
      matched[i] = match;
      if (match) excluded = !pattern.exception;
    });
    const result = { excluded, matched };
    if (isParent) {
      if (directoryResults.size >= 100_000) directoryResults.clear();
      directoryResults.set(path, result);
    }
    return result;
  };

  const excludes = (relPath: string): boolean => {
    if (compiled.length === 0) return false;
    const path = normalizeRelPath(relPath);
    // The context root itself is never excluded ("don't let them exclude everything").
    if (path === "") return false;
    return evaluate(path, false).excluded;
  };

  return {
    excludes,
    skipsDirectory(relDir: string): boolean {
      if (!excludes(relDir) || !plainExceptions) return false;
      if (!anyException) return true;
      const dirSlash = `${normalizeRelPath(relDir)}/`;
      return !compiled.some((p) => p.exception && `${withoutTrailingGlob(p.text)}/`.startsWith(dirSlash));
    },
  };
}

interface Evaluation {
  excluded: boolean;
  /** Which patterns matched this path, for its children. */
  matched: boolean[];
}

interface CompiledPattern {
  /** The cleaned pattern without its `!`. */
  text: string;
  exception: boolean;
  matches(path: string): boolean;
}

function compilePatterns(patterns: readonly string[]): CompiledPattern[] {
  const compiled: CompiledPattern[] = [];
  for (const original of patterns) {
    let text = trimGoSpace(original);
    if (text === "") continue;
    text = cleanPath(text);
    const exception = text.startsWith("!");
    if (exception) {
      if (text.length === 1)
        throw new DockerignoreError(`invalid .dockerignore pattern "!": an exception needs a path after "!"`);
      text = text.slice(1);
    }
    const problem = globSyntaxProblem(text);
    if (problem !== undefined)
      throw new DockerignoreError(`invalid .dockerignore pattern "${original.trim()}": ${problem}`);
    let matches: (path: string) => boolean;
    try {
      matches = compileMatch(text);
    } catch (err) {
      throw new DockerignoreError(
        `invalid .dockerignore pattern "${original.trim()}": ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    compiled.push({ text, exception, matches });
  }
  return compiled;
}

function withoutTrailingGlob(pattern: string): string {
  if (pattern.endsWith("/**")) return pattern.slice(0, -3);
  if (pattern.endsWith("/*")) return pattern.slice(0, -2);
  return pattern;
}

function normalizeRelPath(relPath: string): string {
  const cleaned = cleanPath(relPath.replace(/^\/+/, ""));
  return cleaned === "." ? "" : cleaned;
}

/**
 * Turns a pattern into a test, the way patternmatcher does: plain text compares for equality,
 * `dir/**` and `**suffix` compare by prefix and suffix, anything else becomes a regular
 * expression built token by token. That regular expression is patternmatcher's, quirks included
 * (`**.txt` is a suffix test and matches `a/b.txt`; `[*]` does not mean a literal star), then
 * translated from Go's syntax to JavaScript's.
 */
function compileMatch(pattern: string): (path: string) => boolean {
  const chars = [...pattern];
  let source = "^";
  let kind: "exact" | "prefix" | "suffix" | "regexp" = "exact";
  for (let k = 0, token = 0; k < chars.length; token++) {
    const ch = chars[k++]!;
    if (ch === "*" && chars[k] === "*") {
      k++;
      if (chars[k] === "/") k++;
      if (k >= chars.length) {
        if (kind === "exact") kind = "prefix";
        else {
          source += ".*";
          kind = "regexp";
        }
      } else {
        source += "(.*/)?";
        kind = "regexp";
      }
      if (token === 0) kind = "suffix";
    } else if (ch === "*") {
      source += "[^/]*";
      kind = "regexp";
    } else if (ch === "?") {
      source += "[^/]";
      kind = "regexp";
    } else if (".+()|{}$".includes(ch)) {
      source += `\\${ch}`;
    } else if (ch === "\\") {
      // Validation rejected a trailing backslash, so one character follows.
      source += `\\${chars[k++]!}`;
      kind = "regexp";
    } else if (ch === "[" || ch === "]") {
      source += ch;
      kind = "regexp";
    } else {
      source += ch;
    }
  }
  switch (kind) {
    case "exact":
      return (path) => path === pattern;
    case "prefix": {
      const prefix = pattern.slice(0, -2);
      return (path) => path.startsWith(prefix);
    }
    case "suffix": {
      const suffix = pattern.slice(2);
      // `**/foo` also matches `foo` at the root.
      return (path) => path.endsWith(suffix) || (suffix.startsWith("/") && path === suffix.slice(1));
    }
    case "regexp": {
      const regexp = new RegExp(translateGoRegexp(`${source}$`), "u");
      return (path) => regexp.test(path);
    }
  }
}

/**
 * Why Go's `filepath.Match` would reject the pattern, which patternmatcher asks before anything
 * else; undefined when it is well formed.
 */
function globSyntaxProblem(pattern: string): string | undefined {
  const chars = [...pattern];
  let k = 0;
  // One character of a `[...]` class, possibly escaped; rejects `-` and `]` where a character is due.
  const classChar = (): string | undefined => {
    const ch = chars[k];
    if (ch === undefined) return "unterminated character class";
    if (ch === "-" || ch === "]") return `unexpected "${ch}" in character class (escape it as "\\${ch}")`;
    k++;
    if (ch === "\\") {
      if (chars[k] === undefined) return "unterminated character class";
      k++;
    }
    if (k >= chars.length) return "unterminated character class";
    return undefined;
  };
  while (k < chars.length) {
    const ch = chars[k++];
    if (ch === "\\") {
      if (k >= chars.length) return "trailing backslash (escape it as \\\\)";
      k++;
    } else if (ch === "[") {
      if (chars[k] === "^") k++;
      for (let ranges = 0; ; ranges++) {
        if (chars[k] === "]" && ranges > 0) {
          k++;
          break;
        }
        const lo = classChar();
        if (lo !== undefined) return lo;
        if (chars[k] === "-") {
          k++;
          const hi = classChar();
          if (hi !== undefined) return hi;
        }
      }
    }
  }
  return undefined;
}

// ---- Go regular expressions (RE2 syntax, as patternmatcher generates them) to JavaScript ----

type Ranges = Array<[number, number]>;

const DIGIT: Ranges = [[0x30, 0x39]];
const WORD: Ranges = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
];
const SPACE: Ranges = [
  [0x09, 0x0a],
  [0x0c, 0x0d],
  [0x20, 0x20],
];
const POSIX_CLASSES: Record<string, Ranges> = {
  alnum: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  alpha: [
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  ascii: [[0x00, 0x7f]],
  blank: [
    [0x09, 0x09],
    [0x20, 0x20],
  ],
  cntrl: [
    [0x00, 0x1f],
    [0x7f, 0x7f],
  ],
  digit: DIGIT,
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [
    [0x21, 0x2f],
    [0x3a, 0x40],
    [0x5b, 0x60],
    [0x7b, 0x7e],
  ],
  space: [
    [0x09, 0x0d],
    [0x20, 0x20],
  ],
  upper: [[0x41, 0x5a]],
  word: WORD,
  xdigit: [
    [0x30, 0x39],
    [0x41, 0x46],
    [0x61, 0x66],
  ],
};
// Go's \d, \s and \w are ASCII-only; JavaScript's \s is not, so classes are spelled out.
const PERL_CLASSES: Record<string, Ranges> = { d: DIGIT, s: SPACE, w: WORD };

function complement(ranges: Ranges): Ranges {
  const sorted = normalizeRanges(ranges);
  const out: Ranges = [];
  let next = 0;
  for (const [lo, hi] of sorted) {
    if (lo > next) out.push([next, lo - 1]);
    next = hi + 1;
  }
  if (next <= 0x10ffff) out.push([next, 0x10ffff]);
  return out;
}

function normalizeRanges(ranges: Ranges): Ranges {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Ranges = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

function codePointEscape(cp: number): string {
  return `\\u{${cp.toString(16)}}`;
}

function classSource(ranges: Ranges): string {
  const body = normalizeRanges(ranges)
    .map(([lo, hi]) => (lo === hi ? codePointEscape(lo) : `${codePointEscape(lo)}-${codePointEscape(hi)}`))
    .join("");
  return `[${body}]`;
}

function literalSource(cp: number): string {
  const ch = String.fromCodePoint(cp);
  return /^[A-Za-z0-9_]$/.test(ch) ? ch : codePointEscape(cp);
}

/** Reads the RE2 syntax that patternmatcher can produce and writes the same language for `u`-mode JavaScript. */
function translateGoRegexp(source: string): string {
  const chars = [...source].map((c) => c.codePointAt(0)!);
  let k = 0;
  let out = "";
  const peek = (offset = 0): string | undefined => {
    const cp = chars[k + offset];
    return cp === undefined ? undefined : String.fromCodePoint(cp);
  };

  // One escaped character after a backslash (already consumed), as Go's parseEscape reads it.
  const escapedChar = (): number => {
    const c = peek();
    if (c === undefined) throw new Error("trailing backslash");
    k++;
    if (c >= "1" && c <= "7" && !(peek() !== undefined && peek()! >= "0" && peek()! <= "7")) {
      throw new Error(`back-references (\\${c}) are not supported`);
    }
    if (c >= "0" && c <= "7") {
      let value = Number(c);
      for (let n = 0; n < 2 && peek() !== undefined && peek()! >= "0" && peek()! <= "7"; n++) {
        value = value * 8 + Number(peek());
        k++;
      }
      return value;
    }
    if (c === "x") {
      let hex = "";
      if (peek() === "{") {
        k++;
        while (peek() !== undefined && peek() !== "}") hex += String.fromCodePoint(chars[k++]!);
        if (peek() !== "}") throw new Error("invalid escape sequence \\x{");
        k++;
      } else {
        hex = (peek() ?? "") + (peek(1) ?? "");
        k += 2;
      }
      const value = Number.parseInt(hex, 16);
      if (!/^[0-9A-Fa-f]+$/.test(hex) || value > 0x10ffff)
        throw new Error(`invalid escape sequence \\x${hex}`);
      return value;
    }
    const simple: Record<string, number> = { a: 7, f: 12, n: 10, r: 13, t: 9, v: 11 };
    if (simple[c] !== undefined) return simple[c];
    const cp = c.codePointAt(0)!;
    if (cp < 0x80 && !/[A-Za-z0-9]/.test(c)) return cp;
    throw new Error(`invalid escape sequence \\${c}`);
  };

  const perlClass = (): Ranges | undefined => {
    if (peek() !== "\\") return undefined;
    const name = peek(1);
    if (name === undefined) return undefined;
    const ranges = PERL_CLASSES[name.toLowerCase()];
    if (ranges === undefined) return undefined;
    k += 2;
    return name === name.toLowerCase() ? ranges : complement(ranges);
  };

  const bracketClass = (): Ranges => {
    // The opening `[` is consumed.
    let negated = false;
    if (peek() === "^") {
      negated = true;
      k++;
    }
    const ranges: Ranges = [];
    let first = true;
    while (first || peek() !== "]") {
      if (peek() === undefined) throw new Error("missing closing ] in the pattern's regular expression");
      first = false;
      if (peek() === "[" && peek(1) === ":") {
        const rest = String.fromCodePoint(...chars.slice(k));
        const end = rest.indexOf(":]");
        if (end >= 0) {
          let name = rest.slice(2, end);
          const not = name.startsWith("^");
          if (not) name = name.slice(1);
          const posix = POSIX_CLASSES[name];
          if (posix === undefined) throw new Error(`invalid character class [:${name}:]`);
          ranges.push(...(not ? complement(posix) : posix));
          k += [...rest.slice(0, end + 2)].length;
          continue;
        }
      }
      if (peek() === "\\" && (peek(1) === "p" || peek(1) === "P")) {
        throw new Error("Unicode classes (\\p) are not supported");
      }
      const perl = perlClass();
      if (perl !== undefined) {
        ranges.push(...perl);
        continue;
      }
      const classChar = (): number => {
        const c = chars[k++]!;
        return c === 0x5c ? escapedChar() : c;
      };
      const lo = classChar();
      let hi = lo;
      if (peek() === "-" && peek(1) !== undefined && peek(1) !== "]") {
        k++;
        if (peek() === undefined) throw new Error("missing closing ] in the pattern's regular expression");
        hi = classChar();
        if (hi < lo) throw new Error("invalid character class range");
      }
      ranges.push([lo, hi]);
    }
    k++;
    return negated ? complement(ranges) : ranges;
  };

  while (k < chars.length) {
    const c = peek()!;
    k++;
    switch (c) {
      case "^":
      case "$":
      case "*":
      case "?":
      case "+":
      case "|":
      case ")":
        out += c;
        break;
      case "(":
        out += "(?:";
        break;
      case ".":
        // Go's `.` stops at newlines and nothing else.
        out += "[^\\n]";
        break;
      case "[":
        out += classSource(bracketClass());
        break;
      case "\\": {
        const next = peek();
        if (next === "A") {
          k++;
          out += "^";
        } else if (next === "z") {
          k++;
          out += "$";
        } else if (next === "b" || next === "B") {
          k++;
          out += `\\${next}`;
        } else if (next === "Q") {
          k++;
          while (k < chars.length && !(peek() === "\\" && peek(1) === "E")) out += literalSource(chars[k++]!);
          if (k < chars.length) k += 2;
        } else if (next === "p" || next === "P") {
          throw new Error("Unicode classes (\\p) are not supported");
        } else {
          k--;
          const perl = perlClass();
          if (perl !== undefined) out += classSource(perl);
          else {
            k++;
            out += literalSource(escapedChar());
          }
        }
        break;
      }
      default:
        out += literalSource(c.codePointAt(0)!);
    }
  }
  return out;
}

// ---- Go's strings.TrimSpace, which patterns go through ----

// unicode.IsSpace: unlike String.prototype.trim it includes U+0085 and excludes U+FEFF.
const GO_SPACE = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const GO_TRIM = new RegExp(`^[${GO_SPACE}]+|[${GO_SPACE}]+$`, "gu");

export function trimGoSpace(text: string): string {
  return text.replace(GO_TRIM, "");
}
