import { leadingGoSpace } from "./go-text.js";

/** The parser directives BuildKit knows; any other `# name=value` ends the directive block. */
const KNOWN_DIRECTIVES = new Set(["syntax", "escape", "check"]);

export interface DirectiveMatch {
  /** Lower-cased. */
  name: string;
  value: string;
  /** Code-unit offsets of the name and the value in the line, for error columns. */
  nameOffset: number;
  valueOffset: number;
}

/** Go's regexp `\s`, which BuildKit's directive pattern uses around `=` and at the end. */
function isRegexpSpace(code: number): boolean {
  return code === 0x20 || code === 0x09 || code === 0x0a || code === 0x0c || code === 0x0d;
}

function isAsciiLetter(code: number): boolean {
  return (code >= 0x41 && code <= 0x5a) || (code >= 0x61 && code <= 0x7a);
}

function isAsciiDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/**
 * Reads `# name = value` as BuildKit's directive parser does (a comment, blanks, an ASCII name, `=`,
 * a value with trailing blanks removed), given a line without its line ending. Returns undefined
 * when the line is not a directive BuildKit knows.
 */
export function readDirective(line: string): DirectiveMatch | undefined {
  let i = leadingGoSpace(line);
  if (line.charCodeAt(i) !== 0x23 /* # */) return undefined;
  i++;
  i += leadingGoSpace(line, i);
  const nameOffset = i;
  if (!isAsciiLetter(line.charCodeAt(i))) return undefined;
  i++;
  while (i < line.length && (isAsciiLetter(line.charCodeAt(i)) || isAsciiDigit(line.charCodeAt(i)))) i++;
  const name = line.slice(nameOffset, i).toLowerCase();
  while (i < line.length && isRegexpSpace(line.charCodeAt(i))) i++;
  if (line.charCodeAt(i) !== 0x3d /* = */) return undefined;
  i++;
  const afterEquals = i;
  while (i < line.length && isRegexpSpace(line.charCodeAt(i))) i++;
  let end = line.length;
  while (end > i && isRegexpSpace(line.charCodeAt(end - 1))) end--;
  let valueOffset = i;
  if (end === i) {
    // Only blanks after `=`: the pattern's lazy value still takes one character, the last blank.
    if (line.length === afterEquals) return undefined;
    valueOffset = line.length - 1;
    end = line.length;
  }
  if (!KNOWN_DIRECTIVES.has(name)) return undefined;
  return { name, value: line.slice(valueOffset, end), nameOffset, valueOffset };
}
