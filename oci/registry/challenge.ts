/**
 * `WWW-Authenticate` challenges (RFC 7235): `Bearer realm="…",service="…",scope="…"` or
 * `Basic realm="…"`, several per header possibly, parameters with quoted strings and escapes.
 */

export interface Challenge {
  /** Lower-cased: `bearer`, `basic`. */
  scheme: string;
  /** Parameter names lower-cased; values unquoted. */
  parameters: Record<string, string>;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/;

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const headers = Array.isArray(header) ? header : [header];
  const challenges: Challenge[] = [];
  for (const text of headers) challenges.push(...parseOne(text));
  return challenges;
}

function parseOne(text: string): Challenge[] {
  const challenges: Challenge[] = [];
  let rest = text;
  let current: Challenge | undefined;
  const skip = (pattern: RegExp) => {
    rest = rest.replace(pattern, "");
  };
  while (rest.length > 0) {
    skip(/^[\s,]+/);
    const token = TOKEN.exec(rest)?.[0];
    if (token === undefined) break;
    rest = rest.slice(token.length);
    const afterSpaces = rest.replace(/^\s*/, "");
    if (afterSpaces.startsWith("=") && current !== undefined) {
      // A parameter of the current challenge.
      rest = afterSpaces.slice(1).replace(/^\s*/, "");
      let value: string;
      if (rest.startsWith('"')) {
        let i = 1;
        value = "";
        while (i < rest.length && rest[i] !== '"') {
          if (rest[i] === "\\" && i + 1 < rest.length) i++;
          value += rest[i];
          i++;
        }
        rest = rest.slice(i + 1);
      } else {
        value = /^[^,\s]*/.exec(rest)![0];
        rest = rest.slice(value.length);
      }
      current.parameters[token.toLowerCase()] = value;
    } else {
      // A new scheme (a token68 after it, as in `Negotiate abc==`, is ignored: registries never send one).
      current = { scheme: token.toLowerCase(), parameters: {} };
      challenges.push(current);
    }
  }
  return challenges;
}
