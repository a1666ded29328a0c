/**
 * The Dockerfile grammar over line tokens:
 *
 *   dockerfile   := DirectiveLine* (BlankLine | CommentLine | instruction)*
 *   instruction  := logicalLine heredoc*
 *   logicalLine  := TextLine
 *                 | ContinuedLine (ContinuedLine | CommentLine | BlankLine)* TextLine?
 *   heredoc      := Line* Line(terminator)?
 *
 * A continued instruction may end at the end of the file. The grammar is context-free but for one
 * thing: which lines after an instruction are heredoc bodies depends on the instruction's words
 * (`RUN <<EOF`), so the parser asks `heredocsOpenedBy` once per instruction and gates on the answer.
 */
import type { CstNode, IToken } from "chevrotain";
import { CstParser, EOF } from "./chevrotain.js";
import { isHeredocTerminator } from "./heredoc.js";
import {
  allTokenTypes,
  BlankLine,
  CommentLine,
  ContinuedLine,
  DirectiveLine,
  Line,
  TextLine,
} from "./tokens.js";

export interface HeredocDelimiter {
  name: string;
  chomp: boolean;
}

/** The first physical line of an instruction. */
export function firstInstructionLine(logicalLine: CstNode): IToken {
  const children = logicalLine.children as { ContinuedLine?: IToken[]; TextLine?: IToken[] };
  return (children.ContinuedLine ?? children.TextLine)![0]!;
}

/** The lines that make up an instruction's text: its continued lines, then its last line. */
export function instructionLines(logicalLine: CstNode): IToken[] {
  const children = logicalLine.children as { ContinuedLine?: IToken[]; TextLine?: IToken[] };
  return [...(children.ContinuedLine ?? []), ...(children.TextLine ?? [])];
}

export class DockerfileGrammar extends CstParser {
  /** Set by the caller before each parse. */
  heredocsOpenedBy: (lines: IToken[]) => HeredocDelimiter[] = () => [];
  /** The delimiters of the current instruction's heredocs not yet read. */
  private pending: HeredocDelimiter[] = [];

  /**
   * Chevrotain's checks of the grammar itself cost about 10 ms on every build: they run in the
   * tests (`validate`), where a grammar error would show, not on every parse.
   */
  constructor(options: { validate?: boolean } = {}) {
    super(allTokenTypes, { recoveryEnabled: false, maxLookahead: 1, skipValidations: !options.validate });
    this.performSelfAnalysis();
  }

  dockerfile = this.RULE("dockerfile", () => {
    this.MANY(() => this.CONSUME(DirectiveLine));
    this.MANY2(() =>
      this.OR([
        { ALT: () => this.CONSUME(BlankLine) },
        { ALT: () => this.CONSUME(CommentLine) },
        { ALT: () => this.SUBRULE(this.instruction) },
      ]),
    );
  });

  instruction = this.RULE("instruction", () => {
    const line = this.SUBRULE(this.logicalLine);
    this.ACTION(() => {
      this.pending = this.heredocsOpenedBy(instructionLines(line));
    });
    this.MANY({ GATE: () => this.pending.length > 0, DEF: () => this.SUBRULE(this.heredoc) });
    this.ACTION(() => {
      this.pending = [];
    });
  });

  logicalLine = this.RULE("logicalLine", () => {
    this.OR([
      { ALT: () => this.CONSUME(TextLine) },
      {
        ALT: () => {
          this.CONSUME(ContinuedLine);
          this.MANY(() =>
            this.OR2([
              { ALT: () => this.CONSUME2(ContinuedLine) },
              { ALT: () => this.CONSUME(CommentLine) },
              { ALT: () => this.CONSUME(BlankLine) },
            ]),
          );
          this.OPTION(() => this.CONSUME2(TextLine));
        },
      },
    ]);
  });

  heredoc = this.RULE("heredoc", () => {
    this.MANY({ GATE: () => !this.atTerminator(), DEF: () => this.CONSUME(Line, { LABEL: "body" }) });
    this.OPTION(() => this.CONSUME2(Line, { LABEL: "terminator" }));
    this.ACTION(() => {
      this.pending.shift();
    });
  });

  private atTerminator(): boolean {
    const next = this.LA(1);
    const delimiter = this.pending[0];
    return delimiter !== undefined && next.tokenType !== EOF && isHeredocTerminator(next.image, delimiter);
  }
}

let grammar: DockerfileGrammar | undefined;

/** The grammar is built once (Chevrotain analyses it at construction) and reused for every parse. */
export function dockerfileGrammar(): DockerfileGrammar {
  grammar ??= new DockerfileGrammar();
  return grammar;
}
