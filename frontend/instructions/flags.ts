/**
 * The `--flag[=value]` words of one instruction, checked against the flags it declares, as
 * BuildKit's `BFlags` does: a boolean takes no value or `true`/`false` (any case); a string needs
 * `=value`; only a repeatable flag may be given twice; anything undeclared is an error.
 */
import type { Position } from "../syntax/ast.js";
import { flagName, type Site } from "./site.js";
import { closestOption } from "./suggest.js";

export type FlagKind = "bool" | "string" | "repeatable";

export type FlagSpec = Readonly<Record<string, FlagKind>>;

export interface Flags {
  /** A boolean flag's value; undefined when it was not given. */
  bool(name: string): boolean | undefined;
  /** A string flag's value; undefined when it was not given or given empty (`--from=`), as BuildKit reads them. */
  string(name: string): string | undefined;
  /** Every value of a repeatable flag, in order. */
  all(name: string): string[];
  /** Where each use of a flag is in the source. */
  positions(name: string): Position[];
}

export function parseFlags(site: Site, spec: FlagSpec): Flags {
  const values = new Map<string, string[]>();
  const positions = new Map<string, Position[]>();
  const { flags } = site.node;
  for (const [index, word] of flags.entries()) {
    // `--` ends the flags, as in POSIX utilities; BuildKit's parser normally drops it already.
    if (word === "--") break;
    const position = site.flagPosition(index);
    if (!word.startsWith("--")) throw site.error(`arg should start with -- : ${word}`, position);
    const name = flagName(word);
    const equals = word.indexOf("=");
    const value = equals < 0 ? undefined : word.slice(equals + 1);
    const kind = spec[name];
    if (kind === undefined) throw site.error(unknownFlagMessage(site.instruction, name, spec), position);
    const seen = values.get(name) ?? [];
    if (seen.length > 0 && kind !== "repeatable") {
      throw site.error(`duplicate flag specified: --${name} (${site.instruction} takes it once)`, position);
    }
    seen.push(flagValue(site, name, kind, value, position));
    values.set(name, seen);
    positions.set(name, [...(positions.get(name) ?? []), position]);
  }
  return {
    bool: (name) => {
      const value = values.get(name)?.[0];
      return value === undefined ? undefined : value === "true";
    },
    string: (name) => {
      const value = values.get(name)?.[0];
      return value === "" ? undefined : value;
    },
    all: (name) => values.get(name) ?? [],
    positions: (name) => positions.get(name) ?? [],
  };
}

function flagValue(
  site: Site,
  name: string,
  kind: FlagKind,
  value: string | undefined,
  position: Position,
): string {
  if (kind === "bool") {
    if (value === "") throw site.error(`missing a value on flag: --${name}`, position);
    const lower = (value ?? "true").toLowerCase();
    if (lower !== "true" && lower !== "false") {
      throw site.error(`expecting boolean value for flag --${name}, not: ${value}`, position);
    }
    return lower;
  }
  if (value === undefined)
    throw site.error(`missing a value on flag: --${name} (write --${name}=…)`, position);
  return value;
}

function unknownFlagMessage(instruction: string, name: string, spec: FlagSpec): string {
  const known = Object.keys(spec);
  const head = `unknown flag: --${name} for ${instruction}`;
  if (known.length === 0) return `${head}, which takes no flags`;
  const match = closestOption(name, known);
  if (match !== undefined) return `${head} (did you mean --${match}?)`;
  return `${head} (it takes ${known.map((flag) => `--${flag}`).join(", ")})`;
}
