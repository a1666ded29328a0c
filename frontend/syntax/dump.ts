import type { DockerfileAst, InstructionNode } from "./ast.js";
import { goQuote } from "./go-text.js";

/** `name ["--flag" ...] "arg" ...`, with ONBUILD's trigger nested in parentheses (built iteratively). */
function dumpInstruction(instruction: InstructionNode): string {
  let opened = "";
  let closed = "";
  for (let node = instruction; ; node = node.inner) {
    let text = node.name;
    if (node.flags.length > 0) text += ` [${node.flags.map(goQuote).join(" ")}]`;
    if (node.inner === undefined) {
      for (const arg of node.args) text += ` ${goQuote(arg)}`;
      return `${opened}${text}${closed}`;
    }
    opened += `${text} (`;
    closed = `)${closed}`;
  }
}

/**
 * The AST in the format of BuildKit's parser dump (`Node.Dump`): one parenthesised line per
 * instruction, every value quoted as Go's `%q` quotes it, and a final newline.
 */
export function dumpAst(ast: DockerfileAst): string {
  return ast.instructions.map((instruction) => `(${dumpInstruction(instruction)})\n`).join("");
}
