/**
 * One instruction's logical line (continuations already removed) → keyword, flags and arguments,
 * split as BuildKit's parser splits them for each instruction.
 */
import { parseExecForm } from "./exec-form.js";
import {
  fromByteString,
  goQuote,
  goToLower,
  goTrimSpace,
  isGoSpace,
  leadingGoSpace,
  toByteString,
} from "./go-text.js";
import { parseWords } from "./words.js";

export type EscapeToken = "\\" | "`";

export interface ParsedInstruction {
  keyword: string;
  /** The keyword lower-cased as Go does. */
  name: string;
  flags: string[];
  args: string[];
  json: boolean;
  /** The text the instruction was parsed from (for ONBUILD's trigger, the text after ONBUILD). */
  original: string;
  inner?: ParsedInstruction;
  /** Code-unit offsets, in the logical line, of the keyword and of the arguments. */
  keywordOffset: number;
  argsOffset: number;
}

/** A problem in the arguments, at a code-unit offset of the logical line. */
export class InstructionSyntaxError extends Error {
  readonly offset: number;

  constructor(message: string, offset: number) {
    super(message);
    this.offset = offset;
  }
}

/** A problem at an offset of the arguments given to an argument parser. */
class ArgumentError extends Error {
  readonly offset: number;

  constructor(message: string, offset: number) {
    super(message);
    this.offset = offset;
  }
}

const NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only";

/** BuildKit's `[\t\v\f\r ]+`, the separator of a keyword and its arguments and of plain word lists. */
const ASCII_BLANKS = /[\t\v\f\r ]+/;

interface Arguments {
  args: string[];
  json: boolean;
}

type ArgumentParser = (rest: string, escapeToken: EscapeToken) => Arguments;

const NONE: Arguments = { args: [], json: false };

/** Go's `regexp.Split(s, 2)` on ASCII blanks: the text before the first run, and all after it. */
function splitOnce(rest: string): string[] {
  const match = ASCII_BLANKS.exec(rest);
  if (match === null) return [rest];
  return [rest.slice(0, match.index), rest.slice(match.index + match[0].length)];
}

function whitespaceSeparated(rest: string): Arguments {
  return rest === "" ? NONE : { args: rest.split(ASCII_BLANKS), json: false };
}

function plainString(rest: string): Arguments {
  return rest === "" ? NONE : { args: [rest], json: false };
}

/** RUN, CMD, ENTRYPOINT, SHELL: a JSON string array, or the whole text as one shell command. */
function maybeJson(rest: string): Arguments {
  if (rest === "") return NONE;
  const form = parseExecForm(rest);
  if (form.kind === "exec") return { args: form.args, json: true };
  if (form.kind === "not-strings") throw new ArgumentError(NOT_STRING_ARRAY, form.offset);
  return { args: [rest], json: false };
}

/** ADD, COPY, VOLUME: a JSON string array, or words separated by blanks. */
function maybeJsonList(rest: string): Arguments {
  const form = parseExecForm(rest);
  if (form.kind === "exec") return { args: form.args, json: true };
  if (form.kind === "not-strings") throw new ArgumentError(NOT_STRING_ARRAY, form.offset);
  return whitespaceSeparated(rest);
}

/**
 * ENV and LABEL: `key value` (the old form: the first word, then everything after it) or
 * `key=value ...`; each pair becomes key, value and the separator (`=` or empty).
 */
function nameValuePairs(keyword: string): ArgumentParser {
  return (rest, escapeToken) => {
    const words = parseWords(rest, escapeToken);
    if (words.length === 0) return NONE;
    if (!words[0]!.text.includes("=")) {
      const parts = splitOnce(rest);
      if (parts.length < 2) throw new ArgumentError(`${keyword} must have two arguments`, 0);
      return { args: [parts[0]!, parts[1]!, ""], json: false };
    }
    const args: string[] = [];
    for (const word of words) {
      const equals = word.text.indexOf("=");
      if (equals === -1) {
        throw new ArgumentError(
          `Syntax error - can't find = in ${goQuote(word.text)}. Must be of the form: name=value`,
          word.offset,
        );
      }
      args.push(word.text.slice(0, equals), word.text.slice(equals + 1), "=");
    }
    return { args, json: false };
  };
}

/** ARG: names with optional `=value`, quotes kept. */
function namesOrNameValues(rest: string, escapeToken: EscapeToken): Arguments {
  return { args: parseWords(rest, escapeToken).map((word) => word.text), json: false };
}

/**
 * HEALTHCHECK: the type word (`CMD`, `NONE`, ...) then a command as for CMD. BuildKit finds the end of
 * the type word byte by byte, so the bytes 0x85 and 0xA0 inside a UTF-8 character count as blanks.
 */
function healthcheck(rest: string): Arguments {
  const bytes = toByteString(rest);
  let separator = 0;
  while (separator < bytes.length && !isGoSpace(bytes.charCodeAt(separator))) separator++;
  let next = separator;
  while (next < bytes.length && isGoSpace(bytes.charCodeAt(next))) next++;
  if (separator === 0) return NONE;
  const command = fromByteString(bytes.slice(next));
  try {
    const parsed = maybeJson(command);
    return { args: [fromByteString(bytes.slice(0, separator)), ...parsed.args], json: parsed.json };
  } catch (err) {
    if (err instanceof ArgumentError)
      throw new ArgumentError(err.message, rest.length - command.length + err.offset);
    throw err;
  }
}

/** The instructions BuildKit's parser knows, and how each one's arguments are split. */
const ARGUMENT_PARSERS = new Map<string, ArgumentParser>([
  ["add", maybeJsonList],
  ["arg", namesOrNameValues],
  ["cmd", maybeJson],
  ["copy", maybeJsonList],
  ["entrypoint", maybeJson],
  ["env", nameValuePairs("ENV")],
  ["expose", whitespaceSeparated],
  ["from", whitespaceSeparated],
  ["healthcheck", healthcheck],
  ["label", nameValuePairs("LABEL")],
  ["maintainer", plainString],
  ["onbuild", () => NONE],
  ["run", maybeJson],
  ["shell", maybeJson],
  ["stopsignal", plainString],
  ["user", plainString],
  ["volume", maybeJsonList],
  ["workdir", plainString],
]);

/** Upper-cased, for messages and suggestions. */
export const INSTRUCTION_NAMES: readonly string[] = [...ARGUMENT_PARSERS.keys()].map((name) =>
  name.toUpperCase(),
);

export function isKnownInstruction(name: string): boolean {
  return ARGUMENT_PARSERS.has(name);
}

/** Where the flag reader is: between words, in a word, in a quoted part of a word. */
const FlagPhase = { Blanks: 0, Word: 1, Quoted: 2 } as const;

/**
 * Takes the `--flag[=value]` words from the start of the arguments, with BuildKit's rules: quotes
 * removed, the escape token escapes the next character, `--` ends the flags. BuildKit reads flags
 * byte by byte and turns each byte into a character, so a non-ASCII flag value comes out as its
 * UTF-8 bytes read as Latin-1; this reproduces that.
 */
function extractFlags(text: string, escapeToken: EscapeToken): { rest: string; flags: string[] } {
  const bytes = toByteString(text);
  const escapeCode = escapeToken.charCodeAt(0);
  const flags: string[] = [];
  let phase: number = FlagPhase.Blanks;
  let word = "";
  let quote = 0;
  let blankOK = false;
  const restFrom = (pos: number) => ({ rest: fromByteString(bytes.slice(pos)), flags });
  for (let pos = 0; pos <= bytes.length; pos++) {
    const atEnd = pos === bytes.length;
    let code = atEnd ? 0 : bytes.charCodeAt(pos);
    if (phase === FlagPhase.Blanks) {
      if (atEnd) break;
      if (isGoSpace(code)) continue;
      if (code !== 0x2d || pos + 1 === bytes.length || bytes.charCodeAt(pos + 1) !== 0x2d)
        return restFrom(pos);
      phase = FlagPhase.Word;
    }
    if (atEnd) {
      if (word !== "--" && (blankOK || word.length > 0)) flags.push(word);
      break;
    }
    if (phase === FlagPhase.Word) {
      if (isGoSpace(code)) {
        phase = FlagPhase.Blanks;
        if (word === "--") return restFrom(pos);
        if (blankOK || word.length > 0) flags.push(word);
        word = "";
        blankOK = false;
        continue;
      }
      if (code === 0x27 || code === 0x22) {
        quote = code;
        blankOK = true;
        phase = FlagPhase.Quoted;
        continue;
      }
      if (code === escapeCode) {
        if (pos + 1 === bytes.length) continue;
        pos++;
        code = bytes.charCodeAt(pos);
      }
      word += String.fromCharCode(code);
      continue;
    }
    if (code === quote) {
      phase = FlagPhase.Word;
      continue;
    }
    if (code === escapeCode) {
      if (pos + 1 === bytes.length) {
        phase = FlagPhase.Word;
        continue;
      }
      pos++;
      code = bytes.charCodeAt(pos);
    }
    word += String.fromCharCode(code);
  }
  return { rest: "", flags };
}

/** One instruction, not looking inside ONBUILD's trigger; `trigger` is the text of that trigger. */
function parseSingle(
  line: string,
  escapeToken: EscapeToken,
  base: number,
): { instruction: ParsedInstruction; trigger?: string } {
  const start = leadingGoSpace(line);
  const trimmed = goTrimSpace(line);
  const blanks = ASCII_BLANKS.exec(trimmed);
  const keyword = blanks === null ? trimmed : trimmed.slice(0, blanks.index);
  let flags: string[] = [];
  let args = "";
  if (blanks !== null) {
    const extracted = extractFlags(trimmed.slice(blanks.index + blanks[0].length), escapeToken);
    flags = extracted.flags;
    args = goTrimSpace(extracted.rest);
  }
  const argsOffset = base + Math.max(0, start + trimmed.length - args.length);
  const name = goToLower(keyword);
  const instruction: ParsedInstruction = {
    keyword,
    name,
    flags,
    args: [],
    json: false,
    original: line,
    keywordOffset: base + start,
    argsOffset,
  };
  if (name === "onbuild") return args === "" ? { instruction } : { instruction, trigger: args };
  const parse = ARGUMENT_PARSERS.get(name);
  if (parse === undefined) {
    // BuildKit's parser keeps an unknown instruction with one empty argument; it is rejected later.
    instruction.args = [""];
    return { instruction };
  }
  try {
    const parsed = parse(args, escapeToken);
    instruction.args = parsed.args;
    instruction.json = parsed.json;
  } catch (err) {
    if (err instanceof ArgumentError) throw new InstructionSyntaxError(err.message, argsOffset + err.offset);
    throw err;
  }
  return { instruction };
}

/**
 * Parses a logical line. ONBUILD's trigger is parsed as an instruction of its own, into `inner`
 * (iteratively: `ONBUILD ONBUILD ...` may nest arbitrarily deep). Throws InstructionSyntaxError.
 */
export function parseInstructionLine(line: string, escapeToken: EscapeToken): ParsedInstruction {
  const chain: ParsedInstruction[] = [];
  let text: string | undefined = line;
  let base = 0;
  while (text !== undefined) {
    const { instruction, trigger } = parseSingle(text, escapeToken, base);
    chain.push(instruction);
    text = trigger;
    base = instruction.argsOffset;
  }
  for (let i = chain.length - 1; i > 0; i--) chain[i - 1]!.inner = chain[i]!;
  return chain[0]!;
}
