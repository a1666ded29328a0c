import { Cursor } from "./cursor.js";

/**
 * The patterns of `${v#p}`, `${v%p}` and `${v/p/r}`, matched as BuildKit matches them: a pattern
 * becomes a Go regular expression, and the results follow Go's regexp package, not POSIX sh.
 *
 * - `*` is any run of characters, `?` any one character; neither crosses a newline (Go's `.`).
 * - `\*`, `\?` and `\\` are literal; `\}` and `\/` only protect the delimiters of `${...}`.
 *   Any other escape is an error.
 * - Everything else is literal, `[` and `]` included: BuildKit has no bracket expressions.
 */

/** A pattern that BuildKit refuses to compile; the reason reads after the pattern. */
export class InvalidPatternError extends Error {}

const ANY_CHAR = "[^\\n]";
const REGEXP_SYNTAX = /[\\^$.*+?()[\]{}|/]/;

/**
 * `longest` chooses `*` to be greedy; `anchored` ties the match to the start of the value.
 * The regexp is global so that callers can search from a position.
 */
function compilePattern(pattern: string, longest: boolean, anchored: boolean): RegExp {
  const cursor = new Cursor(pattern);
  let source = anchored ? "^" : "";
  for (let ch = cursor.next(); ch !== undefined; ch = cursor.next()) {
    if (ch === "*") {
      source += longest ? `${ANY_CHAR}*` : `${ANY_CHAR}*?`;
    } else if (ch === "?") {
      source += ANY_CHAR;
    } else if (ch === "\\") {
      const escaped = cursor.peek();
      if (escaped === "}" || escaped === "/") continue;
      cursor.next();
      if (escaped === undefined) throw new InvalidPatternError("it ends with a lone backslash");
      if (escaped !== "*" && escaped !== "?" && escaped !== "\\") {
        throw new InvalidPatternError(`"\\${escaped}" is not an escape (only \\*, \\? and \\\\ are)`);
      }
      source += `\\${escaped}`;
    } else {
      source += REGEXP_SYNTAX.test(ch) ? `\\${ch}` : ch;
    }
  }
  return new RegExp(source, "gu");
}

/** Where the first match at or after `from` lies, as [start, end) in UTF-16 units. */
function findMatch(regexp: RegExp, value: string, from: number): [number, number] | undefined {
  regexp.lastIndex = from;
  const match = regexp.exec(value);
  return match === null ? undefined : [match.index, match.index + match[0].length];
}

/** `${v#p}` (shortest) and `${v##p}` (longest). */
export function removePrefix(value: string, pattern: string, longest: boolean): string {
  const match = findMatch(compilePattern(pattern, longest, true), value, 0);
  return match === undefined ? value : value.slice(match[1]);
}

/**
 * `${v%p}` and `${v%%p}`. A regexp finds the leftmost match, never the shortest rightmost one, so
 * the value and the pattern are both reversed and the prefix is removed instead.
 */
export function removeSuffix(value: string, pattern: string, longest: boolean): string {
  return reverse(removePrefix(reverse(value), reversePattern(pattern), longest));
}

function reverse(text: string): string {
  return Array.from(text).reverse().join("");
}

/** Reverses a pattern while keeping each escape in front of the character it escapes. */
function reversePattern(pattern: string): string {
  const chars = Array.from(pattern);
  const units: string[] = [];
  for (let i = 0; i < chars.length; i++) {
    if (chars[i] === "\\" && i + 1 < chars.length) {
      units.push(chars[i]! + chars[i + 1]!);
      i++;
    } else {
      units.push(chars[i]!);
    }
  }
  return units.reverse().join("");
}

/** `${v/p/r}`: the first (leftmost, longest-star) match is replaced by `replacement`, literally. */
export function replaceFirst(value: string, pattern: string, replacement: string): string {
  const match = findMatch(compilePattern(pattern, true, false), value, 0);
  if (match === undefined) return value;
  return value.slice(0, match[0]) + replacement + value.slice(match[1]);
}

/**
 * `${v//p/r}`, as Go's `Regexp.ReplaceAllString`: an empty match right after a previous match is
 * not replaced again (so a star pattern over the whole value gives one replacement, where
 * JavaScript's replace would give two), and
 * the replacement is a Go template (see expandReplacement).
 */
export function replaceAll(value: string, pattern: string, replacement: string): string {
  const regexp = compilePattern(pattern, true, false);
  let result = "";
  let lastMatchEnd = 0;
  let searchFrom = 0;
  while (searchFrom <= value.length) {
    const match = findMatch(regexp, value, searchFrom);
    if (match === undefined) break;
    const [start, end] = match;
    result += value.slice(lastMatchEnd, start);
    if (end > lastMatchEnd || start === 0) result += expandReplacement(replacement, value.slice(start, end));
    lastMatchEnd = end;
    // Always move on by at least one character, so that an empty match cannot repeat forever.
    const width = codePointWidth(value, searchFrom);
    if (searchFrom + width > end) searchFrom += width;
    else if (searchFrom + 1 > end) searchFrom++;
    else searchFrom = end;
  }
  return result + value.slice(lastMatchEnd);
}

function codePointWidth(text: string, index: number): number {
  const codePoint = text.codePointAt(index);
  if (codePoint === undefined) return 0;
  return codePoint > 0xffff ? 2 : 1;
}

const TEMPLATE_REFERENCE = /^(?:\{([\p{L}\p{Nd}_]+)\}|([\p{L}\p{Nd}_]+))/u;

/**
 * Go expands `$name` and `${name}` in a ReplaceAll replacement as references to groups of the
 * match. A converted pattern has no groups but the whole match, group 0: so `$0` and `${0}` insert
 * the matched text, `$$` is one `$`, any other reference is empty, and a `$` that starts no
 * reference stays as it is.
 */
function expandReplacement(template: string, matched: string): string {
  let result = "";
  let rest = template;
  for (let dollar = rest.indexOf("$"); dollar >= 0; dollar = rest.indexOf("$")) {
    result += rest.slice(0, dollar);
    rest = rest.slice(dollar + 1);
    if (rest.startsWith("$")) {
      result += "$";
      rest = rest.slice(1);
      continue;
    }
    const reference = TEMPLATE_REFERENCE.exec(rest);
    if (reference === null) {
      result += "$";
      continue;
    }
    rest = rest.slice(reference[0].length);
    if ((reference[1] ?? reference[2]) === "0") result += matched;
  }
  return result + rest;
}
