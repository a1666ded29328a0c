/**
 * Syntax node → typed instruction, with BuildKit's rules (`frontend/dockerfile/instructions`):
 * which flags each instruction takes, how many arguments, and the checks that need no variable
 * values. Everything that depends on ARG/ENV values (expansion, `--chmod` syntax, signal names,
 * mount fields) is left to the lowering, which sees the values.
 */
import type { Heredoc, InstructionNode } from "../syntax/ast.js";
import { DurationSyntaxError, parseGoDuration } from "./duration.js";
import { type FlagSpec, type Flags, parseFlags } from "./flags.js";
import { checkMountBeforeExpansion } from "./mount.js";
import { type InstructionContext, type Site, siteOf } from "./site.js";
import { withSuggestion } from "./suggest.js";
import type {
  ArgInstruction,
  CommandLine,
  CopyInstruction,
  FromInstruction,
  HealthcheckInstruction,
  Instruction,
  KeyValue,
  OnbuildInstruction,
  RunInstruction,
} from "./types.js";

export type { InstructionContext } from "./site.js";

const INSTRUCTIONS = [
  "ADD",
  "ARG",
  "CMD",
  "COPY",
  "ENTRYPOINT",
  "ENV",
  "EXPOSE",
  "FROM",
  "HEALTHCHECK",
  "LABEL",
  "MAINTAINER",
  "ONBUILD",
  "RUN",
  "SHELL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
];

const NO_FLAGS: FlagSpec = {};

export function parseInstruction(node: InstructionNode, ctx: InstructionContext): Instruction {
  const site = siteOf(node, ctx);
  const base = { node, range: node.range };
  const { args } = node;
  switch (node.name) {
    case "from":
      return parseFrom(site);
    case "run":
      return parseRun(site);
    case "cmd":
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "cmd", command: commandLine(node, args) };
    case "entrypoint":
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "entrypoint", command: commandLine(node, args) };
    case "shell":
      parseFlags(site, NO_FLAGS);
      if (args.length === 0) throw site.error("SHELL requires at least one argument");
      if (!node.json) {
        throw site.error('SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/bash", "-c"]');
      }
      return { ...base, kind: "shell", argv: [...args] };
    case "label":
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "label", labels: keyValues(site) };
    case "env":
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "env", vars: keyValues(site) };
    case "maintainer":
      exactlyOneArgument(site);
      parseFlags(site, NO_FLAGS);
      ctx.warn(
        "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label",
        node.range,
      );
      return { ...base, kind: "maintainer", maintainer: args[0]! };
    case "expose":
      atLeastOneArgument(site);
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "expose", ports: [...args] };
    case "copy":
    case "add":
      return parseCopyOrAdd(site);
    case "volume":
      atLeastOneArgument(site);
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "volume", volumes: volumes(site) };
    case "user":
      exactlyOneArgument(site);
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "user", user: args[0]! };
    case "workdir":
      exactlyOneArgument(site);
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "workdir", path: args[0]! };
    case "arg":
      return parseArg(site);
    case "onbuild":
      return parseOnbuild(site);
    case "stopsignal":
      exactlyOneArgument(site);
      // BuildKit never reads STOPSIGNAL's flags, so it ignores them; a flag there is a mistake.
      parseFlags(site, NO_FLAGS);
      return { ...base, kind: "stopsignal", signal: args[0]! };
    case "healthcheck":
      return parseHealthcheck(site);
    default:
      throw site.error(
        withSuggestion(`unknown instruction: ${node.keyword}`, node.keyword, INSTRUCTIONS, false),
      );
  }
}

const VALID_STAGE_NAME = /^[a-z][a-z0-9_.-]*$/;

function parseFrom(site: Site): FromInstruction {
  const { node, ctx } = site;
  const { args } = node;
  let stageName: string | undefined;
  if (args.length === 3 && args[1]!.toLowerCase() === "as") {
    const [, as, name] = args as [string, string, string];
    if (name !== name.toLowerCase()) {
      ctx.warn(`StageNameCasing: Stage name '${name}' should be lowercase`, node.range);
    }
    if (!casingMatches(node.keyword, as)) {
      ctx.warn(`FromAsCasing: '${as}' and '${node.keyword}' keywords' casing do not match`, node.range);
    }
    stageName = name.toLowerCase();
    if (!VALID_STAGE_NAME.test(stageName)) {
      throw site.error(
        `invalid name for build stage: ${JSON.stringify(name)}, name can't start with a number or contain symbols`,
        site.wordPosition(name),
      );
    }
  } else if (args.length !== 1) {
    throw site.error("FROM requires either one or three arguments (FROM image [AS name])");
  }
  const flags = parseFlags(site, { platform: "string" });
  return withoutUndefined({
    node,
    range: node.range,
    kind: "from",
    image: args[0]!,
    stageName,
    platform: flags.string("platform"),
  });
}

/** BuildKit's FromAsCasing lint: only an all-lower or all-upper FROM asks `as` to match it. */
function casingMatches(keyword: string, as: string): boolean {
  if (keyword === keyword.toLowerCase()) return as === as.toLowerCase();
  if (keyword === keyword.toUpperCase()) return as === as.toUpperCase();
  return true;
}

const NETWORK_MODES = ["default", "none", "host"] as const;
const SECURITY_MODES = ["sandbox", "insecure"] as const;

function parseRun(site: Site): RunInstruction {
  const { node, ctx } = site;
  const flags = parseFlags(site, { mount: "repeatable", network: "string", security: "string" });
  const mounts = flags.all("mount");
  const mountPositions = flags.positions("mount");
  for (const [index, mount] of mounts.entries()) {
    checkMountBeforeExpansion(mount, { file: ctx.file, lines: ctx.lines, position: mountPositions[index]! });
  }
  const network = oneOf(site, flags, "network", NETWORK_MODES, (value) => `invalid network mode ${value}`);
  const security = oneOf(
    site,
    flags,
    "security",
    SECURITY_MODES,
    (value) => `security ${value} is not valid`,
  );
  return withoutUndefined({
    node,
    range: node.range,
    kind: "run",
    command: commandLine(node, node.args),
    heredocs: [...node.heredocs],
    mounts,
    mountPositions,
    network,
    security,
  });
}

/** A flag that takes one of a few words; unlike most flag values these are never expanded. */
function oneOf<T extends string>(
  site: Site,
  flags: Flags,
  name: string,
  allowed: readonly T[],
  message: (quoted: string) => string,
): T | undefined {
  const positions = flags.positions(name);
  if (positions.length === 0) return undefined;
  const value = flags.all(name)[0]!;
  if (!(allowed as readonly string[]).includes(value)) {
    const reason = withSuggestion(message(JSON.stringify(value)), value, allowed);
    throw site.error(`${reason}; use one of ${allowed.join(", ")}`, positions[0]);
  }
  return value as T;
}

const COPY_FLAGS: FlagSpec = {
  from: "string",
  chown: "string",
  chmod: "string",
  link: "bool",
  parents: "bool",
  exclude: "repeatable",
};

const ADD_FLAGS: FlagSpec = {
  chown: "string",
  chmod: "string",
  link: "bool",
  exclude: "repeatable",
  "keep-git-dir": "bool",
  checksum: "string",
  unpack: "bool",
};

function parseCopyOrAdd(site: Site): CopyInstruction {
  const { node } = site;
  const kind = node.name === "add" ? "add" : "copy";
  if (node.args.length < 2) {
    throw site.error(
      `${site.instruction} requires at least two arguments, but only one was provided. Destination could not be determined`,
    );
  }
  const flags = parseFlags(site, kind === "add" ? ADD_FLAGS : COPY_FLAGS);
  const words = node.args.slice(0, -1);
  const dest = node.args[node.args.length - 1]!;
  if (!node.json && heredocName(dest) !== undefined) {
    throw site.error(`${site.instruction} cannot accept a heredoc as a destination`, site.wordPosition(dest));
  }
  const sources: string[] = [];
  const heredocs: Heredoc[] = [];
  for (const word of words) {
    const name = node.json ? undefined : heredocName(word);
    const heredoc =
      name === undefined ? undefined : node.heredocs.find((candidate) => candidate.name === name);
    if (heredoc) heredocs.push(heredoc);
    else sources.push(word);
  }
  const common = {
    node,
    range: node.range,
    kind,
    sources,
    dest,
    heredocs,
    chown: flags.string("chown"),
    chmod: flags.string("chmod"),
    link: flags.bool("link") ?? false,
    exclude: flags.all("exclude"),
  } as const;
  if (kind === "copy") {
    const from = flags.string("from");
    // As BuildKit: the stage a COPY reads must be known before any ARG is, to order the stages.
    if (from !== undefined && /\$./.test(from)) {
      throw site.error(
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
        flags.positions("from")[0],
      );
    }
    return withoutUndefined({
      ...common,
      from,
      parents: flags.bool("parents") ?? false,
    });
  }
  return withoutUndefined({
    ...common,
    parents: false,
    checksum: flags.string("checksum"),
    keepGitDir: flags.bool("keep-git-dir") ?? false,
    // Unset and `--unpack=false` differ: unset unpacks local archives but not downloaded ones.
    unpack: flags.bool("unpack"),
  });
}

/**
 * The delimiter a `<<EOF` word names, as BuildKit recognises heredoc words: an optional file
 * descriptor, `<<`, an optional `-`, then one word (quotes only mark it as not expanded).
 */
function heredocName(word: string): string | undefined {
  const match = /^\d*<<-?([^<]+)$/.exec(word);
  if (!match) return undefined;
  const delimiter = match[1]!;
  if (/\s/.test(delimiter)) return undefined;
  const name = delimiter.replace(/["'\\]/g, "");
  return name === "" ? undefined : name;
}

function parseArg(site: Site): ArgInstruction {
  const { node } = site;
  atLeastOneArgument(site);
  // BuildKit never reads ARG's flags, so it ignores them; a flag there is a mistake.
  parseFlags(site, NO_FLAGS);
  const args = node.args.map((word) => {
    const equals = word.indexOf("=");
    if (equals < 0) return { key: word };
    if (equals === 0) throw site.error("ARG names can not be blank", site.wordPosition(word));
    return { key: word.slice(0, equals), value: word.slice(equals + 1) };
  });
  return { node, range: node.range, kind: "arg", args };
}

function parseOnbuild(site: Site): OnbuildInstruction {
  const { node, ctx } = site;
  const inner = node.inner;
  if (inner === undefined) throw site.error("ONBUILD requires at least one argument");
  parseFlags(site, NO_FLAGS);
  const trigger = inner.name.toUpperCase();
  if (trigger === "ONBUILD") {
    throw site.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", inner.range.start);
  }
  if (trigger === "FROM" || trigger === "MAINTAINER") {
    throw site.error(`${trigger} isn't allowed as an ONBUILD trigger`, inner.range.start);
  }
  // The parser may hang the heredocs on either node; the trigger needs them to be complete.
  const heredocs = node.heredocs.length > 0 ? node.heredocs : inner.heredocs;
  // Lint warnings belong to the build that runs the trigger, which parses it again.
  const parsed = parseInstruction({ ...inner, heredocs }, { ...ctx, warn: () => {} });
  let expression = node.original.replace(/^\s*ONBUILD\s*/i, "");
  for (const heredoc of heredocs) expression += `\n${heredoc.content}${heredoc.name}`;
  return { node, range: node.range, kind: "onbuild", expression, inner: parsed };
}

const HEALTHCHECK_DURATIONS = {
  interval: "interval",
  timeout: "timeout",
  "start-period": "startPeriod",
  "start-interval": "startInterval",
} as const;

function parseHealthcheck(site: Site): HealthcheckInstruction {
  const { node, ctx } = site;
  const base = { node, range: node.range, kind: "healthcheck" } as const;
  if (node.args.length === 0) throw site.error("HEALTHCHECK requires at least one argument");
  const type = node.args[0]!.toUpperCase();
  const rest = node.args.slice(1);
  if (type === "NONE") {
    if (rest.length > 0) throw site.error("HEALTHCHECK NONE takes no arguments");
    // BuildKit does not read the flags of HEALTHCHECK NONE; say so rather than drop them silently.
    if (node.flags.length > 0) {
      ctx.warn(`HEALTHCHECK NONE ignores its flags: ${node.flags.join(" ")}`, node.range);
    }
    return { ...base, test: { type: "none" } };
  }
  const flags = parseFlags(site, {
    interval: "string",
    timeout: "string",
    "start-period": "string",
    "start-interval": "string",
    retries: "string",
  });
  if (type !== "CMD") {
    throw site.error(
      `Unknown type ${JSON.stringify(type)} in HEALTHCHECK (try CMD)`,
      site.wordPosition(node.args[0]!),
    );
  }
  if (rest.length === 0) throw site.error("Missing command after HEALTHCHECK CMD");
  const result: HealthcheckInstruction = { ...base, test: { type: "cmd", command: commandLine(node, rest) } };
  for (const [flag, field] of Object.entries(HEALTHCHECK_DURATIONS)) {
    const value = healthcheckDuration(site, flags, flag);
    // Zero means "the default", as an absent field does; leaving it out keeps the config as BuildKit writes it.
    if (value !== 0) result[field] = value;
  }
  const retries = healthcheckRetries(site, flags);
  if (retries !== 0) result.retries = retries;
  return result;
}

function healthcheckDuration(site: Site, flags: Flags, name: string): number {
  const text = flags.string(name);
  if (text === undefined) return 0;
  const position = flags.positions(name)[0];
  let nanoseconds: number;
  try {
    nanoseconds = parseGoDuration(text);
  } catch (error) {
    if (!(error instanceof DurationSyntaxError)) throw error;
    throw site.error(
      `--${name}: ${error.message} (write a number and a unit: ns, us, ms, s, m, h; e.g. 30s or 1m30s)`,
      position,
    );
  }
  if (nanoseconds !== 0 && nanoseconds < 1_000_000) {
    throw site.error(
      `--${name} cannot be less than 1ms (got ${JSON.stringify(text)}; 0 means the default)`,
      position,
    );
  }
  return nanoseconds;
}

function healthcheckRetries(site: Site, flags: Flags): number {
  const text = flags.string("retries");
  if (text === undefined) return 0;
  const position = flags.positions("retries")[0];
  const retries = /^[+-]?\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(retries) || retries > 2 ** 31 - 1 || retries < -(2 ** 31)) {
    throw site.error(`--retries must be a whole number, not ${JSON.stringify(text)}`, position);
  }
  if (retries < 0) throw site.error(`--retries cannot be negative (${retries})`, position);
  return retries;
}

/** Exec form keeps the JSON elements; shell form is the one command string. */
function commandLine(node: InstructionNode, args: readonly string[]): CommandLine {
  if (node.json) return { form: "exec", argv: [...args] };
  return { form: "shell", command: args.join(" ") };
}

/** ENV and LABEL arrive as key, value, separator triples; an empty separator is the legacy `KEY value` form. */
function keyValues(site: Site): KeyValue[] {
  const { node, ctx, instruction } = site;
  const { args } = node;
  if (args.length === 0) throw site.error(`${instruction} requires at least one argument`);
  if (args.length % 3 !== 0) throw site.error(`Bad input to ${instruction}, too many arguments`);
  const pairs: KeyValue[] = [];
  let legacy = false;
  for (let i = 0; i < args.length; i += 3) {
    const key = args[i]!;
    if (key === "") throw site.error(`${instruction} names can not be blank`);
    pairs.push({ key, value: args[i + 1]! });
    if (args[i + 2] === "") legacy = true;
  }
  if (legacy) {
    ctx.warn(
      `LegacyKeyValueFormat: "${instruction} key=value" should be used instead of legacy "${instruction} key value" format`,
      node.range,
    );
  }
  return pairs;
}

function volumes(site: Site): string[] {
  return site.node.args.map((word) => {
    const volume = word.trim();
    if (volume === "") throw site.error("VOLUME specified can not be an empty string");
    return volume;
  });
}

function atLeastOneArgument(site: Site): void {
  if (site.node.args.length === 0) throw site.error(`${site.instruction} requires at least one argument`);
}

function exactlyOneArgument(site: Site): void {
  if (site.node.args.length !== 1) throw site.error(`${site.instruction} requires exactly one argument`);
}

/** Optional fields are left out rather than set to undefined, so instructions compare and print cleanly. */
function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
