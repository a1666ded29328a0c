/**
 * The Dockerfile parser: text → line tokens (Chevrotain lexer) → CST (Chevrotain parser) → AST
 * (a CST visitor), matching BuildKit's parser, whose dump format `dumpAst` prints.
 */
import type { IToken } from "chevrotain";
import { DockerfileError } from "../errors.js";
import type { DockerfileAst } from "./ast.js";
import { buildAst } from "./builder.js";
import { decodeUtf8, normalizeSurrogates, utf8Length } from "./go-text.js";
import { dockerfileGrammar, type HeredocDelimiter } from "./grammar.js";
import { canContainHeredoc, heredocMarkers } from "./heredoc.js";
import { type EscapeToken, parseInstructionLine } from "./instruction.js";
import { joinLogicalLine, type LogicalLine } from "./logical-line.js";
import { directiveOf, isDirectiveToken, lineContent, tokenizeLines } from "./tokens.js";

export * from "./ast.js";
export { dumpAst } from "./dump.js";

/** BuildKit reads lines with Go's bufio.Scanner, which refuses a line longer than this many bytes. */
const MAX_LINE_BYTES = 65_535;

/**
 * The heredocs a logical line opens; any problem is left for the AST builder to report in order.
 * The lines it joins are kept in `joined` for the builder.
 */
function heredocOracle(escapeToken: EscapeToken, joined: Map<IToken, LogicalLine>) {
  return (lines: IToken[]): HeredocDelimiter[] => {
    if (!lines.some((line) => line.image.includes("<"))) return [];
    const logical = joinLogicalLine(lines);
    joined.set(lines[0]!, logical);
    const text = logical.text;
    if (!text.includes("<<")) return [];
    try {
      if (!canContainHeredoc(parseInstructionLine(text, escapeToken))) return [];
      return heredocMarkers(text);
    } catch {
      return [];
    }
  };
}

/**
 * Parses a Dockerfile. `source` is its text, or its bytes (bytes that are not UTF-8 are kept and
 * dumped as `\xNN`, as BuildKit does). Throws DockerfileError, positioned at file:line:column.
 */
export function parseDockerfile(source: string | Uint8Array, options: { file?: string } = {}): DockerfileAst {
  const file = options.file ?? "Dockerfile";
  let text = typeof source === "string" ? normalizeSurrogates(source) : decodeUtf8(source);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);

  const tokens = tokenizeLines(text);
  const lines = tokens.map((token) => lineContent(token.image));
  for (const token of tokens) {
    const content = token.image.endsWith("\n") ? token.image.slice(0, -1) : token.image;
    // A UTF-16 code unit is at most 3 UTF-8 bytes: only long lines need counting.
    if (content.length * 3 > MAX_LINE_BYTES && utf8Length(content) > MAX_LINE_BYTES) {
      throw new DockerfileError(`dockerfile line greater than max allowed size of ${MAX_LINE_BYTES}`, {
        file,
        position: { line: token.startLine!, column: 1 },
        lines,
      });
    }
  }

  let escapeToken: EscapeToken = "\\";
  for (const token of tokens) {
    if (!isDirectiveToken(token)) break;
    const directive = directiveOf(token);
    if (directive.name === "escape" && directive.value === "`") escapeToken = "`";
  }

  const grammar = dockerfileGrammar();
  const joined = new Map<IToken, LogicalLine>();
  grammar.heredocsOpenedBy = heredocOracle(escapeToken, joined);
  grammar.input = tokens;
  const cst = grammar.dockerfile();
  const [problem] = grammar.errors;
  if (problem !== undefined) {
    // Unreachable by construction (every sequence of line tokens is a Dockerfile); reported, not hidden.
    throw new DockerfileError(`unexpected line: ${problem.message}`, {
      file,
      position: { line: problem.token.startLine ?? 1, column: problem.token.startColumn ?? 1 },
      lines,
    });
  }
  return buildAst(cst, { file, lines, escapeToken, joined });
}
