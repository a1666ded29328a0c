/**
 * Where an instruction sits in its Dockerfile: errors positioned on it, and the columns of words
 * inside it. The syntax tree keeps one range per instruction, so a flag's or a word's column is
 * found again in the source lines the range covers.
 */
import { DockerfileError } from "../errors.js";
import type { InstructionNode, Position, SourceRange } from "../syntax/ast.js";

export interface InstructionContext {
  /** The name errors use, e.g. `Dockerfile`. */
  file: string;
  /** The Dockerfile's lines, for the excerpt under an error and for finding columns. */
  lines: readonly string[];
  /** Lint warnings (deprecated or legacy syntax) that do not stop the build. */
  warn(message: string, range: SourceRange): void;
}

export interface Site {
  node: InstructionNode;
  ctx: InstructionContext;
  /** The instruction's name as BuildKit's messages spell it: `COPY`. */
  instruction: string;
  error(reason: string, position?: Position): DockerfileError;
  /** The position of `node.flags[index]` in the source, else the instruction's. */
  flagPosition(index: number): Position;
  /** The position of the last occurrence of `word` in the instruction, else the instruction's. */
  wordPosition(word: string): Position;
}

export function siteOf(node: InstructionNode, ctx: InstructionContext): Site {
  const start = node.range.start;
  return {
    node,
    ctx,
    instruction: node.name.toUpperCase(),
    error: (reason, position = start) =>
      new DockerfileError(reason, { file: ctx.file, position, lines: ctx.lines }),
    flagPosition(index) {
      const name = flagName(node.flags[index] ?? "");
      if (name === "") return start;
      const occurrence = node.flags.slice(0, index).filter((flag) => flagName(flag) === name).length;
      const pattern = new RegExp(`(?<=^|[\\s"'])--${escapeRegExp(name)}(?=[=\\s"']|$)`, "g");
      return findMatches(node, ctx.lines, pattern)[occurrence] ?? start;
    },
    wordPosition(word) {
      if (word === "") return start;
      const found = findMatches(node, ctx.lines, new RegExp(escapeRegExp(word), "g"));
      return found[found.length - 1] ?? start;
    },
  };
}

/** `--from=x` → `from`; `--link` → `link`. */
export function flagName(flag: string): string {
  const equals = flag.indexOf("=");
  return (equals < 0 ? flag : flag.slice(0, equals)).replace(/^--/, "");
}

function findMatches(node: InstructionNode, lines: readonly string[], pattern: RegExp): Position[] {
  const found: Position[] = [];
  const { start, end } = node.range;
  for (let line = start.line; line <= end.line; line++) {
    const text = lines[line - 1];
    if (text === undefined) break;
    const from = line === start.line ? start.column - 1 : 0;
    for (const match of text.slice(from).matchAll(pattern)) {
      found.push({ line, column: from + match.index + 1 });
    }
  }
  return found;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
