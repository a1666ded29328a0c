import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import { dumpAst, parseDockerfile } from "../../frontend/syntax/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

const READ_FAILURES: Record<string, string> = {
  ENOENT: "no such file",
  EISDIR: "it is a directory",
  EACCES: "permission denied",
};

async function readStdin(stdin: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks);
}

/** `tbuild debug parse FILE`: the syntax tree in BuildKit's dumper format (`-` reads stdin). */
export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length !== 1) {
    throw new UsageError(
      "debug parse takes one FILE (- for standard input)\nRun 'tbuild debug parse --help' for details.",
    );
  }
  const file = args.positionals[0]!;
  let bytes: Buffer;
  try {
    bytes = file === "-" ? await readStdin(process.stdin) : await readFile(resolve(ctx.cwd, file));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "";
    const reason = READ_FAILURES[code] ?? (err as Error).message;
    throw new TbuildError("E_READ_FILE", `cannot read the Dockerfile ${file}: ${reason}`, { cause: err });
  }
  // Bytes, not text: BuildKit keeps bytes that are not UTF-8, and so does the parser.
  const ast = parseDockerfile(bytes, { file: file === "-" ? "<stdin>" : file });
  for (const warning of ast.warnings) {
    ctx.warn(`${ast.file}:${warning.range.start.line}: ${warning.message}`);
  }
  ctx.stdout.write(dumpAst(ast));
  return 0;
}
