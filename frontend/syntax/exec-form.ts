import { leadingGoSpace } from "./go-text.js";

/** Go's `encoding/json` refuses documents nested deeper than this. */
const MAX_JSON_DEPTH = 10_000;

export type ExecForm =
  /** A JSON array of strings: the exec form. */
  | { kind: "exec"; args: string[] }
  /** Valid JSON, but an element is not a string: BuildKit rejects the instruction. */
  | { kind: "not-strings"; offset: number }
  /** Anything else: the shell form. */
  | { kind: "shell" };

/** Unpaired surrogates (undecodable bytes or `\udXXX` escapes) become U+FFFD, as in Go's decoder. */
function wellFormed(s: string): string {
  return s.isWellFormed() ? s : s.toWellFormed();
}

/**
 * True when Go would fail to decode the already-valid JSON `value` into `[]any`: deeper than Go's
 * nesting limit, or a number too large for a float64 (Go reports that as an error; JavaScript
 * parses it as Infinity).
 */
function goRejects(value: unknown): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (typeof current === "number" && !Number.isFinite(current)) return true;
    if (current === null || typeof current !== "object") continue;
    if (depth > MAX_JSON_DEPTH) return true;
    for (const child of Array.isArray(current) ? current : Object.values(current))
      stack.push([child, depth + 1]);
  }
  return false;
}

/**
 * Decides between the exec form and the shell form as BuildKit does: the arguments are the exec form
 * exactly when they are a JSON array that Go's `json.Unmarshal` accepts; a JSON array with an element
 * that is not a string is an error, not the shell form.
 */
export function parseExecForm(rest: string): ExecForm {
  const offset = leadingGoSpace(rest);
  if (rest.charCodeAt(offset) !== 0x5b /* [ */) return { kind: "shell" };
  let value: unknown;
  try {
    value = JSON.parse(rest.slice(offset));
  } catch {
    return { kind: "shell" };
  }
  if (!Array.isArray(value) || goRejects(value)) return { kind: "shell" };
  const args: string[] = [];
  for (const element of value) {
    if (typeof element !== "string") return { kind: "not-strings", offset };
    args.push(wellFormed(element));
  }
  return { kind: "exec", args };
}
