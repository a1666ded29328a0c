/**
 * `.dockerignore`: which ignore file a build uses and how its lines become patterns, with the
 * semantics of Docker's own reader (moby/patternmatcher's `ignorefile`, as BuildKit's dockerui
 * reads it). Which paths the patterns leave out is the worker's: worker/ops/pattern-matcher.ts.
 */
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { cleanPath } from "../oci/clean-path.js";
import { DockerignoreError, trimGoSpace } from "../worker/ops/pattern-matcher.js";

export { DockerignoreError };

/**
 * The patterns of the ignore file a build uses: `<Dockerfile>.dockerignore` beside the Dockerfile
 * when that file exists (`build/Dockerfile.dev` → `build/Dockerfile.dev.dockerignore`), else
 * `.dockerignore` at the root of the context, else none. A relative `dockerfilePath` is taken
 * from the current directory, as `-f` is. An existing but empty Dockerfile-specific file still
 * wins: it means "ignore nothing". A named context (`--build-context NAME=DIR`) has no Dockerfile:
 * its own `.dockerignore` only, as in BuildKit.
 */
export async function readDockerignore(contextDir: string, dockerfilePath?: string): Promise<string[]> {
  const candidates = [
    ...(dockerfilePath !== undefined ? [`${resolve(dockerfilePath)}.dockerignore`] : []),
    join(resolve(contextDir), ".dockerignore"),
  ];
  for (const file of candidates) {
    const text = await readIgnoreFile(file);
    if (text !== undefined) return parseDockerignore(text);
  }
  return [];
}

async function readIgnoreFile(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new DockerignoreError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The lines of an ignore file as patterns, as Docker reads them: a UTF-8 byte-order mark is
 * dropped; a line whose first character is `#` is a comment (an indented `#` is not); blank lines
 * are skipped; each pattern is trimmed, cleaned like a path (`a/./b/../c` → `a/c`, trailing `/`
 * removed) and loses a leading `/`; a leading `!` (an exception) is kept in front.
 */
export function parseDockerignore(text: string): string[] {
  const patterns: string[] = [];
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    let line = lines[index]!;
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (index === 0 && line.startsWith("\uFEFF")) line = line.slice(1);
    if (line.startsWith("#")) continue;
    let pattern = trimGoSpace(line);
    if (pattern === "") continue;
    const exception = pattern.startsWith("!");
    if (exception) pattern = trimGoSpace(pattern.slice(1));
    if (pattern.length > 0) {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern.startsWith("/")) pattern = pattern.slice(1);
    }
    patterns.push(exception ? `!${pattern}` : pattern);
  }
  return patterns;
}
