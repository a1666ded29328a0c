import { DockerfileError } from "../../../frontend/errors.js";
import { type DockerfileAst, dumpAst, parseDockerfile } from "../../../frontend/syntax/index.js";

export function parse(source: string | Uint8Array): DockerfileAst {
  return parseDockerfile(source, { file: "Dockerfile" });
}

/** BuildKit's dump of the file, one line per instruction. */
export function dump(source: string | Uint8Array): string[] {
  return dumpAst(parse(source)).split("\n").slice(0, -1);
}

/** The DockerfileError the file is rejected with, as `line:column reason`. */
export function rejection(source: string | Uint8Array): string {
  try {
    parse(source);
  } catch (err) {
    if (!(err instanceof DockerfileError)) throw err;
    return `${err.line}:${err.column} ${err.reason}`;
  }
  throw new Error("the file was accepted");
}

export function errorOf(source: string | Uint8Array): DockerfileError {
  try {
    parse(source);
  } catch (err) {
    if (err instanceof DockerfileError) return err;
    throw err;
  }
  throw new Error("the file was accepted");
}
