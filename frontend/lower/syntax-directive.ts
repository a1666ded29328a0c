/**
 * The `# syntax=IMAGE` directive names the frontend image BuildKit should build the Dockerfile
 * with. tbuild has one frontend, built in, which implements the stable `docker/dockerfile:1`
 * syntax: a directive naming that syntax (or one of its releases) is what it does anyway; any
 * other frontend (`:1-labs`, `dockerfile-upstream`, a custom image) is not run, and the user is told.
 */
import { InvalidReferenceError, parseReference } from "../../oci/reference.js";
import type { Directive, Position } from "../syntax/index.js";

/** `1`, `1.N`, `1.N.M`: the stable channel and its releases. `latest` is the newest stable release. */
const STABLE_TAG = /^(?:1(?:\.\d+){0,2}|latest)$/;

/** Whether the frontend image the directive names is the stable dockerfile syntax tbuild implements. */
export function namesBuiltinSyntax(image: string): boolean {
  let ref: ReturnType<typeof parseReference>;
  try {
    ref = parseReference(image);
  } catch (err) {
    if (err instanceof InvalidReferenceError) return false;
    throw err;
  }
  // A digest alone pins a release nobody can tell from here.
  return ref.domain === "docker.io" && ref.path === "docker/dockerfile" && STABLE_TAG.test(ref.tag ?? "");
}

/** The warning for a `# syntax=` directive tbuild does not follow, or undefined when it builds as asked. */
export function syntaxDirectiveWarning(
  directives: readonly Directive[],
): { message: string; at: Position } | undefined {
  const syntax = directives.find((d) => d.name === "syntax");
  if (syntax === undefined || namesBuiltinSyntax(syntax.value)) return undefined;
  return {
    message: `# syntax=${syntax.value} asks for another frontend; tbuild builds with its built-in Dockerfile frontend (the stable dockerfile:1 syntax)`,
    at: syntax.range.start,
  };
}
