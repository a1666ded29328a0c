/**
 * Dispatching one stage: each instruction either adds a vertex (RUN, COPY, ADD, WORKDIR) or edits
 * the stage's image config, with the semantics of BuildKit's dockerfile2llb. The instruction
 * families have a file each: config.ts (the config instructions), run.ts, copy.ts; what they share
 * is in state.ts.
 */
import type { Platform } from "../../oci/platform.js";
import { DEFAULT_PATH, type ImageConfig } from "../../oci/spec.js";
import type { Instruction } from "../instructions/index.js";
import { applyConfigInstruction, isConfigInstruction } from "./config.js";
import { dispatchCopy } from "./copy.js";
import type { StageDef } from "./index.js";
import { pending } from "./pending.js";
import { dispatchRun } from "./run.js";
import {
  commit,
  type DispatchContext,
  expandWord,
  locationOf,
  parseChown,
  type StageState,
  stepName,
} from "./state.js";

export type { DispatchContext, StageState } from "./state.js";

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
async function dispatch(st: StageState, ins: Instruction, ctx: DispatchContext): Promise<void> {
  const at = ins.range.start;
  if (isConfigInstruction(ins)) {
    const history = applyConfigInstruction(st, ins, {
      word: (w) => expandWord(st, ctx, w, at),
      words: (w) => {
        try {
          return ctx.lexer.processWords(w, st.env);
        } catch (err) {
          throw ctx.errorAt((err as Error).message, at);
        }
      },
      fail: (reason) => ctx.errorAt(reason, at),
    });
    if (ins.kind === "workdir") addWorkdir(st, ctx, ins);
    if (history !== undefined) commit(st, history, ins.kind === "workdir" && st.workdir !== "/");
    return;
  }
  switch (ins.kind) {
    case "from":
      throw ctx.errorAt("FROM cannot be used here", at);
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
          value = expandWord(st, ctx, arg.value, at);
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
    case "run":
      await dispatchRun(st, ins, ctx);
      return;
    case "copy":
    case "add":
      await dispatchCopy(st, ins, ctx);
      return;
  }
}

/** WORKDIR's directory (its config part is config.ts's): made, owned by the config's USER, unless it is `/`. */
function addWorkdir(st: StageState, ctx: DispatchContext, ins: Extract<Instruction, { kind: "workdir" }>) {
  const wd = st.workdir;
  if (wd === "/") {
    st.step++;
    return;
  }
  const chown = st.image.config.User ? parseChown(st.image.config.User) : undefined;
  st.root = pending(
    {
      kind: "file",
      ...(st.root ? { base: 0 } : {}),
      actions: [{ action: "mkdir", path: wd, mode: 0o755, makeParents: true, ...(chown ? { chown } : {}) }],
      platform: st.platform,
    },
    st.root ? [st.root] : [],
    { name: stepName(st, ctx, `WORKDIR ${wd}`), location: locationOf(ctx, ins.node) },
  );
}
