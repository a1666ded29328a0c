/**
 * The Dockerfile's tokens: one per physical line, classified as BuildKit's line reader sees it.
 *
 * Everything inside a line (keyword, flags, words, JSON) is parsed later from the logical line,
 * because BuildKit parses those on the text with continuations already removed: a quoted word or a
 * JSON array may span several physical lines.
 *
 * The escape directive changes which lines continue, so the lexer has two modes: backslash (the
 * default) and backtick, entered by `# escape=` followed by a backtick.
 */
import type {
  CustomPatternMatcherFunc,
  CustomPatternMatcherReturn,
  IToken,
  Lexer as LexerType,
  TokenType,
} from "chevrotain";
import { createToken, Lexer, tokenMatcher } from "./chevrotain.js";
import { type DirectiveMatch, readDirective } from "./directives.js";

/** Go's `unicode.IsSpace`, without the newline that ends a line. */
const SPACE = "\\t\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/** End of the text (Chevrotain does not accept the `$` anchor in a token pattern). */
const END_OF_TEXT = "(?![\\s\\S])";

/** Any physical line; heredoc bodies are lines of any kind. */
export const Line = createToken({ name: "Line", pattern: Lexer.NA });

/** The line without its line ending, as BuildKit trims it (`\n` and any `\r` before it). */
export function lineContent(image: string): string {
  let end = image.length;
  while (end > 0 && (image.charCodeAt(end - 1) === 0x0a || image.charCodeAt(end - 1) === 0x0d)) end--;
  return end === image.length ? image : image.slice(0, end);
}

/**
 * A parser directive. Only lines before the first other line are directives, so the matcher looks
 * at the previous token; the directive itself rides along as the token's payload.
 */
function directiveMatcher(wantBacktickEscape: boolean): CustomPatternMatcherFunc {
  return (text, offset, tokens) => {
    const previous = tokens[tokens.length - 1];
    if (previous !== undefined && !tokenMatcher(previous, DirectiveLine)) return null;
    const newline = text.indexOf("\n", offset);
    const end = newline === -1 ? text.length : newline + 1;
    const image = text.slice(offset, end);
    const directive = readDirective(lineContent(image));
    if (directive === undefined) return null;
    if (wantBacktickEscape !== (directive.name === "escape" && directive.value === "`")) return null;
    const match = [image] as CustomPatternMatcherReturn;
    match.payload = directive;
    return match;
  };
}

export const DirectiveLine = createToken({
  name: "DirectiveLine",
  pattern: { exec: directiveMatcher(false) },
  categories: [Line],
  line_breaks: true,
});

/** `# escape=` with a backtick: a directive that switches the lexer to the backtick mode. */
const BacktickEscapeDirective = createToken({
  name: "BacktickEscapeDirective",
  pattern: { exec: directiveMatcher(true) },
  categories: [DirectiveLine, Line],
  push_mode: "backtick",
  line_breaks: true,
});

/** Only blanks: skipped between instructions, an "empty continuation line" inside one. */
export const BlankLine = createToken({
  name: "BlankLine",
  pattern: new RegExp(`[${SPACE}]*\\n|[${SPACE}]+${END_OF_TEXT}`),
  categories: [Line],
  line_breaks: true,
});

/** `#` after optional blanks: skipped everywhere, even inside a continued instruction. */
export const CommentLine = createToken({
  name: "CommentLine",
  pattern: new RegExp(`[${SPACE}]*#[^\\n]*\\n?`),
  categories: [Line],
  line_breaks: true,
});

/**
 * A line whose last non-blank character is the escape token, not itself escaped (or alone on the
 * line): the instruction continues on the next line.
 */
export const ContinuedLine = createToken({ name: "ContinuedLine", pattern: Lexer.NA, categories: [Line] });

const BackslashContinuedLine = createToken({
  name: "BackslashContinuedLine",
  pattern: /(?:[^\n]*[^\\\n])?\\[ \t]*\r*(?:\n|(?![\s\S]))/,
  categories: [ContinuedLine, Line],
  line_breaks: true,
});

const BacktickContinuedLine = createToken({
  name: "BacktickContinuedLine",
  pattern: /(?:[^\n]*[^`\n])?`[ \t]*\r*(?:\n|(?![\s\S]))/,
  categories: [ContinuedLine, Line],
  line_breaks: true,
});

/** Any other line: an instruction on one line, or the last line of a continued one. */
export const TextLine = createToken({
  name: "TextLine",
  pattern: /[^\n]+\n?/,
  categories: [Line],
  line_breaks: true,
});

// A repeated `# escape=` with a backtick is still a directive (an error, reported by the AST
// builder), so the backtick mode knows it too; entering the mode again changes nothing.
const lineKinds = (continued: TokenType) => [
  BacktickEscapeDirective,
  DirectiveLine,
  BlankLine,
  CommentLine,
  continued,
  TextLine,
];

export const allTokenTypes: TokenType[] = [
  Line,
  ContinuedLine,
  BacktickEscapeDirective,
  DirectiveLine,
  BlankLine,
  CommentLine,
  BackslashContinuedLine,
  BacktickContinuedLine,
  TextLine,
];

let lexer: LexerType | undefined;

/**
 * The line lexer. Chevrotain's checks of the token definitions run only with `validate` (in the
 * tests, where an error would show), not on every build.
 */
export function createLineLexer(options: { validate?: boolean } = {}): LexerType {
  return new Lexer(
    {
      modes: {
        backslash: lineKinds(BackslashContinuedLine),
        backtick: lineKinds(BacktickContinuedLine),
      },
      defaultMode: "backslash",
    },
    {
      positionTracking: "onlyStart",
      // Lines end at `\n` only: a lone `\r` is part of a line, as in BuildKit's line scanner.
      lineTerminatorsPattern: /\n/g,
      lineTerminatorCharacters: ["\n"],
      ensureOptimizations: false,
      skipValidations: !options.validate,
    },
  );
}

/** Splits a Dockerfile into line tokens. Every character belongs to exactly one token. */
export function tokenizeLines(text: string): IToken[] {
  lexer ??= createLineLexer();
  const result = lexer.tokenize(text);
  if (result.errors.length > 0) {
    // Unreachable: TextLine matches any line the other kinds do not.
    throw new Error(`line lexer failed at offset ${result.errors[0]!.offset}`);
  }
  return result.tokens;
}

export function isDirectiveToken(token: IToken): boolean {
  return tokenMatcher(token, DirectiveLine);
}

export function directiveOf(token: IToken): DirectiveMatch {
  return token.payload as DirectiveMatch;
}

export function isContinuedLine(token: IToken): boolean {
  return tokenMatcher(token, ContinuedLine);
}
