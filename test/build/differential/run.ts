/**
 * Runs one differential case: builds the context in a warm store, edit after edit, and after each
 * build the same context in an empty store (a copy of a template store holding only busybox),
 * both with the same SOURCE_DATE_EPOCH, as root or as the rootless user, with overlay or copying
 * snapshots. After each build:
 *
 * - the warm and the empty store agree: both fail, or both give the same manifest digest;
 * - the steps the warm build ran and those it took from its cache are exactly those the model
 *   (model.ts) predicts: a step is cached iff its key was built before in this store;
 * - the same Dockerfile and the same step keys as an earlier build (an edit no step reads, or one
 *   undone later) give the image that build gave.
 *
 * A disagreement throws an error that shows the Dockerfile, the edits so far and the steps that
 * differ, for fast-check to shrink and print.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import * as tar from "tar";
import { applyContextEdit, contextDrift, type Owner, syncContext } from "./context.js";
import { type ModelStep, modelSteps, type StageFiles } from "./model.js";
import {
  type Dockerfile,
  type Edit,
  type Instruction,
  OBSERVE_SCRIPT,
  type PlannedStage,
  planDockerfile,
  renderDockerfile,
  type Scenario,
  SOURCE_DATE_EPOCH,
  type Tree,
} from "./scenario.js";

export const ROOTLESS_USER = "tbuild-test";

/** What the cases run so far did: how much of the property they exercised. */
export const stats = { rounds: 0, failedBuilds: 0, stepsRun: 0, stepsCached: 0, stepsCachedByContent: 0 };

export interface RunnerSetup {
  /** A world-readable directory each case makes its own directory in. */
  work: string;
  /** A store holding only busybox (owned by root), copied for each new store. */
  template: string;
  tbuildBin: string;
}

interface BuildOutcome {
  ok: boolean;
  digest?: string;
  ran: StepRef[];
  cached: StepRef[];
  output: string;
}

interface StepRef {
  stage: string | undefined;
  number: number;
  link: boolean;
  text: string;
}

let counter = 0;

function userIds(name: string): Owner {
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  return { uid, gid };
}

/** The plain progress's steps: `#N [s0 2/5] TEXT` named, then `#N DONE` or `#N CACHED`. */
export function parseProgress(output: string): { ran: StepRef[]; cached: StepRef[] } {
  const names = new Map<string, StepRef>();
  const ran: StepRef[] = [];
  const cached: StepRef[] = [];
  for (const line of output.split("\n")) {
    const named = /^#(\d+) \[(?:(\S+) +)?\s*(\d+)\/\d+\] (.*)$/.exec(line);
    if (named && named[2] !== "internal") {
      const text = named[4]!;
      names.set(named[1]!, {
        stage: named[2],
        number: Number(named[3]),
        link: text.endsWith(" (link)"),
        text,
      });
      continue;
    }
    const done = /^#(\d+) (DONE|CACHED)\b/.exec(line);
    const ref = done ? names.get(done[1]!) : undefined;
    if (ref) (done![2] === "DONE" ? ran : cached).push(ref);
  }
  return { ran, cached };
}

export async function runScenario(
  scenario: Scenario,
  setup: RunnerSetup,
  log: (line: string) => void = () => {},
): Promise<void> {
  const caseDir = path.join(setup.work, `case-${process.pid}-${++counter}`);
  const rootless = scenario.mode === "rootless";
  const owner: Owner = rootless ? userIds(ROOTLESS_USER) : { uid: 0, gid: 0 };
  mkdirSync(caseDir, { recursive: true });
  chownSync(caseDir, owner.uid, owner.gid);
  try {
    await runIn(caseDir, scenario, setup, owner, log);
  } finally {
    for (const point of mountsUnder(caseDir).reverse()) spawnSync("umount", ["-l", point]);
    rmSync(caseDir, { recursive: true, force: true });
  }
}

/** The context a case builds: its files, with the Dockerfile and the .dockerignore in it. */
export function contextTree(files: Tree, planned: readonly PlannedStage[], ignore: readonly string[]): Tree {
  return {
    ...files,
    Dockerfile: { kind: "file", content: renderDockerfile(planned), mode: 0o644, mtime: 1262304000 },
    ".dockerignore": {
      kind: "file",
      content: ignore.map((p) => `${p}\n`).join(""),
      mode: 0o644,
      mtime: 1262304000,
    },
  };
}

async function runIn(
  caseDir: string,
  scenario: Scenario,
  setup: RunnerSetup,
  owner: Owner,
  log: (line: string) => void,
) {
  const ctxDir = path.join(caseDir, "ctx");
  mkdirSync(ctxDir);
  chownSync(ctxDir, owner.uid, owner.gid);
  const config = path.join(caseDir, "config.toml");
  writeFileSync(config, `[worker]\nsnapshotter = "${scenario.snapshots}"\n`);
  const warm = newStore(caseDir, "warm", setup, owner);

  let dockerfile: Dockerfile = structuredClone(scenario.dockerfile);
  let ignore = [...scenario.dockerignore];
  let tree: Tree = {};
  let files: Tree = scenario.context;
  const built = new Set<string>();
  /** The image each Dockerfile and set of step keys gave (see below). */
  const images = new Map<string, string>();
  const history: string[] = [];

  /** A context whose Dockerfile is `FROM busybox`, for the image's files. */
  let imageCtxDir: string | undefined;
  const imageCtx = () => {
    if (imageCtxDir === undefined) {
      imageCtxDir = path.join(caseDir, "image-ctx");
      mkdirSync(imageCtxDir);
      writeFileSync(path.join(imageCtxDir, "Dockerfile"), "FROM busybox\n");
      execFileSync("chmod", ["-R", "a+rX", imageCtxDir]);
    }
    return imageCtxDir;
  };

  for (let round = 0; round <= scenario.edits.length; round++) {
    const edit = round === 0 ? undefined : scenario.edits[round - 1]!;
    if (edit) {
      if (edit.edit === "dockerignore") ignore = [...edit.patterns];
      else if (
        edit.edit === "dockerfile-insert" ||
        edit.edit === "dockerfile-replace" ||
        edit.edit === "dockerfile-remove"
      )
        dockerfile = applyDockerfileEdit(dockerfile, edit);
      else files = applyContextEdit(files, edit);
      history.push(JSON.stringify(edit));
    }
    const planned = planDockerfile(dockerfile);
    const next = contextTree(files, planned, ignore);
    syncContext(ctxDir, tree, next, owner);
    tree = next;
    const drift = contextDrift(ctxDir, tree);
    if (drift.length > 0) throw new Error(`the test's context is not its tree: ${drift.join("; ")}`);

    const warmBuild = build(scenario, setup, warm, ctxDir, config, caseDir);
    const cold = newStore(caseDir, `cold-${round}`, setup, owner);
    const coldBuild = build(scenario, setup, cold, ctxDir, config, caseDir);
    // The files of the stages steps read, from the empty store's build (whose exports change
    // nothing the warm store's steps are compared with).
    const stageFiles = exportStageFiles(planned, (target) =>
      exportFiles(scenario, setup, cold, target === undefined ? imageCtx() : ctxDir, config, caseDir, target),
    );
    const steps = modelSteps(planned, tree, ignore, stageFiles);
    log(
      `round ${round}${edit ? ` ${JSON.stringify(edit)}` : ""}: warm ${warmBuild.ok ? warmBuild.digest : "failed"}, ` +
        `${warmBuild.ran.length} ran, ${warmBuild.cached.length} cached` +
        (warmBuild.ok ? "" : ` (${warmBuild.output.split("\n").find((l) => l.startsWith("ERROR")) ?? "?"})`),
    );
    if (round === 0) log(abbreviate(renderDockerfile(planned)));

    stats.rounds++;
    if (!warmBuild.ok) stats.failedBuilds++;
    stats.stepsRun += warmBuild.ran.length;
    stats.stepsCached += warmBuild.cached.length;
    const problems: string[] = [];
    if (warmBuild.ok !== coldBuild.ok) {
      problems.push(
        `the warm store ${warmBuild.ok ? "built" : "failed"}, the empty store ${coldBuild.ok ? "built" : "failed"}:\n` +
          `${lastLines(warmBuild.ok ? coldBuild.output : warmBuild.output)}`,
      );
    } else if (warmBuild.ok && warmBuild.digest !== coldBuild.digest) {
      problems.push(
        `the warm store built ${warmBuild.digest}, the empty store ${coldBuild.digest}; their files (warm, empty):\n` +
          treeDifference(scenario, setup, warm, cold, ctxDir, config, caseDir),
      );
    }
    rmSync(cold, { recursive: true, force: true });
    problems.push(...compareSteps(steps, built, warmBuild));
    // Cached by the second key alone: a stage it reads changed, but not in what it reads.
    for (const ref of warmBuild.cached) {
      const step = matching(steps, ref)[0];
      if (step && !built.has(step.key) && built.has(step.slowKey)) stats.stepsCachedByContent++;
    }
    // The same Dockerfile and the same keys (an edit no step reads, or one undone later) give the
    // image they gave before: the config comes from the Dockerfile, the layers from the keys.
    const text = renderDockerfile(planned);
    const signature = JSON.stringify([text, steps.filter((s) => s.needed).map((s) => s.slowKey)]);
    const before = images.get(signature);
    if (warmBuild.ok && before !== undefined && before !== warmBuild.digest) {
      problems.push(
        `the same Dockerfile and step keys as before, but another image: ${before} → ${warmBuild.digest}`,
      );
    }
    if (problems.length > 0) {
      throw new Error(
        [
          `round ${round} of ${scenario.mode}/${scenario.snapshots}: ${problems.join("\n")}`,
          `edits so far:\n  ${history.join("\n  ") || "(none)"}`,
          `.dockerignore: ${JSON.stringify(ignore)}`,
          `Dockerfile:\n${abbreviate(renderDockerfile(planned))}`,
          `warm build output:\n${abbreviate(lastLines(warmBuild.output, 60))}`,
        ].join("\n"),
      );
    }
    // What ran is recorded in the store under both keys, even when the build failed later; a
    // step found under its second key is recorded under its first.
    const record = (s: ModelStep) => {
      built.add(s.key);
      built.add(s.slowKey);
    };
    if (warmBuild.ok) {
      for (const s of steps) if (s.needed) record(s);
    } else {
      for (const ref of [...warmBuild.ran, ...warmBuild.cached])
        for (const s of matching(steps, ref)) record(s);
    }
    if (warmBuild.ok && warmBuild.digest !== undefined && before === undefined)
      images.set(signature, warmBuild.digest);
  }
}

/** Messages show each RUN's observation script as `<observe>`. */
function abbreviate(text: string): string {
  return text.replaceAll(OBSERVE_SCRIPT, "<observe>");
}

/**
 * The built files of both stores (exported again, from their caches), line by line where they
 * differ: path, type, mode, owner, size, link count, content digest.
 */
function treeDifference(
  scenario: Scenario,
  setup: RunnerSetup,
  warm: string,
  cold: string,
  ctxDir: string,
  config: string,
  caseDir: string,
): string {
  const listings = [warm, cold].map((store) => {
    const dest = path.join(caseDir, `export-${path.basename(store)}`);
    const result = build(scenario, setup, store, ctxDir, config, caseDir, ["-o", `type=local,dest=${dest}`]);
    if (!result.ok) return [`(export failed: ${lastLines(result.output, 3)})`];
    const lines: string[] = [];
    const walk = (dir: string, rel: string) => {
      for (const name of readdirSync(dir).sort()) {
        const full = path.join(dir, name);
        const p = `${rel}/${name}`;
        if (p === "/bin" || p === "/proc" || p === "/dev") continue;
        const st = lstatSync(full);
        const mode = (st.mode & 0o7777).toString(8);
        if (st.isDirectory()) {
          lines.push(`${p} dir ${mode} ${st.uid}:${st.gid}`);
          walk(full, p);
        } else if (st.isSymbolicLink()) {
          lines.push(`${p} symlink -> ${readlinkSync(full)}`);
        } else {
          const text = readFileSync(full);
          const digest = createHash("sha256").update(text).digest("hex").slice(0, 12);
          lines.push(`${p} file ${mode} ${st.uid}:${st.gid} ${st.size} nlink ${st.nlink} ${digest}`);
          // Observations are shown whole: they say what the steps saw.
          if (/^\/tmp\/obs-/.test(p))
            for (const l of text.toString().split("\n")) if (l) lines.push(`  ${p}: ${l}`);
        }
      }
    };
    walk(dest, "");
    rmSync(dest, { recursive: true, force: true });
    return lines;
  });
  const [a, b] = listings as [string[], string[]];
  const inB = new Set(b);
  const inA = new Set(a);
  const out = [
    ...a.filter((l) => !inB.has(l)).map((l) => `- ${l}`),
    ...b.filter((l) => !inA.has(l)).map((l) => `+ ${l}`),
  ];
  return (
    out.slice(0, 60).join("\n") || "(the same files: the difference is in the image's metadata or layering)"
  );
}

function lastLines(text: string, n = 30): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

function matching(steps: readonly ModelStep[], ref: StepRef): ModelStep[] {
  return steps.filter(
    (s) =>
      (ref.stage === undefined || s.stage === ref.stage) && s.number === ref.number && s.link === ref.link,
  );
}

/** The model's prediction against what the warm build did. */
function compareSteps(
  steps: readonly ModelStep[],
  built: ReadonlySet<string>,
  outcome: BuildOutcome,
): string[] {
  const problems: string[] = [];
  const single = new Set(steps.map((s) => s.stage)).size === 1;
  const keyOfRef = (ref: StepRef): ModelStep | undefined => {
    const found = matching(steps, ref).filter((s) => single || s.stage === ref.stage);
    return found[0];
  };
  const cachedBefore = (s: ModelStep) => built.has(s.key) || built.has(s.slowKey);
  // Two steps of this build with one second key (and other first keys), neither built before:
  // whichever reaches it second may find the first's result, or both run at once.
  const sharesSecondKey = (s: ModelStep) =>
    steps.some((o) => o.needed && o.key !== s.key && o.slowKey === s.slowKey && !cachedBefore(o));
  const ranSteps = new Map<string, ModelStep>();
  const cachedSteps = new Map<string, ModelStep>();
  for (const [refs, into] of [
    [outcome.ran, ranSteps],
    [outcome.cached, cachedSteps],
  ] as const) {
    for (const ref of refs) {
      const step = keyOfRef(ref);
      if (!step) {
        if (!ref.text.startsWith("FROM "))
          problems.push(`tbuild reported a step the model does not know: ${ref.text}`);
        continue;
      }
      into.set(step.key, step);
    }
  }
  for (const step of ranSteps.values()) {
    if (cachedBefore(step)) problems.push(`ran, but the model has it cached: ${step.text}`);
  }
  for (const step of cachedSteps.values()) {
    if (!cachedBefore(step) && !sharesSecondKey(step))
      problems.push(`cached, but the model has it run: ${step.text}`);
  }
  if (outcome.ok) {
    for (const step of steps) {
      if (!step.needed || ranSteps.has(step.key) || cachedSteps.has(step.key)) continue;
      problems.push(
        `the model has it ${cachedBefore(step) ? "cached" : "run"}, tbuild reported neither: ${step.text}`,
      );
    }
  }
  return problems;
}

/**
 * The files of every stage a step reads (COPY --from, a bind mount of a stage) and of the image
 * when a COPY reads it, each exported by `exportOf` (the stage's name, or undefined for busybox).
 */
function exportStageFiles(
  planned: readonly PlannedStage[],
  exportOf: (target: string | undefined) => Tree | undefined,
): StageFiles {
  const read = new Set<number>();
  let image = false;
  for (const stage of planned) {
    for (const ins of stage.instructions) {
      if ((ins.kind === "copy" || ins.kind === "add") && ins.from) {
        if ("stage" in ins.from) read.add(ins.from.stage);
        else image = true;
      }
      if (ins.kind === "run") for (const m of ins.mounts) if (m.type === "bind-stage") read.add(m.stage);
    }
  }
  return {
    stages: planned.map((stage, i) => (read.has(i) ? exportOf(stage.name) : undefined)),
    image: image ? exportOf(undefined) : undefined,
  };
}

/** A stage's files (or, without a target, the image's) as a tree: undefined when it does not build. */
function exportFiles(
  scenario: Scenario,
  setup: RunnerSetup,
  store: string,
  ctxDir: string,
  config: string,
  caseDir: string,
  target: string | undefined,
): Tree | undefined {
  const file = path.join(caseDir, "stage-files.tar");
  rmSync(file, { force: true });
  const output = [...(target !== undefined ? ["--target", target] : []), "-o", `type=tar,dest=${file}`];
  if (!build(scenario, setup, store, ctxDir, config, caseDir, output).ok) return undefined;
  const tree: Tree = {};
  const clean = (p: string) => p.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
  tar.t({
    file,
    sync: true,
    onReadEntry: (entry) => {
      const name = clean(entry.path);
      const chunks: Buffer[] = [];
      entry.on("data", (chunk: Buffer) => chunks.push(chunk));
      entry.on("end", () => {
        if (name === "") return;
        const owned = {
          mode: (entry.mode ?? 0) & 0o7777,
          uid: entry.uid ?? 0,
          gid: entry.gid ?? 0,
          mtime: Math.floor((entry.mtime?.getTime() ?? 0) / 1000),
        };
        if (entry.type === "Directory") tree[name] = { kind: "dir", ...owned };
        else if (entry.type === "SymbolicLink")
          tree[name] = { kind: "symlink", target: entry.linkpath ?? "", ...owned };
        else if (entry.type === "Link") tree[name] = { kind: "hardlink", of: clean(entry.linkpath ?? "") };
        else if (entry.type === "File" || entry.type === "OldFile" || entry.type === "ContiguousFile") {
          const digest = createHash("sha256").update(Buffer.concat(chunks)).digest("hex");
          tree[name] = { kind: "file", content: `@sha256:${digest}`, ...owned };
        } else {
          // FIFOs and devices: their type and numbers stand for their content.
          const special = `@${entry.type}:${entry.header.devmaj ?? 0}:${entry.header.devmin ?? 0}`;
          tree[name] = { kind: "file", content: special, ...owned };
        }
      });
    },
  });
  rmSync(file, { force: true });
  return tree;
}

function newStore(caseDir: string, name: string, setup: RunnerSetup, owner: Owner): string {
  const store = path.join(caseDir, name);
  execFileSync("cp", ["-a", setup.template, store]);
  if (owner.uid !== 0) execFileSync("chown", ["-R", `${owner.uid}:${owner.gid}`, store]);
  return store;
}

function build(
  scenario: Scenario,
  setup: RunnerSetup,
  store: string,
  ctxDir: string,
  config: string,
  caseDir: string,
  output: string[] = ["-t", "differential:latest"],
): BuildOutcome {
  const metadata = path.join(caseDir, `metadata-${path.basename(store)}.json`);
  rmSync(metadata, { force: true });
  const home =
    scenario.mode === "rootless"
      ? execFileSync("getent", ["passwd", ROOTLESS_USER], { encoding: "utf8" }).split(":")[5]!
      : (process.env.HOME ?? "/");
  const env = [
    `PATH=${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
    `HOME=${home}`,
    `TBUILD_ROOT=${store}`,
    `TBUILD_CONFIG=${config}`,
    `SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}`,
  ];
  const command = [
    "env",
    "-i",
    ...env,
    setup.tbuildBin,
    "build",
    "--progress=plain",
    "--metadata-file",
    metadata,
    ...output,
    ctxDir,
  ];
  const argv = scenario.mode === "rootless" ? ["runuser", "-u", ROOTLESS_USER, "--", ...command] : command;
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", maxBuffer: 64 << 20 });
  const printed = `${result.stdout ?? ""}${result.stderr ?? ""}`;
  const { ran, cached } = parseProgress(result.stderr ?? "");
  if (result.status !== 0) return { ok: false, ran, cached, output: printed };
  const digest = (JSON.parse(readFileSync(metadata, "utf8")) as Record<string, string>)[
    "containerimage.digest"
  ];
  return { ok: true, ...(digest ? { digest } : {}), ran, cached, output: printed };
}

/** Mount points under `dir` in this mount namespace. */
function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((point) => point === dir || point.startsWith(`${dir}/`));
}

function applyDockerfileEdit(
  dockerfile: Dockerfile,
  edit: Extract<Edit, { edit: `dockerfile-${string}` }>,
): Dockerfile {
  const next = structuredClone(dockerfile);
  const stage = next.stages[edit.stage % next.stages.length]!;
  const list: Instruction[] = stage.instructions;
  if (edit.edit === "dockerfile-insert") list.splice(edit.at % (list.length + 1), 0, edit.instruction);
  else if (list.length === 0) return next;
  else if (edit.edit === "dockerfile-replace") list[edit.at % list.length] = edit.instruction;
  else list.splice(edit.at % list.length, 1);
  return next;
}
