import type { IToken } from "chevrotain";
import type { Position } from "./ast.js";
import { leadingGoSpace } from "./go-text.js";
import { isContinuedLine, lineContent } from "./tokens.js";

/** Where a stretch of the logical line came from. */
interface Piece {
  offset: number;
  length: number;
  line: number;
  column: number;
}

/** An instruction's text with its continuations removed (BuildKit's `Original`), and a map back to the source. */
export interface LogicalLine {
  text: string;
  pieces: Piece[];
}

/**
 * Joins the instruction's physical lines (comment and blank lines already left out) as BuildKit
 * does: the first line loses its leading blanks, each continued line loses its escape token and
 * the blanks after it, and everything else is kept as written.
 */
export function joinLogicalLine(lines: readonly IToken[]): LogicalLine {
  const parts: string[] = [];
  const pieces: Piece[] = [];
  let offset = 0;
  lines.forEach((token, index) => {
    let content = lineContent(token.image);
    let column = 1;
    if (index === 0) {
      const blanks = leadingGoSpace(content);
      content = content.slice(blanks);
      column += blanks;
    }
    if (isContinuedLine(token)) {
      let end = content.length;
      while (end > 0 && (content.charCodeAt(end - 1) === 0x20 || content.charCodeAt(end - 1) === 0x09)) end--;
      content = content.slice(0, end - 1);
    }
    parts.push(content);
    pieces.push({ offset, length: content.length, line: token.startLine!, column });
    offset += content.length;
  });
  return { text: parts.join(""), pieces };
}

/** The source position of a code-unit offset in the logical line. */
export function positionIn(logical: LogicalLine, offset: number): Position {
  let piece = logical.pieces[0]!;
  for (const candidate of logical.pieces) {
    if (candidate.offset > offset) break;
    if (candidate.length > 0 || candidate.offset === offset) piece = candidate;
    if (offset < candidate.offset + candidate.length) break;
  }
  return { line: piece.line, column: piece.column + Math.max(0, offset - piece.offset) };
}
