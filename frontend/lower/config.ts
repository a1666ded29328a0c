/**
 * The instructions that only edit an image's config: ENV, LABEL, USER, VOLUME, EXPOSE, STOPSIGNAL,
 * SHELL, CMD, ENTRYPOINT, HEALTHCHECK, ONBUILD, MAINTAINER, and WORKDIR's part of it. One
 * implementation, with the semantics of BuildKit's dockerfile2llb dispatchers, serves a
 * Dockerfile's stages and `import --change`/`commit --change` (docker runs its own Dockerfile
 * dispatchers for those too), so an image imported with `-c "EXPOSE 80"` and one built from
 * `EXPOSE 80` have the same config.
 */
import path from "node:path/posix";
import type { ContainerConfig, ImageConfig } from "../../oci/spec.js";
import type { CommandLine, HealthcheckInstruction, Instruction } from "../instructions/index.js";

/** What the config instructions read and change: a stage's state has all of it. */
export interface ConfigScope {
  image: Pick<ImageConfig, "config" | "author">;
  /** What expansion reads (ENV and, in a stage, ARG values); ENV adds to it. */
  env: Map<string, string>;
  /** Whether CMD was set here: an ENTRYPOINT clears only an inherited Cmd. */
  cmdSet: boolean;
  workdir: string;
  user: string;
}

/** How the caller expands words and reports an error (a Dockerfile position, or a `--change`). */
export interface ConfigWords {
  /** One word, variables expanded. */
  word(text: string): string;
  /** A word that may expand into several (EXPOSE's). */
  words(text: string): string[];
  fail(reason: string): Error;
}

export type ConfigInstruction = Extract<
  Instruction,
  {
    kind:
      | "env"
      | "label"
      | "user"
      | "volume"
      | "expose"
      | "stopsignal"
      | "shell"
      | "cmd"
      | "entrypoint"
      | "healthcheck"
      | "onbuild"
      | "maintainer"
      | "workdir";
  }
>;

const CONFIG_KINDS = new Set<string>([
  "env",
  "label",
  "user",
  "volume",
  "expose",
  "stopsignal",
  "shell",
  "cmd",
  "entrypoint",
  "healthcheck",
  "onbuild",
  "maintainer",
  "workdir",
]);

export function isConfigInstruction(ins: Instruction): ins is ConfigInstruction {
  return CONFIG_KINDS.has(ins.kind);
}

/**
 * Applies one config instruction to `scope`; returns the `created_by` of its history entry
 * (always an empty layer), or undefined when it has none (ONBUILD). WORKDIR sets the config's
 * working directory only: the directory itself is the stage's to make.
 */
export function applyConfigInstruction(
  scope: ConfigScope,
  ins: ConfigInstruction,
  words: ConfigWords,
): string | undefined {
  const config = scope.image.config;
  switch (ins.kind) {
    case "env": {
      const pairs = ins.vars.map((kv) => ({ key: words.word(kv.key), value: words.word(kv.value) }));
      for (const { key, value } of pairs) {
        scope.env.set(key, value);
        setConfigEnv(config, key, value);
      }
      return `ENV ${pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`;
    }
    case "label": {
      const pairs = ins.labels.map((kv) => ({ key: words.word(kv.key), value: words.word(kv.value) }));
      config.Labels ??= {};
      for (const { key, value } of pairs) config.Labels[key] = value;
      return `LABEL ${pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`;
    }
    case "workdir": {
      const wd = workdirPath(scope.workdir, words.word(ins.path));
      scope.workdir = wd;
      config.WorkingDir = wd;
      return `WORKDIR ${wd}`;
    }
    case "user": {
      const user = words.word(ins.user);
      scope.user = user;
      config.User = user;
      return `USER ${user}`;
    }
    case "volume": {
      const volumes = ins.volumes.map((v) => words.word(v));
      config.Volumes ??= {};
      for (const v of volumes) {
        if (v === "") throw words.fail("VOLUME specified can not be an empty string");
        config.Volumes[v] = {};
      }
      return `VOLUME [${volumes.join(" ")}]`;
    }
    case "expose": {
      // As BuildKit: the words sorted as written (ASCII, so code-unit order is byte order), then
      // each expanded and parsed in turn; the history lists every port so found.
      const specs = [...ins.ports].sort().flatMap((p) => words.words(p));
      config.ExposedPorts ??= {};
      const added: string[] = [];
      for (const spec of specs) {
        for (const port of parsePortSpec(spec, words.fail)) {
          config.ExposedPorts[port] = {};
          added.push(port);
        }
      }
      return `EXPOSE [${added.join(" ")}]`;
    }
    case "stopsignal": {
      const signal = words.word(ins.signal);
      if (!isValidSignal(signal)) throw words.fail(`invalid signal: ${signal}`);
      config.StopSignal = signal;
      return `STOPSIGNAL ${signal}`;
    }
    case "shell":
      config.Shell = ins.argv;
      return `SHELL [${ins.argv.join(" ")}]`;
    case "cmd": {
      const args = commandArgs(config, ins.command);
      config.Cmd = args;
      config.ArgsEscaped = true;
      scope.cmdSet = true;
      return `CMD ${goQuoteList(args)}`;
    }
    case "entrypoint": {
      const args = commandArgs(config, ins.command);
      config.Entrypoint = args;
      if (!scope.cmdSet) config.Cmd = null;
      return `ENTRYPOINT ${goQuoteList(args)}`;
    }
    case "healthcheck":
      config.Healthcheck = healthcheck(ins);
      return `HEALTHCHECK ${JSON.stringify(config.Healthcheck)}`;
    case "onbuild":
      config.OnBuild = [...(config.OnBuild ?? []), ins.expression];
      return undefined;
    case "maintainer":
      scope.image.author = ins.maintainer;
      return `MAINTAINER ${ins.maintainer}`;
  }
}

/** The shell a shell-form command runs under: SHELL's, else `/bin/sh -c`. */
export function withShell(config: ContainerConfig, command: string): string[] {
  const shell = config.Shell?.length ? config.Shell : ["/bin/sh", "-c"];
  return [...shell, command];
}

function commandArgs(config: ContainerConfig, command: CommandLine): string[] {
  return command.form === "exec" ? command.argv : withShell(config, command.command);
}

/** WORKDIR `given` from `current`: absolute, normalized, no trailing slash. */
export function workdirPath(current: string, given: string): string {
  const joined =
    given === "" ? current : path.isAbsolute(given) ? path.normalize(given) : path.join(current, given);
  return joined.length > 1 ? joined.replace(/\/+$/, "") : joined;
}

/** Go's `%q` of a string slice, as BuildKit writes CMD and ENTRYPOINT into the history. */
function goQuoteList(list: string[]): string {
  return `[${list.map((s) => JSON.stringify(s)).join(" ")}]`;
}

/**
 * Where each name first appears in a config's Env list, by list: ENV replaces a variable in
 * place, and a Dockerfile of 100,000 ENV lines must not scan the list for each of them.
 */
const envListIndex = new WeakMap<string[], Map<string, number>>();

function setConfigEnv(config: ContainerConfig, key: string, value: string) {
  config.Env ??= [];
  const list = config.Env;
  let index = envListIndex.get(list);
  if (!index) {
    index = new Map();
    for (const [i, entry] of list.entries()) {
      const eq = entry.indexOf("=");
      const name = eq < 0 ? entry : entry.slice(0, eq);
      if (!index.has(name)) index.set(name, i);
    }
    envListIndex.set(list, index);
  }
  const i = index.get(key);
  if (i !== undefined) {
    list[i] = `${key}=${value}`;
  } else {
    index.set(key, list.length);
    list.push(`${key}=${value}`);
  }
}

function healthcheck(ins: HealthcheckInstruction): NonNullable<ContainerConfig["Healthcheck"]> {
  const test =
    ins.test.type === "none"
      ? ["NONE"]
      : ins.test.command.form === "exec"
        ? ["CMD", ...ins.test.command.argv]
        : ["CMD-SHELL", ins.test.command.command];
  return {
    Test: test,
    ...(ins.interval ? { Interval: ins.interval } : {}),
    ...(ins.timeout ? { Timeout: ins.timeout } : {}),
    ...(ins.startPeriod ? { StartPeriod: ins.startPeriod } : {}),
    ...(ins.startInterval ? { StartInterval: ins.startInterval } : {}),
    ...(ins.retries ? { Retries: ins.retries } : {}),
  };
}

/** `80`, `80/udp`, `8000-8010/tcp` → `80/tcp` keys, as Docker's nat.ParsePortSpecs reads EXPOSE. */
function parsePortSpec(spec: string, fail: (reason: string) => Error): string[] {
  const match = /^(\d+)(?:-(\d+))?(?:\/([A-Za-z]+))?$/.exec(spec);
  if (!match)
    throw fail(`invalid port "${spec}": expected PORT[-PORT][/PROTOCOL], e.g. 80, 8000-8010/tcp, 53/udp`);
  const proto = (match[3] ?? "tcp").toLowerCase();
  if (!["tcp", "udp", "sctp"].includes(proto))
    throw fail(`invalid protocol "${match[3]}" in port "${spec}": use tcp, udp or sctp`);
  const first = Number(match[1]);
  const last = match[2] === undefined ? first : Number(match[2]);
  if (first > 65535 || last > 65535) throw fail(`invalid port "${spec}": ports go up to 65535`);
  if (last < first) throw fail(`invalid port range "${spec}": the end is before the start`);
  const ports: string[] = [];
  for (let p = first; p <= last; p++) ports.push(`${p}/${proto}`);
  return ports;
}

const SIGNALS = new Set(
  "ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ".split(
    " ",
  ),
);

function isValidSignal(signal: string): boolean {
  if (/^\d+$/.test(signal)) return Number(signal) > 0 && Number(signal) <= 64;
  const name = signal.toUpperCase().replace(/^SIG/, "");
  if (SIGNALS.has(name)) return true;
  const rt = /^RTM(IN|AX)([+-]\d+)?$/.exec(name);
  return rt !== null;
}
