/**
 * Test support: Dockerfile text → the real parser's syntax nodes → typed instructions, with the
 * lint warnings collected, so that tests read as Dockerfiles.
 */
import type { DockerfileError } from "../../../frontend/errors.js";
import { type Instruction, parseInstruction } from "../../../frontend/instructions/index.js";
import { parseDockerfile, type SourceRange } from "../../../frontend/syntax/index.js";

export const FILE = "Dockerfile";

export interface Parsed {
  instructions: Instruction[];
  warnings: { message: string; range: SourceRange }[];
}

export function parse(text: string): Parsed {
  const ast = parseDockerfile(text, { file: FILE });
  const warnings: Parsed["warnings"] = [];
  const ctx = {
    file: FILE,
    lines: ast.lines,
    warn: (message: string, range: SourceRange) => warnings.push({ message, range }),
  };
  return { instructions: ast.instructions.map((node) => parseInstruction(node, ctx)), warnings };
}

/** The last instruction of the text: the one a test is about. */
export function parseLast(text: string): Instruction {
  return parse(text).instructions.at(-1)!;
}

/** The error parsing the text throws; fails the test when there is none. */
export function parseError(text: string): DockerfileError {
  try {
    parse(text);
  } catch (error) {
    return error as DockerfileError;
  }
  throw new Error(`expected an error from:\n${text}`);
}

/** The error's reason and `line:column`, the parts a user reads first. */
export function errorOf(text: string): { reason: string; at: string } {
  const error = parseError(text);
  return { reason: error.reason, at: `${error.line}:${error.column}` };
}
