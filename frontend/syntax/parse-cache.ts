/**
 * Parsed Dockerfiles, remembered under the store by what they were parsed from: a build whose
 * Dockerfile did not change loads no parser. Chevrotain, the grammar it builds and the parse itself
 * cost some 20 ms, a good part of a fully cached build. The tree is plain data (see ast.ts), kept
 * as JSON.
 *
 * What a tree depends on besides the text and the file name is the parser's own code: the bundle
 * (scripts/bundle.mjs) names it by a hash of the parser's modules and chevrotain's version. Run
 * from tsc's output, where nothing names it, tbuild parses every time.
 */

import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../../oci/atomic-file.js";
import type { DockerfileAst } from "./ast.js";

/** Replaced by the bundle with its parser's identity. */
declare const __TBUILD_PARSER_ID__: string | undefined;

const PARSER_ID = typeof __TBUILD_PARSER_ID__ === "string" ? __TBUILD_PARSER_ID__ : undefined;
/** More trees than this and the directory starts over: a project has a few Dockerfiles at a time. */
const MAX_TREES = 256;

export async function parseDockerfileCached(
  source: Uint8Array,
  options: { file: string; cacheDir: string },
): Promise<DockerfileAst> {
  const parse = async () => (await import("./index.js")).parseDockerfile(source, { file: options.file });
  if (PARSER_ID === undefined) return parse();
  const key = createHash("sha256").update(`${PARSER_ID}\0${options.file}\0`).update(source).digest("hex");
  const file = path.join(options.cacheDir, `${key}.json`);
  try {
    const remembered = JSON.parse(await readFile(file, "utf8")) as Partial<DockerfileAst>;
    const { instructions, warnings, lines, directives } = remembered;
    if ([instructions, warnings, lines, directives].every(Array.isArray)) {
      return remembered as DockerfileAst;
    }
  } catch {
    // Not parsed here yet (or unreadable): parsed now, and remembered.
  }
  const ast = await parse();
  await remember(options.cacheDir, file, JSON.stringify(ast));
  return ast;
}

/** Best effort: a store that cannot be written still builds. */
async function remember(dir: string, file: string, text: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    if ((await readdir(dir)).length >= MAX_TREES) {
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
    }
    await writeFileAtomic(file, text);
  } catch {
    // Not remembered: the next build parses again.
  }
}
