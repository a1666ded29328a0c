/**
 * Dispatching one stage: each instruction either adds a vertex (RUN, COPY, ADD, WORKDIR) or edits
 * the stage's image config, with the semantics of BuildKit's dockerfile2llb.
 */
import path from "node:path/posix";
import { cleanAbsolutePath } from "../../oci/clean-path.js";
import type { Platform } from "../../oci/platform.js";
import type { ImageConfig } from "../../oci/spec.js";
import type { Chown, ExecMount, ExecOp, FileAction } from "../../solver/graph.js";
import type { DockerfileError } from "../errors.js";
import type {
  CommandLine,
  CopyInstruction,
  HealthcheckInstruction,
  Instruction,
  MountSpec,
  RunInstruction,
} from "../instructions/index.js";
import type { ResolvedImage } from "../resolver.js";
import type { EnvLookup, ExpandResult, ShellLex } from "../shell/index.js";
import type { Heredoc, InstructionNode, Position } from "../syntax/index.js";
import type { StageDef } from "./index.js";
import { type PendingVertex, pending } from "./pending.js";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT = "buildkit.dockerfile.v0";

export interface StageState {
  def: StageDef;
  /** The stage's filesystem so far; absent while it is empty. */
  root?: PendingVertex;
  image: ImageConfig;
  baseImage?: ResolvedImage;
  /** What RUN sees and expansion reads: ENV and ARG values, in the order they were set. */
  env: Map<string, string>;
  /** ARGs declared in this stage (and its base stages), for RUN's history line. */
  declaredArgs: { key: string; value?: string }[];
  workdir: string;
  user: string;
  platform: Platform;
  cmdSet: boolean;
  step: number;
  steps: number;
}

export interface DispatchContext {
  file: string;
  lines: readonly string[];
  lexer: ShellLex;
  /** Expands heredoc file bodies: quotes left as they are. */
  heredocLexer: ShellLex;
  /** Expands a step's title: quotes and unset variables left as they are. */
  titleLexer: ShellLex;
  metaEnv: Map<string, string>;
  buildArgs: Map<string, string>;
  usedBuildArgs: Set<string>;
  targetPlatform: Platform;
  /** `--build-arg BUILDKIT_SANDBOX_HOSTNAME=NAME`, BuildKit's option: every RUN's hostname. */
  hostname?: string;
  /** The build's network: what a RUN without its own `--network` (or with `default`) gets. */
  network: ExecOp["network"];
  singleStage: boolean;
  context: PendingVertex;
  contextPaths: Set<string>;
  /** Expands with `lexer` (`lexer` above by default); an error names the place in the Dockerfile. */
  expand(word: string, env: EnvLookup, at: Position, lexer?: ShellLex): ExpandResult;
  errorAt(reason: string, at: Position): DockerfileError;
  warn(message: string, at?: Position): void;
  warnUndeclared(names: Set<string>, at: Position): void;
  parseMount(value: string, ctx: { file: string; lines: readonly string[]; position: Position }): MountSpec;
  parseInstruction(node: InstructionNode): Instruction;
  /** The dispatched state of a stage named or numbered `ref`, if it is one (dispatched now if it was not yet). */
  stageOf(ref: string, at: Position): Promise<StageState | undefined>;
  image(ref: string, platform: Platform, at: Position): Promise<ResolvedImage>;
  /** The `local` vertex of a `--build-context NAME=DIR` called `ref`, if it is one. */
  namedLocal(ref: string): PendingVertex | undefined;
  /** Whether `ref` is the empty image: `scratch`, or a `--build-context REF=docker-image://scratch`. */
  isScratch(ref: string): boolean;
}

export async function dispatchStage(
  def: StageDef,
  base: StageState | undefined,
  ctx: DispatchContext,
): Promise<StageState> {
  const at = def.from.range.start;
  const namedLocal = base ? undefined : ctx.namedLocal(def.baseName);
  const steps =
    (base || namedLocal || ctx.isScratch(def.baseName) ? 0 : 1) +
    def.instructions.filter((i) => ["add", "copy", "run", "workdir"].includes(i.kind)).length;
  let st: StageState;
  if (base) {
    st = {
      ...base,
      def,
      image: structuredClone(base.image),
      env: new Map(base.env),
      declaredArgs: [...base.declaredArgs],
      cmdSet: false,
      step: 0,
      steps,
    };
  } else if (namedLocal || ctx.isScratch(def.baseName)) {
    // `FROM NAME` of a directory context: its files are the stage's root, with scratch's config.
    const platform = def.platform ?? ctx.targetPlatform;
    st = {
      def,
      ...(namedLocal ? { root: namedLocal } : {}),
      image: emptyImage(platform),
      env: new Map([["PATH", DEFAULT_PATH]]),
      declaredArgs: [],
      workdir: "/",
      user: "",
      platform,
      cmdSet: false,
      step: 0,
      steps,
    };
  } else {
    const resolved = await ctx.image(def.baseName, def.platform ?? ctx.targetPlatform, at);
    const image = structuredClone(resolved.config);
    image.config ??= {};
    // As BuildKit does: an image without PATH (e.g. one imported from a rootfs) gets the default.
    if (!(image.config.Env ?? []).some((e) => e === "PATH" || e.startsWith("PATH="))) {
      image.config.Env = [...(image.config.Env ?? []), `PATH=${DEFAULT_PATH}`];
    }
    st = {
      def,
      image,
      baseImage: resolved,
      env: envFromList(image.config.Env ?? []),
      declaredArgs: [],
      workdir: image.config.WorkingDir || "/",
      user: image.config.User ?? "",
      platform: resolved.platform,
      cmdSet: false,
      step: 0,
      steps,
    };
    st.root = pending(
      { kind: "image", ref: resolved.ref, digest: resolved.digest, platform: resolved.platform },
      [],
      {
        name: stepName(st, ctx, `FROM ${resolved.ref}@${resolved.digest}`),
        location: locationOf(ctx, def.from.node),
      },
    );
  }

  const triggers = st.image.config.OnBuild ?? [];
  if (triggers.length > 0) {
    st.image.config.OnBuild = null;
    for (const trigger of triggers) {
      let instruction: Instruction;
      // The parser (chevrotain and its grammar) loads only for the images that need it.
      const { parseDockerfile } = await import("../syntax/index.js");
      try {
        const ast = parseDockerfile(trigger, { file: `ONBUILD trigger of ${def.baseName}` });
        if (ast.instructions.length !== 1) throw new Error("an ONBUILD trigger must be a single instruction");
        instruction = ctx.parseInstruction(ast.instructions[0]!);
      } catch (err) {
        throw ctx.errorAt(
          `ONBUILD trigger "${trigger}" of base image ${def.baseName}: ${(err as Error).message}`,
          at,
        );
      }
      await dispatch(st, { ...instruction, range: def.from.range }, ctx);
    }
  }
  for (const instruction of def.instructions) await dispatch(st, instruction, ctx);
  return st;
}

function emptyImage(platform: Platform): ImageConfig {
  return {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: [`PATH=${DEFAULT_PATH}`], WorkingDir: "/" },
    rootfs: { type: "layers", diff_ids: [] },
    history: [],
  };
}

function envFromList(list: string[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of list) {
    const eq = entry.indexOf("=");
    env.set(eq < 0 ? entry : entry.slice(0, eq), eq < 0 ? "" : entry.slice(eq + 1));
  }
  return env;
}

/**
 * Where each name first appears in an image config's Env list, by list: ENV replaces a variable
 * in place, and a Dockerfile of 100,000 ENV lines must not scan the list for each of them.
 */
const envListIndex = new WeakMap<string[], Map<string, number>>();

function setConfigEnv(image: ImageConfig, key: string, value: string) {
  image.config.Env ??= [];
  const list = image.config.Env;
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

function commit(st: StageState, createdBy: string, withLayer: boolean, fromGraph = false) {
  st.image.history ??= [];
  st.image.history.push({
    created_by: fromGraph ? `${createdBy} # buildkit` : createdBy,
    comment: HISTORY_COMMENT,
    ...(withLayer ? {} : { empty_layer: true }),
  });
}

/** `[build 2/4] RUN make`, as BuildKit names a step. */
function stepName(st: StageState, ctx: DispatchContext, text: string): string {
  st.step++;
  const width = String(st.steps).length;
  const stage = ctx.singleStage ? "" : `${st.def.name ?? `stage-${st.def.index}`} `;
  return `[${stage}${String(st.step).padStart(width)}/${st.steps}] ${text}`;
}

function locationOf(ctx: DispatchContext, node: InstructionNode) {
  return { file: ctx.file, startLine: node.range.start.line, endLine: node.range.end.line };
}

/** The instruction as progress shows it: keyword upper-cased, set variables expanded. */
function displayText(instruction: Instruction): string {
  const text = instruction.node.original.trim();
  const space = text.search(/\s/);
  return space < 0 ? text.toUpperCase() : `${text.slice(0, space).toUpperCase()}${text.slice(space)}`;
}

function execEnv(st: StageState): string[] {
  const env = [...st.env].map(([k, v]) => `${k}=${v}`);
  if (!st.env.has("PATH")) env.push(`PATH=${DEFAULT_PATH}`);
  return env;
}

function withShell(st: StageState, command: string): string[] {
  const shell = st.image.config.Shell?.length ? st.image.config.Shell : ["/bin/sh", "-c"];
  return [...shell, command];
}

function commandArgs(st: StageState, command: CommandLine): string[] {
  return command.form === "exec" ? command.argv : withShell(st, command.command);
}

/** Go's `%q` of a string slice, as BuildKit writes CMD and ENTRYPOINT into the history. */
function goQuoteList(list: string[]): string {
  return `[${list.map((s) => JSON.stringify(s)).join(" ")}]`;
}

/** `p` made absolute against the WORKDIR; an empty one (`COPY f $empty`) is the WORKDIR as a directory, as `.` is. */
function absolutePath(st: StageState, p: string): string {
  if (p === "") return st.workdir.endsWith("/") ? st.workdir : `${st.workdir}/`;
  const joined = path.isAbsolute(p) ? path.normalize(p) : path.join(st.workdir, p);
  const trailing = (p.endsWith("/") || p.endsWith("/.") || p === ".") && joined !== "/";
  return trailing && !joined.endsWith("/") ? `${joined}/` : joined;
}

function expandWord(st: StageState, ctx: DispatchContext, word: string, at: Position): string {
  const result = ctx.expand(word, st.env, at);
  ctx.warnUndeclared(result.unmatched, at);
  return result.result;
}

function parseChown(value: string): Chown {
  const [user, group] = value.split(":", 2);
  return { user: user!, ...(group !== undefined ? { group } : {}) };
}

async function dispatch(st: StageState, ins: Instruction, ctx: DispatchContext): Promise<void> {
  const at = ins.range.start;
  const word = (w: string) => expandWord(st, ctx, w, at);
  switch (ins.kind) {
    case "from":
      throw ctx.errorAt("FROM cannot be used here", at);
    case "env": {
      const pairs = ins.vars.map((kv) => ({ key: word(kv.key), value: word(kv.value) }));
      for (const { key, value } of pairs) {
        st.env.set(key, value);
        setConfigEnv(st.image, key, value);
      }
      commit(st, `ENV ${pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`, false);
      return;
    }
    case "label": {
      const pairs = ins.labels.map((kv) => ({ key: word(kv.key), value: word(kv.value) }));
      st.image.config.Labels ??= {};
      for (const { key, value } of pairs) st.image.config.Labels[key] = value;
      commit(st, `LABEL ${pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`, false);
      return;
    }
    case "arg": {
      const parts: string[] = [];
      for (const arg of ins.args) {
        const key = arg.key;
        const given = ctx.buildArgs.get(key);
        let value: string | undefined;
        if (given !== undefined) {
          ctx.usedBuildArgs.add(key);
          value = given;
        } else if (arg.value !== undefined) {
          value = word(arg.value);
        } else if (ctx.metaEnv.has(key)) {
          value = ctx.metaEnv.get(key);
        }
        if (value !== undefined) st.env.set(key, value);
        st.declaredArgs.push({ key, ...(value !== undefined ? { value } : {}) });
        parts.push(value === undefined ? key : `${key}=${value}`);
      }
      commit(st, `ARG ${parts.join(" ")}`, false);
      return;
    }
    case "workdir": {
      const wd = absolutePath(st, word(ins.path)).replace(/(.)\/$/, "$1");
      st.workdir = wd;
      st.image.config.WorkingDir = wd;
      if (wd !== "/") {
        const chown = st.image.config.User ? parseChown(st.image.config.User) : undefined;
        st.root = pending(
          {
            kind: "file",
            ...(st.root ? { base: 0 } : {}),
            actions: [
              { action: "mkdir", path: wd, mode: 0o755, makeParents: true, ...(chown ? { chown } : {}) },
            ],
            platform: st.platform,
          },
          st.root ? [st.root] : [],
          { name: stepName(st, ctx, `WORKDIR ${wd}`), location: locationOf(ctx, ins.node) },
        );
      } else {
        st.step++;
      }
      commit(st, `WORKDIR ${wd}`, wd !== "/");
      return;
    }
    case "user": {
      const user = word(ins.user);
      st.user = user;
      st.image.config.User = user;
      commit(st, `USER ${user}`, false);
      return;
    }
    case "volume": {
      const volumes = ins.volumes.map(word);
      st.image.config.Volumes ??= {};
      for (const v of volumes) {
        if (v === "") throw ctx.errorAt("VOLUME specified can not be an empty string", at);
        st.image.config.Volumes[v] = {};
      }
      commit(st, `VOLUME [${volumes.join(" ")}]`, false);
      return;
    }
    case "expose": {
      // As BuildKit: the words sorted as written (ASCII, so code-unit order is byte order), then
      // each expanded and parsed in turn; the history lists every port so found.
      const ports = [...ins.ports].sort().flatMap((p) => {
        try {
          return ctx.lexer.processWords(p, st.env);
        } catch (err) {
          throw ctx.errorAt((err as Error).message, at);
        }
      });
      st.image.config.ExposedPorts ??= {};
      const added: string[] = [];
      for (const spec of ports) {
        for (const port of parsePortSpec(spec, (reason) => ctx.errorAt(reason, at))) {
          st.image.config.ExposedPorts[port] = {};
          added.push(port);
        }
      }
      commit(st, `EXPOSE [${added.join(" ")}]`, false);
      return;
    }
    case "stopsignal": {
      const signal = word(ins.signal);
      if (!isValidSignal(signal)) throw ctx.errorAt(`invalid signal: ${signal}`, at);
      st.image.config.StopSignal = signal;
      commit(st, `STOPSIGNAL ${signal}`, false);
      return;
    }
    case "shell":
      st.image.config.Shell = ins.argv;
      commit(st, `SHELL [${ins.argv.join(" ")}]`, false);
      return;
    case "cmd": {
      const args = commandArgs(st, ins.command);
      st.image.config.Cmd = args;
      st.image.config.ArgsEscaped = true;
      st.cmdSet = true;
      commit(st, `CMD ${goQuoteList(args)}`, false);
      return;
    }
    case "entrypoint": {
      const args = commandArgs(st, ins.command);
      st.image.config.Entrypoint = args;
      if (!st.cmdSet) st.image.config.Cmd = null;
      commit(st, `ENTRYPOINT ${goQuoteList(args)}`, false);
      return;
    }
    case "healthcheck":
      dispatchHealthcheck(st, ins);
      return;
    case "onbuild":
      st.image.config.OnBuild = [...(st.image.config.OnBuild ?? []), ins.expression];
      return;
    case "maintainer":
      st.image.author = ins.maintainer;
      commit(st, `MAINTAINER ${ins.maintainer}`, false);
      return;
    case "run":
      await dispatchRun(st, ins, ctx);
      return;
    case "copy":
    case "add":
      await dispatchCopy(st, ins, ctx);
      return;
  }
}

function dispatchHealthcheck(st: StageState, ins: HealthcheckInstruction) {
  const test =
    ins.test.type === "none"
      ? ["NONE"]
      : ins.test.command.form === "exec"
        ? ["CMD", ...ins.test.command.argv]
        : ["CMD-SHELL", ins.test.command.command];
  st.image.config.Healthcheck = {
    Test: test,
    ...(ins.interval ? { Interval: ins.interval } : {}),
    ...(ins.timeout ? { Timeout: ins.timeout } : {}),
    ...(ins.startPeriod ? { StartPeriod: ins.startPeriod } : {}),
    ...(ins.startInterval ? { StartInterval: ins.startInterval } : {}),
    ...(ins.retries ? { Retries: ins.retries } : {}),
  };
  commit(st, `HEALTHCHECK ${JSON.stringify(st.image.config.Healthcheck)}`, false);
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

/** What a stage, image or the context provides to COPY --from or RUN --mount=from. */
async function sourceFor(
  st: StageState,
  ctx: DispatchContext,
  from: string | undefined,
  at: Position,
): Promise<{ vertex?: PendingVertex; fromContext: boolean }> {
  if (from === undefined) return { vertex: ctx.context, fromContext: true };
  const name = ctx.expand(from, ctx.metaEnv, at).result;
  const namedLocal = ctx.namedLocal(name);
  if (namedLocal) return { vertex: namedLocal, fromContext: false };
  const stage = await ctx.stageOf(name, at);
  if (stage) return { ...(stage.root ? { vertex: stage.root } : {}), fromContext: false };
  if (ctx.isScratch(name)) return { fromContext: false };
  const image = await ctx.image(name, st.platform, at);
  return {
    vertex: pending({ kind: "image", ref: image.ref, digest: image.digest, platform: image.platform }, [], {
      name: `[internal] load ${image.ref}@${image.digest}`,
      internal: true,
    }),
    fromContext: false,
  };
}

const HEREDOC_MARKER = /^<<(-?)(["']?)([^"'\s]+)\2$/;

async function dispatchRun(st: StageState, ins: RunInstruction, ctx: DispatchContext) {
  const at = ins.range.start;
  const inputs: PendingVertex[] = st.root ? [st.root] : [];
  const addInput = (v: PendingVertex) => {
    const known = inputs.indexOf(v);
    if (known >= 0) return known;
    inputs.push(v);
    return inputs.length - 1;
  };
  const mounts: ExecMount[] = [
    { type: "bind", target: "/", ...(st.root ? { input: 0 } : {}), readonly: false, output: true },
  ];

  let args: string[];
  let summary = "";
  if (ins.command.form === "exec") {
    args = ins.command.argv;
  } else if (ins.heredocs.length > 0) {
    const command = ins.command.command.trim();
    const first = ins.heredocs[0]!;
    if (HEREDOC_MARKER.test(command)) {
      summary = ` (${summarizeHeredoc(first.content)})`;
      if (first.content.startsWith("#!")) {
        // A script with a shebang runs as a file, by its own interpreter.
        const script = pending(
          {
            kind: "file",
            actions: [{ action: "mkfile", path: `/${first.name}`, data: first.content, mode: 0o755 }],
            platform: st.platform,
          },
          [],
          { name: "preparing inline document", internal: true },
        );
        mounts.push({
          type: "bind",
          target: "/dev/pipes/",
          input: addInput(script),
          selector: "/",
          readonly: true,
          output: false,
        });
        args = withShell(st, `/dev/pipes/${first.name}`);
      } else {
        args = withShell(st, first.content);
      }
    } else {
      // Anything around the heredocs: hand the whole text to the shell, which knows heredocs.
      args = withShell(st, command + ins.heredocs.map((h) => `\n${h.content}${h.name}`).join(""));
    }
  } else {
    args = withShell(st, ins.command.command);
  }

  for (const [index, raw] of ins.mounts.entries()) {
    const mountAt = ins.mountPositions[index] ?? at;
    const spec = ctx.parseMount(expandWord(st, ctx, raw, mountAt), {
      file: ctx.file,
      lines: ctx.lines,
      position: mountAt,
    });
    const target = absolutePath(st, spec.target ?? "").replace(/(.)\/$/, "$1");
    switch (spec.type) {
      case "bind": {
        const source = await sourceFor(st, ctx, spec.from, at);
        const selector = cleanAbsolutePath(spec.source ?? "/");
        // A bind mount of the context mounts a source of exactly what it selects, not the whole
        // context the build reads: what it shows (which names share a file, so link counts)
        // must not depend on what other steps copy, since its key does not.
        const vertex = source.fromContext ? contextSelection(ctx, selector) : source.vertex;
        mounts.push({
          type: "bind",
          target,
          ...(vertex ? { input: addInput(vertex) } : {}),
          selector,
          readonly: !spec.readwrite,
          output: false,
        });
        break;
      }
      case "cache": {
        const source = spec.from !== undefined ? await sourceFor(st, ctx, spec.from, at) : undefined;
        mounts.push({
          type: "cache",
          target,
          ...(source?.vertex
            ? { input: addInput(source.vertex), selector: cleanAbsolutePath(spec.source ?? "/") }
            : {}),
          readonly: spec.readonly,
          output: false,
          cache: { id: spec.id ?? target, sharing: spec.sharing },
          ...ids(spec),
        });
        break;
      }
      case "tmpfs":
        mounts.push({
          type: "tmpfs",
          target,
          readonly: false,
          output: false,
          tmpfs: spec.size !== undefined ? { size: spec.size } : {},
        });
        break;
      case "secret":
        mounts.push({
          type: "secret",
          target:
            spec.target !== undefined ? target : spec.env !== undefined ? "" : `/run/secrets/${spec.id}`,
          readonly: true,
          output: false,
          secret: {
            id: spec.id,
            ...(spec.env !== undefined ? { env: spec.env } : {}),
            required: spec.required,
          },
          ...ids(spec),
        });
        break;
      case "ssh":
        mounts.push({
          type: "ssh",
          target: spec.target !== undefined ? target : "/run/buildkit/ssh_agent.0",
          readonly: true,
          output: false,
          ssh: { id: spec.id, required: spec.required },
          ...ids(spec),
        });
        break;
    }
  }

  st.root = pending(
    {
      kind: "exec",
      args,
      env: execEnv(st),
      cwd: st.workdir,
      user: st.user,
      network: ins.network === undefined || ins.network === "default" ? ctx.network : ins.network,
      security: ins.security ?? "sandbox",
      ...(ctx.hostname !== undefined ? { hostname: ctx.hostname } : {}),
      mounts,
      platform: st.platform,
    },
    inputs,
    {
      name: stepName(st, ctx, runTitle(st, ctx, `${displayText(ins)}${summary}`, mounts)),
      location: locationOf(ctx, ins.node),
    },
  );
  // Each build argument once, where it was first declared, with its latest value (as BuildKit).
  const argValues = new Map<string, string>();
  for (const { key, value } of st.declaredArgs) argValues.set(key, st.env.get(key) ?? value ?? "");
  const argsInHistory = [...argValues].map(([key, value]) => `${key}=${value}`);
  const prefix = argsInHistory.length > 0 ? `|${argsInHistory.length} ${argsInHistory.join(" ")} ` : "";
  commit(st, `RUN ${prefix}${args.join(" ")}`, true, true);
}

/**
 * A RUN as progress names it, as BuildKit does: its variables expanded (unset ones and quotes
 * left as written), and a variable a secret mount sets shown as `****`, never its value.
 */
function runTitle(st: StageState, ctx: DispatchContext, text: string, mounts: ExecMount[]): string {
  const env = new Map(st.env);
  for (const mount of mounts) if (mount.secret?.env !== undefined) env.set(mount.secret.env, "****");
  try {
    return ctx.titleLexer.processWord(text, env);
  } catch {
    return text;
  }
}

/** A `local` source of the build context holding only `selector` (and what its symlinks lead to). */
function contextSelection(ctx: DispatchContext, selector: string): PendingVertex {
  const context = ctx.context.op;
  return pending(
    {
      kind: "local",
      name: "context",
      excludePatterns: context.kind === "local" ? context.excludePatterns : [],
      followPaths: selector === "/" ? [] : [selector],
    },
    [],
    { name: "[internal] load build context", internal: true },
  );
}

function ids(spec: { uid?: number; gid?: number; mode?: number }) {
  return {
    ...(spec.uid !== undefined ? { uid: spec.uid } : {}),
    ...(spec.gid !== undefined ? { gid: spec.gid } : {}),
    ...(spec.mode !== undefined ? { mode: spec.mode } : {}),
  };
}

function summarizeHeredoc(doc: string): string {
  const lines = doc.trim().split(/\r?\n/);
  return lines.length > 1 ? `${lines[0]}...` : lines[0]!;
}

const GIT_SOURCE = /^(?:git@[^:]+:|git:\/\/|https?:\/\/[^#]+\.git(?:#|$)|ssh:\/\/)/;

async function dispatchCopy(st: StageState, ins: CopyInstruction, ctx: DispatchContext) {
  const at = ins.range.start;
  const isAdd = ins.kind === "add";
  const keyword = isAdd ? "ADD" : "COPY";
  const dest = absolutePath(st, expandWord(st, ctx, ins.dest, at));
  const chown = ins.chown !== undefined ? expandWord(st, ctx, ins.chown, at) : undefined;
  const chmod = ins.chmod !== undefined ? expandWord(st, ctx, ins.chmod, at) : undefined;
  if (
    chmod !== undefined &&
    // Octal as BuildKit reads it: 0 to 7777, so `--chmod=0` gives mode 0000.
    !/^[0-7]{1,4}$/.test(chmod) &&
    !/^([ugoa]*[-+=][rwxXst]*)(,[ugoa]*[-+=][rwxXst]*)*$/.test(chmod)
  ) {
    throw ctx.errorAt(
      `invalid --chmod=${chmod}: use an octal mode such as 755 or a symbolic one such as u+x`,
      at,
    );
  }
  const exclude = ins.exclude.map((e) => expandWord(st, ctx, e, at));
  const checksum = ins.checksum !== undefined ? expandWord(st, ctx, ins.checksum, at) : undefined;

  // Path sources first, then heredoc files, in the order BuildKit copies them.
  const sources: ({ path: string; heredoc?: undefined } | { heredoc: Heredoc; path?: undefined })[] = [
    ...ins.sources.map((s) => ({ path: expandWord(st, ctx, s, at) })),
    ...ins.heredocs.map((heredoc) => ({ heredoc })),
  ];
  if (sources.length > 1 && !dest.endsWith("/")) {
    throw ctx.errorAt(
      `When using ${keyword} with more than one source file, the destination must be a directory and end with a /`,
      at,
    );
  }
  if (checksum !== undefined) {
    const only = sources[0];
    if (sources.length !== 1 || only?.path === undefined || !/^https?:\/\//.test(only.path)) {
      throw ctx.errorAt("--checksum can only be used with a single http(s) source", at);
    }
  }

  const inputs: PendingVertex[] = [];
  const addInput = (v: PendingVertex) => {
    const known = inputs.indexOf(v);
    if (known >= 0) return known;
    inputs.push(v);
    return inputs.length - 1;
  };
  const link = ins.link && chmod === undefined;
  if (st.root && !link) addInput(st.root);
  const source = await sourceFor(st, ctx, ins.from, at);
  const owner = chown !== undefined ? parseChown(chown) : undefined;
  const actions: FileAction[] = [];
  const copy = (
    input: number | undefined,
    src: string,
    extra: Partial<Extract<FileAction, { action: "copy" }>> = {},
  ) => {
    if (input === undefined) {
      throw ctx.errorAt(
        `${keyword} --from=${ins.from}: that stage's filesystem is empty, there is nothing to copy`,
        at,
      );
    }
    actions.push({
      action: "copy",
      input,
      src,
      dest,
      ...(owner ? { chown: owner } : {}),
      ...(chmod !== undefined ? { chmod } : {}),
      followSymlinks: true,
      copyDirContentsOnly: true,
      attemptUnpack: isAdd && ins.unpack !== false,
      createDestPath: true,
      allowWildcard: true,
      allowEmptyWildcard: true,
      includePatterns: [],
      excludePatterns: exclude,
      ...extra,
    });
  };
  const historySources: string[] = [];
  for (const s of sources) {
    if (s.heredoc) {
      const h = s.heredoc;
      historySources.push(`<<${h.name}`);
      const data = h.expand ? expandHeredoc(ctx, h.content, st.env, at) : h.content;
      const file = pending(
        {
          kind: "file",
          actions: [{ action: "mkfile", path: `/${h.name}`, data, mode: 0o644 }],
          platform: st.platform,
        },
        [],
        { name: "preparing inline document", internal: true },
      );
      copy(addInput(file), `/${h.name}`, {
        followSymlinks: false,
        copyDirContentsOnly: false,
        attemptUnpack: false,
        allowWildcard: false,
        allowEmptyWildcard: false,
      });
      continue;
    }
    const src = s.path;
    historySources.push(src);
    if (/^https?:\/\//.test(src) && !GIT_SOURCE.test(src)) {
      if (!isAdd) throw ctx.errorAt(`source can't be a URL for COPY: ${src} (use ADD)`, at);
      const filename = urlFilename(src);
      const http = pending({ kind: "http", url: src, filename, ...(checksum ? { checksum } : {}) }, [], {
        name: `[internal] download ${src}`,
        internal: true,
      });
      copy(addInput(http), `/${filename}`, {
        // A download is kept as it is, unless ADD --unpack=true asks for it to be extracted.
        attemptUnpack: ins.unpack === true,
        allowWildcard: false,
        allowEmptyWildcard: false,
      });
      continue;
    }
    if (GIT_SOURCE.test(src)) {
      if (!isAdd) throw ctx.errorAt(`source can't be a git repository for COPY: ${src} (use ADD)`, at);
      const [remote, fragment] = src.split("#", 2) as [string, string | undefined];
      const [ref, subdir] = (fragment ?? "").split(":", 2);
      const git = pending(
        {
          kind: "git",
          remote,
          ...(ref ? { ref } : {}),
          ...(subdir ? { subdir } : {}),
          keepGitDir: ins.keepGitDir === true,
        },
        [],
        { name: `[internal] git ${remote}`, internal: true },
      );
      copy(addInput(git), "/", { attemptUnpack: false });
      continue;
    }
    let from = src;
    let include: string[] = [];
    if (ins.parents) {
      const pivot = src.indexOf("/./");
      include = [path.normalize(`/${pivot >= 0 ? src.slice(pivot + 3) : src}`).replace(/^\//, "")];
      from = pivot >= 0 ? src.slice(0, pivot) : "/";
    }
    const selector = cleanAbsolutePath(from);
    if (source.fromContext) ctx.contextPaths.add(cleanAbsolutePath(src.replace("/./", "/")));
    // As BuildKit: a --parents source without wildcards must exist; one with them may match nothing.
    const required =
      ins.parents && !/[*?[]/.test(src) ? { requiredPaths: [path.join(selector, include[0]!)] } : {};
    copy(source.vertex ? addInput(source.vertex) : undefined, selector, {
      includePatterns: include,
      ...required,
    });
  }

  const filePlatform = st.platform;
  const name = stepName(st, ctx, displayText(ins));
  const location = locationOf(ctx, ins.node);
  if (link) {
    const layer = pending({ kind: "file", actions, platform: filePlatform }, inputs, { name, location });
    st.root = st.root
      ? pending({ kind: "merge" }, [st.root, layer], { name: `${name} (link)`, location })
      : layer;
  } else {
    st.root = pending(
      { kind: "file", ...(st.root ? { base: 0 } : {}), actions, platform: filePlatform },
      inputs,
      { name, location },
    );
  }
  const flags = [
    ...(ins.parents ? ["--parents"] : []),
    ...(chown !== undefined ? [`--chown=${chown}`] : []),
    ...(chmod !== undefined ? [`--chmod=${chmod}`] : []),
  ];
  commit(st, [keyword, ...flags, ...historySources, expandWord(st, ctx, ins.dest, at)].join(" "), true, true);
}

/** A heredoc file's body is expanded, but its quotes belong to the file: they are not processed. */
function expandHeredoc(ctx: DispatchContext, body: string, env: EnvLookup, at: Position): string {
  return ctx.expand(body, env, at, ctx.heredocLexer).result;
}

function urlFilename(url: string): string {
  try {
    const base = path.basename(new URL(url).pathname);
    return base && base !== "/" && base !== "." ? base : "__unnamed__";
  } catch {
    return "__unnamed__";
  }
}
