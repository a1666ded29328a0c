import { excerptAround } from "../errors/excerpt.js";
import { TbuildError } from "../errors/index.js";
import type { Position } from "./syntax/ast.js";

/**
 * A problem with a Dockerfile: names file:line:column, shows the line and a caret under the
 * column. One type for syntax, semantic and lowering errors alike.
 */
export class DockerfileError extends TbuildError {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** The message without the location and excerpt. */
  readonly reason: string;

  constructor(reason: string, where: { file: string; position: Position; lines?: readonly string[] }) {
    super("E_DOCKERFILE", formatDockerfileError(reason, where));
    this.file = where.file;
    this.line = where.position.line;
    this.column = where.position.column;
    this.reason = reason;
  }
}

function formatDockerfileError(
  reason: string,
  where: { file: string; position: Position; lines?: readonly string[] },
): string {
  const { line, column } = where.position;
  const head = `${where.file}:${line}:${column}: ${reason}`;
  const source = where.lines?.[line - 1];
  if (source === undefined) return head;
  const gutter = String(line).length;
  // A long line (a 10 MB one is the parser's to refuse) shows the part around the column.
  const shown = excerptAround(source.replace(/\t/g, " "), column);
  const caret = `${" ".repeat(Math.max(0, shown.column - 1))}^`;
  return `${head}\n ${String(line)} | ${shown.text}\n ${" ".repeat(gutter)} | ${caret}`;
}
