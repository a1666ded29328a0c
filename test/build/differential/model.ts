/**
 * A model of BuildKit's cache keys, written apart from tbuild's code and as plainly as it can be:
 * each step's key is a hash of the key before it, the instruction's resolved parameters, the
 * state the step reads, and, for what it reads of the build context, the content of exactly the
 * paths it selects after `.dockerignore` (BuildKit's contenthash of the followed paths):
 *
 * - WORKDIR: the path (relative ones resolved) and the user it is made for.
 * - RUN: the command, the environment (ENV and ARG values, in order), the user, the working
 *   directory, and its mounts: a bind mount of the context by what its source selects, one of a
 *   stage by that stage's key, a cache mount by its id and target (never its contents).
 * - COPY/ADD: the sources (cleaned), the destination (resolved), the flags; a context source by
 *   the content of what it selects (names below it, types, permission bits, file contents, link
 *   targets, hard links among them; never mtimes or owners); a stage by that stage's key, the
 *   image by its digest. `--link` makes a layer keyed without the key before it, and a merge of
 *   both.
 * - ENV, ARG, USER make no step: they change the state later steps read.
 *
 * Each step also has a second key (BuildKit's slow key): the same, but with what it reads of a
 * stage or the image (COPY --from, a bind mount of a stage) as the content of exactly the paths it
 * selects there (as above, plus owners; for a copy, which keeps mtimes, each mtime as its layer
 * holds it), and the second key of the step before it in place of its key. Where nothing below a
 * step reads a stage or the image, both keys are one.
 *
 * A step is cached iff either key was built before in the same store (or occurs earlier in the
 * same build, as one vertex). The model needs nothing from tbuild but the step names it prints,
 * and the files of the stages a step reads (`StageFiles`: the stages as the build exported them;
 * the build's correctness is checked apart, against a build in an empty store).
 */
import { createHash } from "node:crypto";
import path from "node:path/posix";
import type { Entry, PlannedInstruction, PlannedStage, Tree } from "./scenario.js";
import { dataOf } from "./scenario.js";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface ModelStep {
  /** `s<i>`, as the progress shows it in a build of several stages. */
  stage: string;
  /** The step's number in its stage, as `[s0 3/5]` shows it. */
  number: number;
  /** The merge of a `COPY --link` (shown with `(link)`), not its layer. */
  link: boolean;
  key: string;
  /** Its second key (the same as `key` where nothing below it reads a stage or the image). */
  slowKey: string;
  /** What the step is, for messages. */
  text: string;
  /** Whether the target stage needs it. */
  needed: boolean;
}

function keyOf(material: unknown): string {
  return createHash("sha256").update(JSON.stringify(material)).digest("hex").slice(0, 16);
}

// ---------------------------------------------------------------------------------------------
// .dockerignore, as moby's patternmatcher reads it: the last pattern matching a path or one of its
// parents decides; `!` re-includes; `**` matches any number of path components.

function patternRegex(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") {
      if (pattern[i + 1] === "*") {
        i++;
        if (pattern[i + 1] === "/") {
          i++;
          re += "(?:.*/)?";
        } else re += ".*";
      } else re += "[^/]*";
    } else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

export function ignoreMatcher(patterns: readonly string[]): (p: string) => boolean {
  const rules = patterns
    .map((raw) => raw.trim())
    .filter((raw) => raw !== "" && !raw.startsWith("#"))
    .map((raw) => {
      const negate = raw.startsWith("!");
      const body = path.normalize((negate ? raw.slice(1) : raw).replace(/^\/+/, ""));
      return { negate, re: patternRegex(body) };
    });
  return (p) => {
    const parts = p.split("/");
    let excluded = false;
    for (const rule of rules) {
      for (let i = 1; i <= parts.length; i++) {
        if (rule.re.test(parts.slice(0, i).join("/"))) {
          excluded = !rule.negate;
          break;
        }
      }
    }
    return excluded;
  };
}

/** The context as the build sees it: entries `.dockerignore` leaves, and the directories above them. */
export function visibleContext(tree: Tree, ignore: readonly string[]): Set<string> {
  const excluded = ignoreMatcher(ignore);
  const visible = new Set<string>();
  for (const p of Object.keys(tree)) {
    if (excluded(p)) continue;
    visible.add(p);
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) visible.add(parts.slice(0, i).join("/"));
  }
  return visible;
}

// ---------------------------------------------------------------------------------------------
// What a source selects, and the content of it.

type Visible = { tree: Tree; visible: Set<string> };

/** `p` (relative) with every symlink on the way followed inside the context; undefined if missing. */
function followInside(ctx: Visible, p: string): string | undefined {
  let pending = p.split("/").filter((c) => c !== "" && c !== ".");
  const resolved: string[] = [];
  for (let hops = 0; pending.length > 0; ) {
    const c = pending.shift()!;
    if (c === "..") {
      resolved.pop();
      continue;
    }
    const candidate = [...resolved, c].join("/");
    const entry = ctx.tree[candidate];
    if (!entry || !ctx.visible.has(candidate)) return undefined;
    if (entry.kind === "symlink") {
      if (++hops > 40) return undefined;
      const target = entry.target.split("/").filter((x) => x !== "" && x !== ".");
      if (entry.target.startsWith("/")) resolved.length = 0;
      pending = [...target, ...pending];
      continue;
    }
    resolved.push(c);
  }
  return resolved.join("/");
}

/**
 * What else a selection records of each entry: nothing (the context), owners (a stage's files a
 * mount shows), owners and mtimes (a stage's files a copy keeps).
 */
export type Metadata = "none" | "owner" | "owner-mtime";

/** Records of one selected tree: rel below the source → type, mode, data; hard links named once. */
class Selection {
  readonly records: unknown[][] = [];
  private readonly firstOfData = new Map<string, string>();
  private readonly ctx: Visible;
  private readonly metadata: Metadata;

  constructor(ctx: Visible, metadata: Metadata = "none") {
    this.ctx = ctx;
    this.metadata = metadata;
  }

  private meta(entry: Entry): unknown[] {
    if (this.metadata === "none" || entry.kind === "hardlink") return [];
    const owner = [entry.uid ?? 0, entry.gid ?? 0];
    return this.metadata === "owner" ? owner : [...owner, entry.mtime ?? null];
  }

  /** The entry at context path `p`, recorded as `rel`; with `below`, everything under it too. */
  add(p: string, rel: string, options: { below: boolean; exclude?: (relBelow: string) => boolean }): void {
    const entry = this.ctx.tree[p];
    if (p !== "" && !entry) return;
    if (p === "" || entry?.kind === "dir") {
      if (p !== "")
        this.records.push([rel, "dir", (entry as { mode: number }).mode.toString(8), ...this.meta(entry!)]);
      if (!options.below) return;
      const prefix = p === "" ? "" : `${p}/`;
      for (const child of Object.keys(this.ctx.tree).sort()) {
        if (!child.startsWith(prefix) || !this.ctx.visible.has(child)) continue;
        const below = child.slice(prefix.length);
        if (options.exclude?.(below)) continue;
        this.addOne(child, rel === "" ? below : `${rel}/${below}`);
      }
      return;
    }
    this.addOne(p, rel);
  }

  private addOne(p: string, rel: string): void {
    const entry = this.ctx.tree[p]!;
    if (entry.kind === "dir") {
      this.records.push([rel, "dir", entry.mode.toString(8), ...this.meta(entry)]);
    } else if (entry.kind === "symlink") {
      this.records.push([rel, "symlink", entry.target, ...this.meta(entry)]);
    } else {
      const data = dataOf(this.ctx.tree, p)!;
      const first = this.firstOfData.get(data.path);
      if (first !== undefined) {
        this.records.push([rel, "hardlink", first]);
      } else {
        this.firstOfData.set(data.path, rel);
        this.records.push([
          rel,
          "file",
          data.entry.mode.toString(8),
          data.entry.content,
          ...this.meta(data.entry),
        ]);
      }
    }
  }
}

function hasGlob(p: string): boolean {
  return /[*?[]/.test(p);
}

/** The glob's matches among the visible paths, component by component (`*` stays in one). */
function globMatches(ctx: Visible, glob: string): string[] {
  const parts = glob.split("/").filter((c) => c !== "" && c !== ".");
  const res = parts.map((part) => patternRegex(part));
  return [...ctx.visible]
    .filter((p) => {
      const ps = p.split("/");
      return ps.length === res.length && ps.every((c, i) => res[i]!.test(c));
    })
    .sort();
}

/**
 * The content `source` selects (a COPY/ADD source or a bind mount source): undefined when a plain
 * source is missing (the step fails).
 */
export function selectionOf(
  ctx: Visible,
  source: string,
  options: { parents?: boolean; exclude?: string; metadata?: Metadata } = {},
): unknown[][] | undefined {
  const exclude = options.exclude !== undefined ? ignoreMatcher([options.exclude]) : undefined;
  const selection = new Selection(ctx, options.metadata);
  if (options.parents) {
    // `--parents`: below the pivot (`a/./b`: a; else the root), what the rest matches, and the
    // directories on the way, whose metadata the copy keeps too.
    const pivotAt = source.indexOf("/./");
    const pivot = pivotAt >= 0 ? source.slice(0, pivotAt) : "";
    const pattern = path.normalize(`/${pivotAt >= 0 ? source.slice(pivotAt + 3) : source}`).slice(1);
    const pivotPath = pivot === "" ? "" : followInside(ctx, pivot);
    if (pivotPath === undefined) return undefined;
    const include = ignoreMatcher([pattern]);
    const prefix = pivotPath === "" ? "" : `${pivotPath}/`;
    const chosen = new Set<string>();
    for (const p of [...ctx.visible].sort()) {
      if (!p.startsWith(prefix)) continue;
      const below = p.slice(prefix.length);
      if (!include(below) || exclude?.(below)) continue;
      chosen.add(below);
      const parts = below.split("/");
      for (let i = 1; i < parts.length; i++) chosen.add(parts.slice(0, i).join("/"));
    }
    if (chosen.size === 0 && !hasGlob(pattern)) return undefined;
    for (const below of [...chosen].sort()) selection.add(`${prefix}${below}`, below, { below: false });
    return selection.records;
  }
  if (hasGlob(source)) {
    const fixed = source.split("/").filter((c) => c !== "" && c !== ".");
    const fixedPrefix = fixed.slice(0, fixed.findIndex(hasGlob)).join("/");
    for (const match of globMatches(ctx, source)) {
      const belowBase = fixedPrefix === "" ? match : match.slice(fixedPrefix.length + 1);
      if (exclude?.(belowBase)) continue;
      const followed = followInside(ctx, match);
      if (followed === undefined) return undefined;
      selection.add(followed, match, {
        below: true,
        ...(exclude ? { exclude } : {}),
      });
    }
    return selection.records;
  }
  const followed = followInside(ctx, source);
  if (followed === undefined) return undefined;
  selection.add(followed, "", { below: true, ...(exclude ? { exclude } : {}) });
  return selection.records;
}

// ---------------------------------------------------------------------------------------------
// The steps of a Dockerfile, with their keys.

interface StageModel {
  key: string | undefined;
  /** The second key of its last step. */
  slow: string | undefined;
  env: Map<string, string>;
  user: string;
  workdir: string;
}

/**
 * The files of the stages (by index) and of the busybox image, as the build exported them:
 * undefined where a stage did not build (a step reading it does not run either).
 */
export interface StageFiles {
  stages: readonly (Tree | undefined)[];
  image: Tree | undefined;
}

/** A step's two keys from the material of each: one key where both are the same material. */
function twoKeys(fast: unknown[], slow: unknown[]): { key: string; slowKey: string } {
  const key = keyOf(fast);
  return { key, slowKey: JSON.stringify(fast) === JSON.stringify(slow) ? key : keyOf(["slow", ...slow]) };
}

/** What a step reads of a stage's or the image's files, for its second key. */
function readOf(
  files: Tree | undefined,
  source: string,
  options: { exclude?: string; metadata: Metadata },
): unknown {
  if (!files) return "unavailable";
  return selectionOf({ tree: files, visible: new Set(Object.keys(files)) }, source, options) ?? "missing";
}

/** `p` as a destination or working directory: relative to `workdir`, a trailing `/` kept. */
function resolvePath(workdir: string, p: string): string {
  const joined = path.isAbsolute(p) ? path.normalize(p) : path.join(workdir, p);
  const trailing = (p.endsWith("/") || p.endsWith("/.") || p === ".") && joined !== "/";
  return trailing && !joined.endsWith("/") ? `${joined}/` : joined.replace(/(.)\/$/, "$1");
}

function cleanSource(p: string): string {
  const clean = path.join("/", p);
  return clean.length > 1 ? clean.replace(/\/+$/, "") : clean;
}

const IMAGE_KEY = keyOf(["image", "busybox"]);

/** Every step of `stages` with its keys, and whether building the last stage needs it. */
export function modelSteps(
  stages: readonly PlannedStage[],
  tree: Tree,
  ignore: readonly string[],
  files: StageFiles = { stages: [], image: undefined },
): ModelStep[] {
  const ctx: Visible = { tree, visible: visibleContext(tree, ignore) };
  const models: StageModel[] = [];
  const steps: ModelStep[] = [];
  const stageSteps: ModelStep[][] = [];
  const uses: Set<number>[] = [];

  for (const stage of stages) {
    const own: ModelStep[] = [];
    const used = new Set<number>();
    let number = 0;
    let st: StageModel;
    if (stage.base.kind === "stage") {
      const base = models[stage.base.index]!;
      st = { key: base.key, slow: base.slow, env: new Map(base.env), user: base.user, workdir: base.workdir };
      used.add(stage.base.index);
    } else {
      const key = stage.base.kind === "busybox" ? IMAGE_KEY : undefined;
      st = { key, slow: key, env: new Map([["PATH", DEFAULT_PATH]]), user: "", workdir: "/" };
      if (stage.base.kind === "busybox") number++;
    }
    const push = (keys: { key: string; slowKey: string }, text: string, link = false) =>
      own.push({ stage: stage.name, number, link, ...keys, text, needed: false });
    const advance = (keys: { key: string; slowKey: string }) => {
      st.key = keys.key;
      st.slow = keys.slowKey;
    };

    for (const ins of stage.instructions) {
      switch (ins.kind) {
        case "env":
          st.env.set(ins.key, ins.value);
          break;
        case "arg":
          if (ins.value !== undefined) st.env.set(ins.key, ins.value);
          break;
        case "user":
          st.user = ins.user;
          break;
        case "workdir": {
          number++;
          const wd = resolvePath(st.workdir, ins.path).replace(/(.)\/$/, "$1");
          st.workdir = wd;
          if (wd === "/") break;
          advance(twoKeys(["mkdir", st.key ?? null, wd, st.user], ["mkdir", st.slow ?? null, wd, st.user]));
          push({ key: st.key!, slowKey: st.slow! }, `WORKDIR ${wd}`);
          break;
        }
        case "run": {
          number++;
          const mounts = (slow: boolean) =>
            ins.mounts.map((m) => {
              if (m.type === "bind-context")
                return ["bind", m.target, selectionOf(ctx, m.source) ?? "missing"];
              if (m.type === "bind-stage") {
                used.add(m.stage);
                const read = slow
                  ? readOf(files.stages[m.stage], m.source, { metadata: "owner" })
                  : (models[m.stage]!.key ?? null);
                return ["bind", m.target, m.source, read];
              }
              return ["cache", m.target, m.id];
            });
          const rest = [ins.script, [...st.env], st.user, st.workdir];
          advance(
            twoKeys(
              ["run", st.key ?? null, ...rest, mounts(false)],
              ["run", st.slow ?? null, ...rest, mounts(true)],
            ),
          );
          push({ key: st.key!, slowKey: st.slow! }, ins.line);
          break;
        }
        case "copy":
        case "add": {
          number++;
          const copyKeys = copyStepKeys(ins, st, ctx, models, used, files);
          if (ins.link && st.key !== undefined) {
            push(copyKeys, ins.line);
            advance(twoKeys(["merge", st.key, copyKeys.key], ["merge", st.slow, copyKeys.slowKey]));
            push({ key: st.key!, slowKey: st.slow! }, `${ins.line} (link)`, true);
          } else {
            advance(copyKeys);
            push(copyKeys, ins.line);
          }
          break;
        }
      }
    }
    models.push(st);
    stageSteps.push(own);
    uses.push(used);
    steps.push(...own);
  }

  // What the last stage needs: its own steps, and those of every stage it uses, transitively.
  const needed = new Set<number>();
  const visit = (i: number) => {
    if (needed.has(i)) return;
    needed.add(i);
    for (const j of uses[i]!) visit(j);
  };
  visit(stages.length - 1);
  for (const i of needed) for (const step of stageSteps[i]!) step.needed = true;
  return steps;
}

function copyStepKeys(
  ins: Extract<PlannedInstruction, { kind: "copy" | "add" }>,
  st: StageModel,
  ctx: Visible,
  models: readonly StageModel[],
  used: Set<number>,
  files: StageFiles,
): { key: string; slowKey: string } {
  const dest = resolvePath(st.workdir, ins.dest);
  let sources: unknown[];
  let slowSources: unknown[];
  if (ins.from) {
    const stage = "stage" in ins.from ? ins.from.stage : undefined;
    if (stage !== undefined) used.add(stage);
    const cleaned = ins.sources.map(cleanSource);
    sources = [cleaned, stage !== undefined ? (models[stage]!.key ?? null) : IMAGE_KEY];
    const read = stage !== undefined ? files.stages[stage] : files.image;
    slowSources = [
      cleaned,
      ins.sources.map((s) =>
        readOf(read, s, {
          metadata: "owner-mtime",
          ...(ins.exclude !== undefined ? { exclude: ins.exclude } : {}),
        }),
      ),
    ];
  } else {
    sources = ins.sources.map((s) => [
      ins.parents ? s : cleanSource(s),
      selectionOf(ctx, s, {
        ...(ins.parents ? { parents: true } : {}),
        ...(ins.exclude !== undefined ? { exclude: ins.exclude } : {}),
      }) ?? "missing",
    ]);
    slowSources = sources;
  }
  const params = [
    ins.kind,
    dest,
    ins.chown ?? null,
    ins.chmod ?? null,
    ins.parents ?? false,
    ins.exclude ?? null,
  ];
  // A --link layer stands on nothing: the step before it is not part of its key.
  const base = ins.link ? null : (st.key ?? null);
  const slowBase = ins.link ? null : (st.slow ?? null);
  return twoKeys(["copy", base, params, sources], ["copy", slowBase, params, slowSources]);
}
