/**
 * What the instruction families of a stage share: the stage's state as it is dispatched, the
 * context the lowering gives it, and the small steps every family takes (naming a step, adding
 * its history entry, making a path absolute against the WORKDIR, finding a `--from` source).
 */
import path from "node:path/posix";
import type { Platform } from "../../oci/platform.js";
import type { ImageConfig } from "../../oci/spec.js";
import type { Chown, ExecOp } from "../../solver/graph.js";
import type { DockerfileError } from "../errors.js";
import type { Instruction, MountSpec } from "../instructions/index.js";
import type { ResolvedImage } from "../resolver.js";
import type { EnvLookup, ExpandResult, ShellLex } from "../shell/index.js";
import type { InstructionNode, Position } from "../syntax/index.js";
import type { StageDef } from "./index.js";
import { type PendingVertex, pending } from "./pending.js";

export const HISTORY_COMMENT = "buildkit.dockerfile.v0";

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
  /** Put before each step's name: its platform, in a build of several (`linux/arm64 `), else nothing. */
  namePrefix: string;
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

export function commit(st: StageState, createdBy: string, withLayer: boolean, fromGraph = false) {
  st.image.history ??= [];
  st.image.history.push({
    created_by: fromGraph ? `${createdBy} # buildkit` : createdBy,
    comment: HISTORY_COMMENT,
    ...(withLayer ? {} : { empty_layer: true }),
  });
}

/** `[build 2/4] RUN make` (`[linux/arm64 build 2/4] RUN make` in a build of several platforms), as BuildKit names a step. */
export function stepName(st: StageState, ctx: DispatchContext, text: string): string {
  st.step++;
  const width = String(st.steps).length;
  const stage = ctx.singleStage ? "" : `${st.def.name ?? `stage-${st.def.index}`} `;
  return `[${ctx.namePrefix}${stage}${String(st.step).padStart(width)}/${st.steps}] ${text}`;
}

export function locationOf(ctx: DispatchContext, node: InstructionNode) {
  return { file: ctx.file, startLine: node.range.start.line, endLine: node.range.end.line };
}

/** The instruction as progress shows it: keyword upper-cased, set variables expanded. */
export function displayText(instruction: Instruction): string {
  const text = instruction.node.original.trim();
  const space = text.search(/\s/);
  return space < 0 ? text.toUpperCase() : `${text.slice(0, space).toUpperCase()}${text.slice(space)}`;
}

/** `p` made absolute against the WORKDIR; an empty one (`COPY f $empty`) is the WORKDIR as a directory, as `.` is. */
export function absolutePath(st: StageState, p: string): string {
  if (p === "") return st.workdir.endsWith("/") ? st.workdir : `${st.workdir}/`;
  const joined = path.isAbsolute(p) ? path.normalize(p) : path.join(st.workdir, p);
  const trailing = (p.endsWith("/") || p.endsWith("/.") || p === ".") && joined !== "/";
  return trailing && !joined.endsWith("/") ? `${joined}/` : joined;
}

export function expandWord(st: StageState, ctx: DispatchContext, word: string, at: Position): string {
  const result = ctx.expand(word, st.env, at);
  ctx.warnUndeclared(result.unmatched, at);
  return result.result;
}

export function parseChown(value: string): Chown {
  const [user, group] = value.split(":", 2);
  return { user: user!, ...(group !== undefined ? { group } : {}) };
}

/** What a stage, image or the context provides to COPY --from or RUN --mount=from. */
export async function sourceFor(
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
