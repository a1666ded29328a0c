import type { ParsedInstruction } from "./instruction.js";
import { ShellSyntaxError, splitShellWords } from "./shell-words.js";
import { lineContent } from "./tokens.js";

/** A `<<NAME` found in an instruction line; its body is read from the lines after the instruction. */
export interface HeredocMarker {
  name: string;
  expand: boolean;
  chomp: boolean;
  fileDescriptor: number;
  /** The word as it appears in the instruction, to point at it. */
  word: string;
}

export class HeredocSyntaxError extends Error {
  readonly word: string;

  constructor(message: string, word: string) {
    super(message);
    this.word = word;
  }
}

/** Instructions whose shell form may open heredocs; ONBUILD passes this on to its trigger. */
const HEREDOC_INSTRUCTIONS = new Set(["add", "copy", "run"]);

export function canContainHeredoc(instruction: ParsedInstruction): boolean {
  const target = instruction.name === "onbuild" && instruction.inner ? instruction.inner : instruction;
  return HEREDOC_INSTRUCTIONS.has(target.name) && !target.json;
}

/**
 * BuildKit's `^(\d*)<<(-?)\s*([^<]*)$`, matched by hand: a regular expression would backtrack
 * quadratically over a long run of blanks.
 */
function matchHeredocWord(word: string): { digits: string; dash: string; rest: string } | undefined {
  let i = 0;
  while (i < word.length && word.charCodeAt(i) >= 0x30 && word.charCodeAt(i) <= 0x39) i++;
  const digits = word.slice(0, i);
  if (!word.startsWith("<<", i)) return undefined;
  i += 2;
  const dash = word.charCodeAt(i) === 0x2d ? "-" : "";
  i += dash.length;
  while (i < word.length && " \t\n\f\r".includes(word[i]!)) i++;
  const rest = word.slice(i);
  return rest.includes("<") ? undefined : { digits, dash, rest };
}

function quoteCount(word: string): number {
  let count = 0;
  for (let i = 0; i < word.length; i++) {
    const code = word.charCodeAt(i);
    if (code === 0x22 || code === 0x27) count++;
  }
  return count;
}

function markerFrom(word: string): HeredocMarker | undefined {
  const match = matchHeredocWord(word);
  if (match === undefined) return undefined;
  const { digits, dash, rest } = match;
  if (rest === "") return undefined;
  try {
    const words = splitShellWords(rest, { rawQuotes: false, rawEscapes: false });
    if (words.length !== 1) return undefined;
    const rawWords = splitShellWords(rest, { rawQuotes: true, rawEscapes: false });
    if (rawWords.length !== words.length) {
      throw new HeredocSyntaxError(`internal lexing of heredoc produced inconsistent results: ${rest}`, word);
    }
    const name = words[0]!;
    return {
      name,
      // Any quoting in the delimiter (`'EOF'`, `"EOF"`, `E"O"F`) makes the body literal.
      expand: quoteCount(name) === quoteCount(rawWords[0]!),
      chomp: dash === "-",
      fileDescriptor: digits === "" ? 0 : Math.min(Number(digits), 2 ** 64 - 1),
      word,
    };
  } catch (err) {
    if (err instanceof ShellSyntaxError) throw new HeredocSyntaxError(err.message, word);
    if (err instanceof RangeError)
      throw new HeredocSyntaxError("heredoc delimiter is nested too deeply", word);
    throw err;
  }
}

/**
 * The heredocs an instruction line opens, in order, found as BuildKit finds them: among the line's
 * shell words (quotes and escapes kept), each word of the form `[n]<<[-]DELIMITER`.
 */
export function heredocMarkers(line: string): HeredocMarker[] {
  let words: string[];
  try {
    words = splitShellWords(line, { rawQuotes: true, rawEscapes: true });
  } catch (err) {
    // BuildKit ignores a line it cannot split: such a line opens no heredocs.
    if (err instanceof ShellSyntaxError || err instanceof RangeError) return [];
    throw err;
  }
  const markers: HeredocMarker[] = [];
  for (const word of words) {
    const marker = markerFrom(word);
    if (marker !== undefined) markers.push(marker);
  }
  return markers;
}

/** Does this physical line end the heredoc? (`<<-` ignores the line's leading tabs.) */
export function isHeredocTerminator(image: string, marker: { name: string; chomp: boolean }): boolean {
  let line = lineContent(image);
  if (marker.chomp) {
    let tabs = 0;
    while (line.charCodeAt(tabs) === 0x09) tabs++;
    line = line.slice(tabs);
  }
  return line === marker.name;
}

/** The body lines with their line endings, leading tabs removed from each for `<<-`. */
export function heredocContent(lines: readonly string[], chomp: boolean): string {
  const content = lines.join("");
  return chomp ? content.replace(/(^|\n)\t+/g, "$1") : content;
}
