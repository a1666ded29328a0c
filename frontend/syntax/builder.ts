/**
 * CST → AST: the semantics of the grammar's line structure. Joins each instruction's lines, splits
 * its keyword, flags and arguments, attaches heredoc bodies and the comments above it, checks the
 * directives, and turns every problem into a DockerfileError at its line and column.
 */
import type { CstNode, IToken } from "chevrotain";
import { DockerfileError } from "../errors.js";
import type {
  Directive,
  DockerfileAst,
  Heredoc,
  InstructionNode,
  ParseWarning,
  Position,
  SourceRange,
} from "./ast.js";
import { goTrimSpace, leadingGoSpace } from "./go-text.js";
import { dockerfileGrammar, firstInstructionLine, instructionLines } from "./grammar.js";
import {
  canContainHeredoc,
  type HeredocMarker,
  HeredocSyntaxError,
  heredocContent,
  heredocMarkers,
} from "./heredoc.js";
import {
  type EscapeToken,
  INSTRUCTION_NAMES,
  InstructionSyntaxError,
  isKnownInstruction,
  type ParsedInstruction,
  parseInstructionLine,
} from "./instruction.js";
import { joinLogicalLine, type LogicalLine, positionIn } from "./logical-line.js";
import { closestMatch } from "./suggest.js";
import { directiveOf, lineContent } from "./tokens.js";

export interface SourceText {
  file: string;
  /** The physical lines, without line endings. */
  lines: string[];
  escapeToken: EscapeToken;
  /** Logical lines the parser already joined, by their first line. */
  joined: Map<IToken, LogicalLine>;
}

interface DockerfileContext {
  DirectiveLine?: IToken[];
  BlankLine?: IToken[];
  CommentLine?: IToken[];
  instruction?: CstNode[];
}

interface InstructionContext {
  logicalLine: CstNode[];
  heredoc?: CstNode[];
}

interface LogicalLineContext {
  TextLine?: IToken[];
  ContinuedLine?: IToken[];
  CommentLine?: IToken[];
  BlankLine?: IToken[];
}

interface HeredocContext {
  body?: IToken[];
  terminator?: IToken[];
}

const BaseVisitor = dockerfileGrammar().getBaseCstVisitorConstructor<unknown, unknown>();

function startOf(token: IToken): Position {
  return { line: token.startLine!, column: token.startColumn! };
}

/** Just after the last character of the token's line (line endings excluded). */
function endOf(token: IToken): Position {
  return { line: token.startLine!, column: lineContent(token.image).length + 1 };
}

/** The token that comes last in the file among the given groups. */
function lastToken(...groups: (readonly IToken[] | undefined)[]): IToken {
  let last: IToken | undefined;
  for (const group of groups) {
    for (const token of group ?? [])
      if (last === undefined || token.startOffset > last.startOffset) last = token;
  }
  return last!;
}

/**
 * A comment as BuildKit records it: the line without its first byte (the `#` when the line starts
 * with it), trimmed. An indented comment therefore keeps its `#`, as in BuildKit.
 */
function commentText(image: string): string {
  const first = image.codePointAt(0)!;
  if (first < 0x80 || (first >= 0xdc80 && first <= 0xdcff)) return goTrimSpace(image.slice(1));
  const firstChar = String.fromCodePoint(first);
  const rest = [...new TextEncoder().encode(firstChar).slice(1)].map((byte) =>
    String.fromCharCode(0xdc00 + byte),
  );
  return goTrimSpace(rest.join("") + image.slice(firstChar.length));
}

class AstBuilder extends BaseVisitor {
  private readonly source: SourceText;
  private readonly warnings: ParseWarning[] = [];
  /**
   * BuildKit's parser accepts unknown instructions and rejects them only after the whole file has
   * parsed, so a later syntax error is reported first; the first such problem waits here.
   */
  private deferred: DockerfileError | undefined;

  constructor(source: SourceText) {
    super();
    this.source = source;
    this.validateVisitor();
  }

  private error(reason: string, position: Position): DockerfileError {
    return new DockerfileError(reason, { file: this.source.file, position, lines: this.source.lines });
  }

  dockerfile(ctx: DockerfileContext): DockerfileAst {
    const directives = this.directives(ctx.DirectiveLine ?? []);
    const comments = ctx.CommentLine ?? [];
    const instructions: InstructionNode[] = [];
    let nextComment = 0;
    for (const node of ctx.instruction ?? []) {
      const start = firstInstructionLine(
        (node.children as unknown as InstructionContext).logicalLine[0]!,
      ).startOffset;
      let above: string[] = [];
      for (; nextComment < comments.length && comments[nextComment]!.startOffset < start; nextComment++) {
        const text = commentText(comments[nextComment]!.image);
        // An empty `#` line separates a comment from the instruction below it; blank lines do not.
        if (text === "") above = [];
        else above.push(text);
      }
      instructions.push(this.visit(node, above) as InstructionNode);
    }
    if (instructions.length === 0) {
      throw this.error("file with no instructions", {
        line: Math.max(1, this.source.lines.length),
        column: 1,
      });
    }
    if (this.deferred) throw this.deferred;
    return {
      file: this.source.file,
      lines: this.source.lines,
      directives,
      escapeToken: this.source.escapeToken,
      instructions,
      warnings: this.warnings,
    };
  }

  private directives(tokens: readonly IToken[]): Directive[] {
    const seen = new Set<string>();
    return tokens.map((token) => {
      const { name, value, nameOffset, valueOffset } = directiveOf(token);
      const line = token.startLine!;
      if (seen.has(name)) {
        throw this.error(`only one ${name} parser directive can be used`, { line, column: nameOffset + 1 });
      }
      seen.add(name);
      if (name === "escape" && value !== "\\" && value !== "`") {
        throw this.error(`invalid escape token '${value}' does not match \` or \\`, {
          line,
          column: valueOffset + 1,
        });
      }
      const start = { line, column: leadingGoSpace(token.image) + 1 };
      return { name, value, range: { start, end: endOf(token) } };
    });
  }

  instruction(ctx: InstructionContext, comments: string[]): InstructionNode {
    const lineNode = ctx.logicalLine[0]!;
    const lines = instructionLines(lineNode);
    const logical = this.visit(lineNode) as LogicalLine;
    const parsed = this.parse(logical, lines[0]!);
    const heredocs = this.heredocs(parsed, logical, ctx.heredoc ?? []);
    const { CommentLine, BlankLine } = lineNode.children as LogicalLineContext;
    const heredocLines = (ctx.heredoc ?? []).flatMap((node) => {
      const { body = [], terminator = [] } = node.children as HeredocContext;
      return [...body, ...terminator];
    });
    const end = endOf(lastToken(lines, CommentLine, BlankLine, heredocLines));
    return this.instructionNode(parsed, logical, end, heredocs, comments);
  }

  logicalLine(ctx: LogicalLineContext): LogicalLine {
    const lines =
      ctx.ContinuedLine === undefined ? ctx.TextLine! : [...ctx.ContinuedLine, ...(ctx.TextLine ?? [])];
    const logical = this.source.joined.get(lines[0]!) ?? joinLogicalLine(lines);
    if (ctx.BlankLine !== undefined) {
      const blank = ctx.BlankLine[0]!;
      this.warnings.push({
        message: `Empty continuation line found in: ${logical.text}`,
        range: { start: startOf(blank), end: endOf(blank) },
      });
    }
    return logical;
  }

  heredoc(ctx: HeredocContext): { body: IToken[]; terminator: IToken | undefined } {
    return { body: ctx.body ?? [], terminator: ctx.terminator?.[0] };
  }

  /** Splits the logical line; an unknown keyword is remembered, not thrown (see `deferred`). */
  private parse(logical: LogicalLine, firstLine: IToken): ParsedInstruction {
    if (goTrimSpace(logical.text) === "") {
      this.deferred ??= this.error("a line continuation with no instruction after it", startOf(firstLine));
      return parseInstructionLine("", this.source.escapeToken);
    }
    let parsed: ParsedInstruction;
    try {
      parsed = parseInstructionLine(logical.text, this.source.escapeToken);
    } catch (err) {
      if (err instanceof InstructionSyntaxError)
        throw this.error(err.message, positionIn(logical, err.offset));
      throw err;
    }
    if (!isKnownInstruction(parsed.name)) {
      const suggestion = closestMatch(parsed.keyword, INSTRUCTION_NAMES);
      const hint = suggestion === undefined ? "" : ` (did you mean ${suggestion}?)`;
      this.deferred ??= this.error(
        `unknown instruction: ${parsed.keyword}${hint}`,
        positionIn(logical, parsed.keywordOffset),
      );
    }
    return parsed;
  }

  private heredocs(parsed: ParsedInstruction, logical: LogicalLine, bodies: CstNode[]): Heredoc[] {
    if (!canContainHeredoc(parsed) || !logical.text.includes("<<")) return [];
    let markers: HeredocMarker[];
    try {
      markers = heredocMarkers(logical.text);
    } catch (err) {
      if (err instanceof HeredocSyntaxError) {
        throw this.error(err.message, positionIn(logical, Math.max(0, logical.text.indexOf(err.word))));
      }
      throw err;
    }
    let searchFrom = 0;
    return markers.map((marker, index) => {
      const found = logical.text.indexOf(marker.word, searchFrom);
      const markerOffset = found === -1 ? parsed.keywordOffset : found;
      if (found !== -1) searchFrom = found + marker.word.length;
      const start = positionIn(logical, markerOffset);
      const body =
        bodies[index] === undefined
          ? undefined
          : (this.visit(bodies[index]) as ReturnType<AstBuilder["heredoc"]>);
      if (body?.terminator === undefined) throw this.error("unterminated heredoc", start);
      return {
        name: marker.name,
        content: heredocContent(
          body.body.map((token) => token.image),
          marker.chomp,
        ),
        expand: marker.expand,
        chomp: marker.chomp,
        fileDescriptor: marker.fileDescriptor,
        range: { start, end: endOf(body.terminator) },
      };
    });
  }

  /** The AST node for the instruction and, iteratively, for ONBUILD's nested triggers. */
  private instructionNode(
    parsed: ParsedInstruction,
    logical: LogicalLine,
    end: Position,
    heredocs: Heredoc[],
    comments: string[],
  ): InstructionNode {
    const nodes: InstructionNode[] = [];
    for (
      let current: ParsedInstruction | undefined = parsed;
      current !== undefined;
      current = current.inner
    ) {
      const range: SourceRange = { start: positionIn(logical, current.keywordOffset), end };
      nodes.push({
        keyword: current.keyword,
        name: current.name,
        flags: current.flags,
        args: current.args,
        json: current.json,
        original: current.original,
        // BuildKit attaches heredocs to the ONBUILD node; the trigger gets them too, as it uses them.
        heredocs,
        comments: nodes.length === 0 ? comments : [],
        range,
      });
    }
    for (let i = nodes.length - 1; i > 0; i--) nodes[i - 1]!.inner = nodes[i]!;
    return nodes[0]!;
  }
}

export function buildAst(cst: CstNode, source: SourceText): DockerfileAst {
  return new AstBuilder(source).visit(cst) as DockerfileAst;
}
