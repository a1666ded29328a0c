/**
 * Lowering: a parsed Dockerfile → a BuildGraph and the image config of the target stage, as
 * BuildKit's dockerfile2llb does it. Nothing runs here; base images come from the injected
 * resolver. Stages the target does not need are never resolved or dispatched.
 */
import { TbuildError } from "../../errors/index.js";
import { formatPlatform, InvalidPlatformError, type Platform, parsePlatform } from "../../oci/platform.js";
import type { ImageConfig } from "../../oci/spec.js";
import type { BuildGraph, ExecOp, VertexDigest } from "../../solver/graph.js";
import { inputsFirst } from "../../solver/walk.js";
import { DockerfileError } from "../errors.js";
import type {
  ArgInstruction,
  CopyInstruction,
  FromInstruction,
  Instruction,
  RunInstruction,
} from "../instructions/index.js";
import { parseInstruction, parseMount } from "../instructions/index.js";
import { closestOption } from "../instructions/suggest.js";
import type { ImageResolver, ResolvedImage } from "../resolver.js";
import { type EnvLookup, ShellExpansionError, ShellLex } from "../shell/index.js";
import type { DockerfileAst, Position } from "../syntax/index.js";
import { AUTOMATIC_ARG_NAMES, automaticArgs, PROXY_ARGS } from "./args.js";
import { GraphAssembler, type PendingVertex, pending } from "./pending.js";
import { type DispatchContext, dispatchStage, type StageState } from "./stage.js";
import { syntaxDirectiveWarning } from "./syntax-directive.js";

export interface LowerOptions {
  /** `--build-arg K=V` values. */
  buildArgs?: Record<string, string>;
  /** `--target`: the stage to build; the last stage by default. */
  target?: string;
  targetPlatform: Platform;
  buildPlatform: Platform;
  resolver: ImageResolver;
  /** `.dockerignore` patterns, carried on the build context's `local` op. */
  excludePatterns?: string[];
  /** `--label K=V`, added to the final image config. */
  labels?: Record<string, string>;
  /**
   * `--network`: the network of every RUN that says no other (no flag, or `--network=default`),
   * as in BuildKit, where the build's mode is the default state a RUN's own flag overrides.
   */
  network?: ExecOp["network"];
  signal?: AbortSignal;
  /**
   * `--build-context NAME=...`: `FROM NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` read
   * this instead of the stage or image of that name, as buildx does.
   */
  namedContexts?: Record<string, NamedContext>;
  /** Non-fatal findings: ARG used before declared, unused build args, MAINTAINER, `# syntax=` of another frontend. */
  warn?: (warning: LowerWarning) => void;
  /** One of several platforms of a build: each step is named with its platform, as BuildKit does. */
  platformInNames?: boolean;
}

/** What a `--build-context` name stands for. */
export type NamedContext =
  /** A directory: a `local` op of this name, read from the worker's `localSources[name]`, less its `.dockerignore`. */
  | { type: "local"; name: string; excludePatterns?: string[] }
  /** An image reference, resolved through the resolver (`docker-image://REF`). */
  | { type: "image"; ref: string }
  /** An image already in the store (`oci-layout://DIR`, imported by the caller). */
  | { type: "resolved"; image: ResolvedImage };

export interface LowerWarning {
  message: string;
  file: string;
  position?: Position;
}

export interface LoweredStage {
  index: number;
  /** `AS name`, or `stage-N`. */
  name: string;
  /** The stage's filesystem; absent when it is empty (`FROM scratch` with nothing added). */
  root?: VertexDigest;
  /**
   * BUILDKIT_SBOM_SCAN_STAGE / BUILDKIT_SBOM_SCAN_CONTEXT as this stage has them (a global ARG,
   * then the stage's own ARG, each `true`, `false` or a list of stage names): an SBOM of the build
   * also scans this stage (when it is not the target) or, for the target, the context.
   */
  sbomScanStage?: true;
  sbomScanContext?: true;
}

export interface LoweredBuild {
  graph: BuildGraph;
  /** The target stage's filesystem; absent when it is empty. */
  root?: VertexDigest;
  /** The target's image config: inherited base config and history plus this build's changes. */
  image: ImageConfig;
  /** The base image the target stage started from, if any (its layers are the image's first ones). */
  baseImage?: ResolvedImage;
  target: LoweredStage;
  /** Every stage the target needs, in the order they were lowered. */
  stages: LoweredStage[];
}

/** One `FROM` and what follows it, before anything is dispatched. */
export interface StageDef {
  index: number;
  from: FromInstruction;
  /** Lower-cased `AS` name. */
  name?: string;
  /** The FROM image or stage name after expanding global ARGs. */
  baseName: string;
  /** An earlier stage this one is based on. */
  baseStage?: StageDef;
  platform?: Platform;
  instructions: Instruction[];
  /** Stages and images reached by `COPY --from` and `RUN --mount=from=`. */
  deps: Map<StageDef, Instruction>;
  /** Images reached the same way, with where the first instruction naming each is. */
  imageDeps: Map<string, Position>;
}

export async function lowerDockerfile(ast: DockerfileAst, options: LowerOptions): Promise<LoweredBuild> {
  const file = ast.file;
  const errorAt = (reason: string, position: Position) =>
    new DockerfileError(reason, { file, position, lines: ast.lines });
  const warn = (message: string, position?: Position) =>
    options.warn?.({ message, file, ...(position ? { position } : {}) });
  const buildArgs = new Map(Object.entries(options.buildArgs ?? {}));
  const namedContexts = new Map(Object.entries(options.namedContexts ?? {}));
  const namedContext = (ref: string) => namedContexts.get(ref) ?? namedContexts.get(ref.toLowerCase());
  const usedBuildArgs = new Set<string>();
  // A BuildKit frontend option given as a build arg, as buildx passes it.
  const sandboxHostname = buildArgs.get("BUILDKIT_SANDBOX_HOSTNAME");
  if (sandboxHostname !== undefined) usedBuildArgs.add("BUILDKIT_SANDBOX_HOSTNAME");

  const syntaxWarning = syntaxDirectiveWarning(ast.directives);
  if (syntaxWarning !== undefined) warn(syntaxWarning.message, syntaxWarning.at);

  const instructions = ast.instructions.map((node) =>
    parseInstruction(node, { file, lines: ast.lines, warn: (message, range) => warn(message, range.start) }),
  );
  const lexer = new ShellLex({ escapeToken: ast.escapeToken });
  const expand = (word: string, env: EnvLookup, at: Position, using = lexer) => {
    try {
      return using.processWordWithMatches(word, env);
    } catch (err) {
      if (err instanceof ShellExpansionError) {
        throw errorAt(err.message, err.offset === undefined ? at : positionInWord(ast, word, err.offset, at));
      }
      throw err;
    }
  };

  // Global scope: the automatic ARGs, then the ARGs before the first FROM.
  const metaEnv = new Map<string, string>();
  const lastFrom = instructions.findLast((i): i is FromInstruction => i.kind === "from");
  const targetStageName = options.target ?? lastFrom?.stageName?.toLowerCase() ?? "default";
  for (const [key, value] of automaticArgs(options.buildPlatform, options.targetPlatform, targetStageName)) {
    metaEnv.set(key, buildArgs.get(key) ?? value);
    if (buildArgs.has(key)) usedBuildArgs.add(key);
  }
  const globalArgs: ArgInstruction[] = [];
  const stages: StageDef[] = [];
  for (const instruction of instructions) {
    if (instruction.kind === "from") {
      stages.push(defineStage(instruction, stages.length));
      continue;
    }
    const current = stages.at(-1);
    if (current) {
      current.instructions.push(instruction);
    } else if (instruction.kind === "arg") {
      globalArgs.push(instruction);
      for (const arg of instruction.args) {
        const given = buildArgs.get(arg.key);
        if (given !== undefined) usedBuildArgs.add(arg.key);
        const value =
          given ??
          (arg.value === undefined ? undefined : expand(arg.value, metaEnv, instruction.range.start).result);
        if (value !== undefined) metaEnv.set(arg.key, value);
        // A bare `ARG TARGETARCH` declares the name only: the automatic value stays, as in BuildKit.
        else if (!AUTOMATIC_ARG_NAMES.has(arg.key)) metaEnv.delete(arg.key);
      }
    } else {
      throw errorAt(
        `${instruction.node.keyword.toUpperCase()} cannot come before the first FROM: only ARG may be declared there`,
        instruction.range.start,
      );
    }
  }
  if (stages.length === 0) {
    throw errorAt("no FROM instruction: a Dockerfile needs at least one build stage", { line: 1, column: 1 });
  }

  function defineStage(from: FromInstruction, index: number): StageDef {
    const at = from.range.start;
    const base = expand(from.image, metaEnv, at);
    warnUndeclared(base.unmatched, at, true);
    if (base.result === "") throw errorAt(`base name (${from.image}) should not be blank`, at);
    let platform: Platform | undefined;
    if (from.platform !== undefined) {
      const expanded = expand(from.platform, metaEnv, at);
      warnUndeclared(expanded.unmatched, at, true);
      if (expanded.result === "") throw errorAt(`empty platform value from expression ${from.platform}`, at);
      try {
        platform = parsePlatform(expanded.result);
      } catch (err) {
        if (err instanceof InvalidPlatformError) throw errorAt(err.message, at);
        throw err;
      }
    }
    const name = from.stageName?.toLowerCase();
    if (name !== undefined && stages.some((s) => s.name === name)) {
      throw errorAt(`duplicate stage name "${name}": each AS name must be unique`, at);
    }
    // A named context overrides a stage of the same name.
    const baseStage = namedContext(base.result)
      ? undefined
      : stages.find((s) => s.name !== undefined && s.name === base.result.toLowerCase());
    return {
      index,
      from,
      ...(name !== undefined ? { name } : {}),
      baseName: base.result,
      ...(baseStage ? { baseStage } : {}),
      ...(platform ? { platform } : {}),
      instructions: [],
      deps: new Map(),
      imageDeps: new Map(),
    };
  }

  /** An unset variable that an ARG declares later is almost always a misplaced ARG. */
  function warnUndeclared(names: Set<string>, at: Position, inFrom: boolean) {
    for (const name of names) {
      if (inFrom && !globalArgs.some((i) => i.args.some((a) => a.key === name))) {
        warn(`FROM uses $${name}, but no ARG before the first FROM declares it`, at);
        continue;
      }
      const later = instructions.find(
        (i) => i.kind === "arg" && i.range.start.line > at.line && i.args.some((a) => a.key === name),
      );
      if (later) warn(`${name} is used before its ARG declaration on line ${later.range.start.line}`, at);
    }
  }

  const isScratch = (ref: string): boolean => {
    const named = namedContext(ref);
    if (named) return named.type === "image" && named.ref.toLowerCase() === "scratch";
    return ref.toLowerCase() === "scratch";
  };

  const findStage = (ref: string): StageDef | undefined => {
    if (namedContext(ref)) return undefined;
    if (/^\d+$/.test(ref)) return stages[Number(ref)];
    return stages.find((s) => s.name !== undefined && s.name === ref.toLowerCase());
  };

  // The target, and which stages and images it needs.
  let target: StageDef;
  if (options.target !== undefined) {
    const found = stages.find((s) => s.name === options.target!.toLowerCase());
    if (!found) {
      const names = stages.flatMap((s) => (s.name ? [s.name] : []));
      // As BuildKit: the closest stage name when one is close, else the names there are.
      const closest = closestOption(options.target.toLowerCase(), names);
      throw new TbuildError(
        "E_UNKNOWN_TARGET",
        closest !== undefined
          ? `target stage "${options.target}" could not be found (did you mean ${closest}?)`
          : `target stage "${options.target}" could not be found in ${file}${names.length ? ` (stages: ${names.join(", ")})` : ": it names no stage"}`,
      );
    }
    target = found;
  } else {
    target = stages.at(-1)!;
  }

  for (const stage of stages) {
    for (const instruction of stage.instructions) {
      for (const ref of sourceRefs(instruction)) {
        const at = instruction.range.start;
        const name = expand(ref, metaEnv, at).result;
        if (/^\d+$/.test(name) && findStage(name) === undefined) {
          throw errorAt(
            `invalid stage index ${name}: this Dockerfile has ${stages.length} stages (0 to ${stages.length - 1})`,
            at,
          );
        }
        const dep = findStage(name);
        if (dep) stage.deps.set(dep, instruction);
        else if (!stage.imageDeps.has(name)) stage.imageDeps.set(name, at);
      }
    }
  }
  detectCycles(stages, errorAt);

  // A stage's base and sources, which it needs dispatched before it (without recursion: a
  // generated Dockerfile may chain thousands of stages).
  const needs = (stage: StageDef) => [...(stage.baseStage ? [stage.baseStage] : []), ...stage.deps.keys()];
  const reachable = new Set(inputsFirst([target], needs));

  // Resolve every image the reachable stages need, all at once.
  const images = new Map<string, Promise<ResolvedImage>>();
  const resolve = (ref: string, platform: Platform, at: Position) => {
    const key = `${ref}\u0000${platform.os}/${platform.architecture}/${platform.variant ?? ""}`;
    let found = images.get(key);
    if (!found) {
      const named = namedContext(ref);
      const resolving =
        named?.type === "resolved"
          ? Promise.resolve(named.image)
          : options.resolver.resolveImage(
              named?.type === "image" ? named.ref : ref,
              platform,
              options.signal,
            );
      found = resolving.catch((err: unknown) => {
        if (err instanceof TbuildError) throw errorAt(`${ref}: ${err.message}`, at);
        throw err;
      });
      found.catch(() => {});
      images.set(key, found);
    }
    return found;
  };
  for (const stage of reachable) {
    const platform = stage.platform ?? options.targetPlatform;
    const isImage = (ref: string) => !isScratch(ref) && namedContext(ref)?.type !== "local";
    if (!stage.baseStage && isImage(stage.baseName))
      resolve(stage.baseName, platform, stage.from.range.start);
    // An image that cannot be resolved is reported at the instruction naming it, as BuildKit does.
    for (const [ref, at] of stage.imageDeps) if (isImage(ref)) resolve(ref, platform, at);
  }

  const context = pending(
    { kind: "local", name: "context", excludePatterns: options.excludePatterns ?? [], followPaths: [] },
    [],
    { name: "[internal] load build context", internal: true },
  );
  const contextPaths = new Set<string>();
  const namedLocals = new Map<string, PendingVertex>();
  const states = new Map<StageDef, StageState>();
  const dispatchContext: DispatchContext = {
    file,
    lines: ast.lines,
    lexer,
    heredocLexer: new ShellLex({ escapeToken: ast.escapeToken, skipProcessQuotes: true }),
    titleLexer: new ShellLex({ escapeToken: ast.escapeToken, rawQuotes: true, skipUnsetEnv: true }),
    metaEnv,
    buildArgs,
    usedBuildArgs,
    targetPlatform: options.targetPlatform,
    network: options.network ?? "default",
    ...(sandboxHostname ? { hostname: sandboxHostname } : {}),
    singleStage: stages.length === 1,
    namePrefix: options.platformInNames === true ? `${formatPlatform(options.targetPlatform)} ` : "",
    context,
    contextPaths,
    expand,
    errorAt,
    warn,
    warnUndeclared: (names, at) => warnUndeclared(names, at, false),
    parseMount,
    parseInstruction: (node) =>
      parseInstruction(node, { file, lines: ast.lines, warn: (m, r) => warn(m, r.start) }),
    stageOf: async (ref, at) => {
      const dep = findStage(ref);
      if (!dep) return undefined;
      // An ONBUILD trigger (of a base image or an earlier stage) may name a stage the target
      // does not otherwise need: as in BuildKit, it is the stage of the Dockerfile being built.
      if (!states.has(dep)) await dispatchInOrder(dep, at);
      return states.get(dep);
    },
    image: (ref, platform, at) => resolve(ref, platform, at),
    isScratch,
    namedLocal: (ref) => {
      const named = namedContext(ref);
      if (named?.type !== "local") return undefined;
      let vertex = namedLocals.get(named.name);
      if (!vertex) {
        const excludePatterns = named.excludePatterns ?? [];
        vertex = pending({ kind: "local", name: named.name, excludePatterns, followPaths: [] }, [], {
          name: `[internal] load build context ${named.name}`,
          internal: true,
        });
        namedLocals.set(named.name, vertex);
      }
      return vertex;
    },
  };

  // Dispatch in dependency order: a stage's bases and sources before the stage.
  const order: StageDef[] = [];
  const dispatching = new Set<StageDef>();
  async function dispatchInOrder(root: StageDef, at: Position) {
    for (const stage of inputsFirst([root], needs)) {
      if (states.has(stage)) continue;
      if (dispatching.has(stage)) {
        throw errorAt(`circular dependency detected on stage: ${stageName(stage)}`, at);
      }
      dispatching.add(stage);
      states.set(
        stage,
        await dispatchStage(
          stage,
          stage.baseStage ? states.get(stage.baseStage) : undefined,
          dispatchContext,
        ),
      );
      dispatching.delete(stage);
      order.push(stage);
    }
  }
  await dispatchInOrder(target, target.from.range.start);

  for (const [key] of buildArgs) {
    if (!usedBuildArgs.has(key) && !PROXY_ARGS.has(key) && !AUTOMATIC_ARG_NAMES.has(key)) {
      warn(`build-arg ${key} was given but no ARG in ${file} declares it`);
    }
  }

  // The context reads only what the build uses, unless something needs all of it.
  const paths = [...contextPaths].sort();
  if (context.op.kind === "local") context.op.followPaths = paths.includes("/") ? [] : paths;

  const assembler = new GraphAssembler();
  const lowered = (stage: StageDef): LoweredStage => {
    const state = states.get(stage)!;
    const name = stageName(stage);
    // BuildKit's rule: the global ARG's value, then the stage's own ARG's, decide.
    const scans = (arg: string): boolean => {
      let enabled = false;
      const global = metaEnv.get(arg);
      if (global !== undefined) enabled = sbomScanEnabled(name, global);
      for (const declared of state.declaredArgs) {
        if (declared.key === arg && declared.value !== undefined)
          enabled = sbomScanEnabled(name, declared.value);
      }
      return enabled;
    };
    return {
      index: stage.index,
      name,
      ...(state.root ? { root: assembler.digest(state.root) } : {}),
      ...(scans("BUILDKIT_SBOM_SCAN_STAGE") ? { sbomScanStage: true as const } : {}),
      ...(scans("BUILDKIT_SBOM_SCAN_CONTEXT") ? { sbomScanContext: true as const } : {}),
    };
  };
  const targetState = states.get(target)!;
  if (options.labels && Object.keys(options.labels).length > 0) {
    targetState.image.config.Labels = { ...targetState.image.config.Labels, ...options.labels };
  }
  const loweredStages = order.map(lowered);
  const targetStage = loweredStages.find((s) => s.index === target.index)!;
  return {
    graph: assembler.graph,
    ...(targetStage.root ? { root: targetStage.root } : {}),
    image: targetState.image,
    ...(targetState.baseImage ? { baseImage: targetState.baseImage } : {}),
    target: targetStage,
    stages: loweredStages,
  };
}

/**
 * Where in the Dockerfile the character `offset` code points into `word` is, when the word is
 * written as it is in the instruction that starts at or covers `at`, from `at` on; else `at`.
 */
function positionInWord(ast: DockerfileAst, word: string, offset: number, at: Position): Position {
  const covers = (node: DockerfileAst["instructions"][number]) =>
    (node.range.start.line < at.line ||
      (node.range.start.line === at.line && node.range.start.column <= at.column)) &&
    node.range.end.line >= at.line;
  const node = ast.instructions.find(covers);
  if (!node || word === "") return at;
  // The instruction's text from `at` on, its lines joined as they are written (a heredoc's body
  // is its lines; a word continued with the escape token is not found, and `at` stands).
  const lines = ast.lines.slice(at.line - 1, node.range.end.line);
  const text = lines.join("\n");
  const found = text.indexOf(word, at.column - 1);
  if (found < 0) return at;
  const target = found + Array.from(word).slice(0, offset).join("").length;
  let index = 0;
  let lineStart = 0;
  while (index < lines.length - 1 && target > lineStart + lines[index]!.length) {
    lineStart += lines[index]!.length + 1;
    index++;
  }
  return { line: at.line + index, column: target - lineStart + 1 };
}

export function stageName(stage: StageDef): string {
  return stage.name ?? `stage-${stage.index}`;
}

/** The stage or image names an instruction reads from. */
function sourceRefs(instruction: Instruction): string[] {
  if (
    (instruction.kind === "copy" || instruction.kind === "add") &&
    (instruction as CopyInstruction).from !== undefined
  ) {
    return [(instruction as CopyInstruction).from!];
  }
  if (instruction.kind === "run") {
    return (instruction as RunInstruction).mounts.flatMap((raw) => {
      const from = /(?:^|,)from=([^,]+)/.exec(raw)?.[1];
      return from === undefined ? [] : [from.replace(/^"(.*)"$/, "$1")];
    });
  }
  return [];
}

/** A depth-first walk from each stage along its sources and base, with the path walked kept in a list. */
function detectCycles(stages: StageDef[], errorAt: (reason: string, at: Position) => DockerfileError) {
  const edges = (stage: StageDef): Iterator<[StageDef, Instruction]> => {
    const all: [StageDef, Instruction][] = [...stage.deps];
    if (stage.baseStage) all.push([stage.baseStage, stage.from]);
    return all[Symbol.iterator]();
  };
  const done = new Set<StageDef>();
  for (const start of stages) {
    if (done.has(start)) continue;
    const onPath = new Set<StageDef>([start]);
    const path = [{ stage: start, edges: edges(start) }];
    while (path.length > 0) {
      const top = path[path.length - 1]!;
      const next = top.edges.next();
      if (next.done) {
        path.pop();
        onPath.delete(top.stage);
        done.add(top.stage);
        continue;
      }
      const [dep, via] = next.value;
      if (onPath.has(dep)) {
        throw errorAt(`circular dependency detected on stage: ${stageName(start)}`, via.range.start);
      }
      if (!done.has(dep)) {
        onPath.add(dep);
        path.push({ stage: dep, edges: edges(dep) });
      }
    }
  }
}

export { proxyEnv } from "./args.js";
export type { PendingVertex };

/**
 * A BUILDKIT_SBOM_SCAN_* value for the stage `name`: a boolean as Go's strconv.ParseBool reads
 * one, else a comma-separated list of the stages it enables.
 */
export function sbomScanEnabled(name: string, value: string): boolean {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(value)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(value)) return false;
  return value.split(",").includes(name);
}
