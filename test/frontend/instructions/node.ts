/**
 * Test support: Dockerfile text → syntax nodes → typed instructions, collecting lint warnings.
 *
 * `nodesOf` is a stand-in for the real parser (`frontend/syntax`), limited to what these tests
 * write: one instruction per line (no continuations), heredoc bodies, ONBUILD, and arguments split
 * as BuildKit's parser splits them per instruction (words, JSON, key/value triples).
 */
import type { DockerfileError } from "../../../frontend/errors.js";
import { type Instruction, parseInstruction } from "../../../frontend/instructions/index.js";
import type { Heredoc, InstructionNode, SourceRange } from "../../../frontend/syntax/ast.js";

export const FILE = "Dockerfile";

export interface Parsed {
  instructions: Instruction[];
  warnings: { message: string; range: SourceRange }[];
}

export function parse(text: string): Parsed {
  const lines = text.split("\n");
  const warnings: Parsed["warnings"] = [];
  const ctx = {
    file: FILE,
    lines,
    warn: (message: string, range: SourceRange) => warnings.push({ message, range }),
  };
  return { instructions: nodesOf(lines).map((node) => parseInstruction(node, ctx)), warnings };
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

export function nodesOf(lines: readonly string[]): InstructionNode[] {
  const nodes: InstructionNode[] = [];
  for (let index = 0; index < lines.length; index++) {
    const text = lines[index]!;
    if (text.trim() === "" || text.trimStart().startsWith("#")) continue;
    const column = text.length - text.trimStart().length + 1;
    const node = nodeAt(text.trim(), index + 1, column);
    index = readHeredocs(node, lines, index);
    nodes.push(node);
  }
  return nodes;
}

function nodeAt(text: string, line: number, column: number): InstructionNode {
  const keyword = /^\S+/.exec(text)![0];
  let rest = text.slice(keyword.length).trimStart();
  const flags: string[] = [];
  for (let flag = /^--\S*/.exec(rest); flag; flag = /^--\S*/.exec(rest)) {
    flags.push(flag[0]);
    rest = rest.slice(flag[0].length).trimStart();
  }
  const range = { start: { line, column }, end: { line, column: column + text.length } };
  const node: InstructionNode = {
    keyword,
    name: keyword.toLowerCase(),
    flags,
    args: [],
    json: false,
    original: text,
    heredocs: [],
    comments: [],
    range,
  };
  if (node.name === "onbuild" && rest !== "") {
    node.inner = nodeAt(rest, line, column + text.indexOf(rest));
    return node;
  }
  Object.assign(node, splitArgs(node.name, rest));
  return node;
}

function splitArgs(name: string, rest: string): { args: string[]; json: boolean } {
  const json = jsonArray(rest);
  switch (name) {
    case "copy":
    case "add":
    case "volume":
    case "run":
    case "cmd":
    case "entrypoint":
    case "shell":
      if (json) return { args: json, json: true };
      break;
    case "healthcheck": {
      const type = /^\S*/.exec(rest)![0];
      const command = rest.slice(type.length).trimStart();
      const commandJson = jsonArray(command);
      if (commandJson) return { args: [type, ...commandJson], json: true };
      return { args: [type, command].filter((word) => word !== ""), json: false };
    }
    case "env":
    case "label": {
      const words = shellWords(rest);
      if (words.length > 0 && !words[0]!.includes("=")) {
        return {
          args: [words[0]!, rest.slice(rest.indexOf(words[0]!) + words[0]!.length).trim(), ""],
          json: false,
        };
      }
      return {
        args: words.flatMap((word) => [word.split("=")[0]!, word.slice(word.indexOf("=") + 1), "="]),
        json: false,
      };
    }
  }
  if (["copy", "add", "volume", "expose", "from", "arg"].includes(name))
    return { args: shellWords(rest), json: false };
  return { args: rest === "" ? [] : [rest], json: false };
}

function jsonArray(text: string): string[] | undefined {
  if (!text.startsWith("[")) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return Array.isArray(value) && value.every((item) => typeof item === "string") ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Whitespace-separated words, keeping quoted spaces inside a word (and the quotes, as BuildKit does). */
function shellWords(text: string): string[] {
  return text.match(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g) ?? [];
}

function readHeredocs(node: InstructionNode, lines: readonly string[], index: number): number {
  const words = node.inner ? node.inner.args.join(" ") : node.args.join(" ");
  let next = index;
  for (const match of words.matchAll(/<<(-?)(["']?)([A-Za-z_]\w*)\2/g)) {
    const chomp = match[1] === "-";
    const name = match[3]!;
    const start = next + 1;
    let content = "";
    for (next = start; next < lines.length; next++) {
      const body = chomp ? lines[next]!.replace(/^\t+/, "") : lines[next]!;
      if (body === name) break;
      content += `${body}\n`;
    }
    const heredoc: Heredoc = {
      name,
      content,
      expand: match[2] === "",
      chomp,
      range: { start: { line: start + 1, column: 1 }, end: { line: next + 1, column: name.length + 1 } },
    };
    node.heredocs.push(heredoc);
    node.range.end = heredoc.range.end;
  }
  return next;
}

/** The error's reason and `line:column`, the parts a user reads first. */
export function errorOf(text: string): { reason: string; at: string } {
  const error = parseError(text);
  return { reason: error.reason, at: `${error.line}:${error.column}` };
}
