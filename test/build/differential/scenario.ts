/**
 * The differential build test's cases, as plain data (a failing case is saved as JSON and replayed
 * as it is): a build context, a Dockerfile of one to three stages, and a sequence of edits of both,
 * plus how the case is built (root or rootless, overlay or copying snapshots).
 *
 * Everything a case refers to is resolved where it is used, never when it is generated: a stage
 * named by `--from` is a number taken modulo the stages before it, an edit picks "the n-th file
 * there is" when it is applied. So every case is valid whatever fast-check shrinks out of it, and
 * a shrunk case still means something.
 *
 * RUN steps are deterministic (no dates, no random) and write what they observe into the image:
 * names, types, modes, owners, sizes and link counts (`stat`), and contents (`md5sum`), of the
 * directories the case copies into, so that a stale or wrong cached layer shows in the digest.
 */
import fc from "fast-check";

/** Every context file's mtime below SOURCE_DATE_EPOCH is kept by COPY; above it, layers clamp it. */
export const SOURCE_DATE_EPOCH = 946684800; // 2000-01-01
/** A kept mtime (1990), and two clamped ones (2010, 2011): an mtime edit goes between clamped ones. */
export const MTIMES = [631152000, 1262304000, 1293840000] as const;
export const CLAMPED_MTIMES = [MTIMES[1], MTIMES[2]] as const;

export type Mode = "root" | "rootless";
export type Snapshots = "overlay" | "copy";

/**
 * A file's content: text, `@large:<seed>:<bytes>` (made from the seed, a few MB), or
 * `@tar:<variant>` (a local tar for ADD to unpack).
 */
export type Content = string;

/** `uid`, `gid` (and a directory's `mtime`): only in a stage's files as the model reads them (model.ts). */
type Owned = { uid?: number; gid?: number };

export type Entry =
  | ({ kind: "file"; content: Content; mode: number; mtime: number } & Owned)
  | ({ kind: "dir"; mode: number; mtime?: number } & Owned)
  | ({ kind: "symlink"; target: string; mtime: number } & Owned)
  /** A second name of the file at `of` (a hard link). */
  | { kind: "hardlink"; of: string };

/** Path (relative, `/`-separated) → entry; every parent of an entry is a `dir` entry. */
export type Tree = Record<string, Entry>;

export type Base = { kind: "busybox" } | { kind: "scratch" } | { kind: "stage"; index: number };

export type Instruction =
  | { kind: "workdir"; path: string }
  | { kind: "env"; key: string; value: string }
  | { kind: "arg"; key: string; value?: string }
  | { kind: "user"; user: string }
  | {
      kind: "copy" | "add";
      sources: string[];
      dest: string;
      chown?: string;
      chmod?: string;
      link?: boolean;
      parents?: boolean;
      exclude?: string;
      /** A stage (modulo the stages before), or the busybox image. */
      from?: { stage: number } | { image: "busybox" };
    }
  | { kind: "run"; ops: RunOp[]; mounts: RunMount[] };

export type RunOp =
  | { op: "write"; path: string; text: string }
  | { op: "delete"; path: string }
  | { op: "rename"; from: string; to: string }
  | { op: "chmod"; path: string; mode: string }
  | { op: "file-to-dir"; path: string }
  | { op: "dir-to-file"; path: string }
  | { op: "cache-write"; text: string };

export type RunMount =
  | { type: "bind-context"; source: string }
  | { type: "bind-stage"; stage: number }
  | { type: "cache"; id: string };

export interface Stage {
  base: Base;
  instructions: Instruction[];
}

export interface Dockerfile {
  stages: Stage[];
}

export type Edit =
  | { edit: "content"; pick: number; content: Content }
  | { edit: "mode"; pick: number; mode: number }
  | { edit: "mtime"; pick: number }
  | { edit: "add"; path: string; entry: Entry }
  | { edit: "remove"; pick: number }
  | { edit: "file-to-dir"; pick: number }
  | { edit: "dir-to-file"; pick: number; content: Content }
  | { edit: "retarget"; pick: number; target: string }
  | { edit: "unlink"; pick: number }
  | { edit: "dockerignore"; patterns: string[] }
  | { edit: "dockerfile-replace"; stage: number; at: number; instruction: Instruction }
  | { edit: "dockerfile-insert"; stage: number; at: number; instruction: Instruction }
  | { edit: "dockerfile-remove"; stage: number; at: number };

export interface Scenario {
  mode: Mode;
  snapshots: Snapshots;
  context: Tree;
  dockerignore: string[];
  dockerfile: Dockerfile;
  edits: Edit[];
}

// ---------------------------------------------------------------------------------------------
// The pools everything is drawn from: small, so that edits and steps meet the same paths.

const TEXTS = ["a\n", "b\n", "hello\n", "", "v2\n"];
const LARGE = ["@large:1:3000000", "@large:2:3000000", "@large:1:2000001"];
const TARS = ["@tar:1", "@tar:2"];
const FILE_MODES = [0o644, 0o755, 0o600, 0o4755, 0o444, 0o000];
const DIR_MODES = [0o755, 0o700, 0o775];

/** Paths an edit may add (and the context may start with), with the kinds they may have. */
const EXTRA_PATHS = [
  "c.md",
  "src/util.txt",
  "src/lib/more.txt",
  "docs/guide.md",
  "empty",
  "logs/x.log",
  "logs/keep.log",
  "big.bin",
  "link-rel",
  "link-abs",
  "link-dangling",
  "hard",
  "new/deep/file.txt",
];
const LINK_TARGETS = ["a.txt", "b.txt", "src", "/a.txt", "/src/main.txt", "missing", "../outside"];

export const IGNORE_SETS: string[][] = [
  [],
  ["logs"],
  ["logs", "!logs/keep.log"],
  ["*.md"],
  ["**/*.log", "!logs/keep.log"],
  ["src/lib"],
  ["big.bin", "c.md"],
];

/** COPY/ADD sources from the context: files, directories, globs, links, the whole context. */
const CONTEXT_SOURCES = [
  // The whole context and whole directories, most often: then most edits reach a step.
  ".",
  ".",
  ".",
  "src",
  "src",
  "a.txt",
  "b.txt",
  "src",
  "src/",
  "src/*.txt",
  "*.txt",
  "s*/main.txt",
  "docs",
  "link-rel",
  "link-abs",
  "hard",
  ".",
  "logs",
  "empty",
  "big.bin",
  "data.tar",
];
/** Sources for --parents (a `/./` marks the pivot). */
const PARENTS_SOURCES = ["src/lib/deep.txt", "src/./lib", "*/main.txt", "docs/readme.md", "./src/lib"];
/**
 * Sources from another stage or the image: globs, so that an absent path copies nothing (an absent
 * directory before the glob fails the build, as in BuildKit).
 */
const STAGE_SOURCES = ["/app*", "/dst*", "/data*", "/tmp/obs*", "/etc/pass*"];
const DESTS = ["./", ".", "/app/", "/dst/", "/etc/", "sub/", "/dst/one"];
const WORKDIRS = ["/app", "/app/sub", "sub", "/etc", "/dst", "/"];
const RUN_PATHS = ["out.txt", "a.txt", "src", "sub", "/data/f", "/data", "/dst/one", "main.txt"];
const BIND_SOURCES = ["src", ".", "docs", "a.txt", "link-rel"];

/** The context every case starts from, before the generated extras. */
function coreContext(): Tree {
  return {
    "a.txt": { kind: "file", content: "a\n", mode: 0o644, mtime: MTIMES[0] },
    "b.txt": { kind: "file", content: "b\n", mode: 0o644, mtime: MTIMES[1] },
    src: { kind: "dir", mode: 0o755 },
    "src/main.txt": { kind: "file", content: "main\n", mode: 0o644, mtime: MTIMES[1] },
    "src/lib": { kind: "dir", mode: 0o755 },
    "src/lib/deep.txt": { kind: "file", content: "deep\n", mode: 0o644, mtime: MTIMES[0] },
    docs: { kind: "dir", mode: 0o755 },
    "docs/readme.md": { kind: "file", content: "readme\n", mode: 0o644, mtime: MTIMES[2] },
    "data.tar": { kind: "file", content: "@tar:1", mode: 0o644, mtime: MTIMES[1] },
    hard: { kind: "hardlink", of: "a.txt" },
    "link-rel": { kind: "symlink", target: "a.txt", mtime: MTIMES[1] },
    "link-abs": { kind: "symlink", target: "/src/main.txt", mtime: MTIMES[1] },
    "link-dangling": { kind: "symlink", target: "missing", mtime: MTIMES[2] },
  };
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const contentArb: fc.Arbitrary<Content> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...TEXTS) },
  { weight: 1, arbitrary: fc.constantFrom(...LARGE) },
  { weight: 1, arbitrary: fc.constantFrom(...TARS) },
);
const fileModeArb = fc.constantFrom(...FILE_MODES);
const mtimeArb = fc.constantFrom(...MTIMES);

/** An entry that may be added at `p`: its kind follows the path's name. */
function entryFor(p: string): fc.Arbitrary<Entry> {
  if (p.startsWith("link-")) {
    return fc.record({
      kind: fc.constant("symlink" as const),
      target:
        p === "link-dangling"
          ? fc.constant("missing")
          : p === "link-abs"
            ? fc.constant("/a.txt")
            : fc.constantFrom(...LINK_TARGETS),
      mtime: fc.constantFrom(...CLAMPED_MTIMES),
    });
  }
  if (p === "hard") return fc.constant({ kind: "hardlink" as const, of: "a.txt" });
  if (p === "empty")
    return fc.record({ kind: fc.constant("dir" as const), mode: fc.constantFrom(...DIR_MODES) });
  if (p === "big.bin") {
    return fc.record({
      kind: fc.constant("file" as const),
      content: fc.constantFrom(...LARGE),
      mode: fileModeArb,
      mtime: mtimeArb,
    });
  }
  return fc.record({
    kind: fc.constant("file" as const),
    content: contentArb,
    mode: fileModeArb,
    mtime: mtimeArb,
  });
}

const extraArb: fc.Arbitrary<[string, Entry]> = fc
  .constantFrom(...EXTRA_PATHS)
  .chain((p) => entryFor(p).map((e) => [p, e] as [string, Entry]));

export const contextArb: fc.Arbitrary<Tree> = fc
  .record({
    extras: fc.array(extraArb, { maxLength: 6 }),
    modes: fc.array(fc.tuple(fc.nat(), fileModeArb), { maxLength: 2 }),
  })
  .map(({ extras, modes }) => {
    const tree = coreContext();
    for (const [p, e] of extras) addEntry(tree, p, e);
    const files = Object.keys(tree).filter((p) => tree[p]!.kind === "file");
    for (const [pick, mode] of modes) {
      const entry = tree[files[pick % files.length]!];
      if (entry?.kind === "file") entry.mode = mode;
    }
    return tree;
  });

const stageRefArb = fc.nat({ max: 3 });

/**
 * The Dockerfile syntax a case may use: "latest" (everything tbuild builds), or "1.2", what
 * BuildKit 0.8's embedded frontend builds (test/oracle/differential.test.ts): no COPY --link,
 * --parents or --exclude, and --chmod in octal only. Nothing generated uses heredocs or
 * `${v%p}`-style expansions in either.
 */
export type Syntax = "latest" | "1.2";

function copyArbFor(syntax: Syntax): fc.Arbitrary<Instruction> {
  const newer = syntax === "latest";
  return fc
    .record(
      {
        kind: fc.constantFrom("copy" as const, "copy" as const, "add" as const),
        parents: newer ? fc.boolean() : fc.constant(false),
        sources: fc.array(fc.constantFrom(...CONTEXT_SOURCES), { minLength: 1, maxLength: 2 }),
        parentsSource: fc.constantFrom(...PARENTS_SOURCES),
        stageSource: fc.constantFrom(...STAGE_SOURCES),
        dest: fc.constantFrom(...DESTS),
        chown: fc.option(fc.constantFrom("1000:1000", "0:0", "nobody", "65534"), { nil: undefined }),
        chmod: fc.option(fc.constantFrom(...(newer ? ["755", "0600", "u+x,g-r"] : ["755", "0600"])), {
          nil: undefined,
        }),
        link: newer ? fc.boolean() : fc.constant(false),
        exclude: newer
          ? fc.option(fc.constantFrom("*.log", "lib", "*.md", "main.txt"), { nil: undefined })
          : fc.constant(undefined),
        from: fc.option(
          fc.oneof(
            { weight: 3, arbitrary: stageRefArb.map((stage) => ({ stage })) },
            { weight: 1, arbitrary: fc.constant({ image: "busybox" as const }) },
          ),
          { nil: undefined, freq: 4 },
        ),
      },
      { requiredKeys: ["kind", "parents", "sources", "parentsSource", "stageSource", "dest", "link"] },
    )
    .map((c): Instruction => {
      // ADD takes no --from.
      const from = c.kind === "copy" ? c.from : undefined;
      const sources = from ? [c.stageSource] : c.parents ? [c.parentsSource] : c.sources;
      // Several sources need a directory destination; --parents is kept to COPY from the context.
      const dest = sources.length > 1 && !c.dest.endsWith("/") ? "/dst/" : c.dest;
      return {
        kind: c.kind,
        sources,
        dest,
        ...(c.chown !== undefined ? { chown: c.chown } : {}),
        ...(c.chmod !== undefined ? { chmod: c.chmod } : {}),
        ...(c.link ? { link: true } : {}),
        ...(c.parents && !from && c.kind === "copy" ? { parents: true } : {}),
        ...(c.exclude !== undefined ? { exclude: c.exclude } : {}),
        ...(from ? { from } : {}),
      };
    });
}

const runOpArb: fc.Arbitrary<RunOp> = fc.oneof(
  fc.record({
    op: fc.constant("write" as const),
    path: fc.constantFrom(...RUN_PATHS),
    text: fc.constantFrom("w1", "w2"),
  }),
  fc.record({ op: fc.constant("delete" as const), path: fc.constantFrom(...RUN_PATHS) }),
  fc.record({
    op: fc.constant("rename" as const),
    from: fc.constantFrom(...RUN_PATHS),
    to: fc.constantFrom(...RUN_PATHS),
  }),
  fc.record({
    op: fc.constant("chmod" as const),
    path: fc.constantFrom(...RUN_PATHS),
    mode: fc.constantFrom("600", "4755", "0"),
  }),
  fc.record({ op: fc.constant("file-to-dir" as const), path: fc.constantFrom(...RUN_PATHS) }),
  fc.record({ op: fc.constant("dir-to-file" as const), path: fc.constantFrom(...RUN_PATHS) }),
  fc.record({ op: fc.constant("cache-write" as const), text: fc.constantFrom("c1", "c2") }),
);

const runMountArb: fc.Arbitrary<RunMount> = fc.oneof(
  fc.record({ type: fc.constant("bind-context" as const), source: fc.constantFrom(...BIND_SOURCES) }),
  fc.record({ type: fc.constant("bind-stage" as const), stage: stageRefArb }),
  fc.record({ type: fc.constant("cache" as const), id: fc.constantFrom("c", "d") }),
);

const runArb: fc.Arbitrary<Instruction> = fc.record({
  kind: fc.constant("run" as const),
  ops: fc.array(runOpArb, { maxLength: 3 }),
  mounts: fc.array(runMountArb, { maxLength: 1 }),
});

function instructionArbFor(syntax: Syntax): fc.Arbitrary<Instruction> {
  return fc.oneof(
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant("workdir" as const), path: fc.constantFrom(...WORKDIRS) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("env" as const),
        key: fc.constantFrom("A", "B"),
        value: fc.constantFrom("1", "2"),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record(
        {
          kind: fc.constant("arg" as const),
          key: fc.constantFrom("A", "V"),
          value: fc.constantFrom("x", "y"),
        },
        { requiredKeys: ["kind", "key"] },
      ),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("user" as const),
        user: fc.constantFrom("root", "1000", "nobody", "1000:1000"),
      }),
    },
    { weight: 5, arbitrary: copyArbFor(syntax) },
    { weight: 4, arbitrary: runArb },
  );
}

export const instructionArb = instructionArbFor("latest");

function stageArbFor(syntax: Syntax): fc.Arbitrary<Stage> {
  return fc.record({
    base: fc.oneof(
      { weight: 5, arbitrary: fc.constant({ kind: "busybox" as const }) },
      { weight: 1, arbitrary: fc.constant({ kind: "scratch" as const }) },
      { weight: 2, arbitrary: stageRefArb.map((index) => ({ kind: "stage" as const, index })) },
    ),
    instructions: fc.array(instructionArbFor(syntax), { minLength: 1, maxLength: 6 }),
  });
}

export const editArb: fc.Arbitrary<Edit> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ edit: fc.constant("content" as const), pick: fc.nat(), content: contentArb }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ edit: fc.constant("mode" as const), pick: fc.nat(), mode: fileModeArb }),
  },
  { weight: 2, arbitrary: fc.record({ edit: fc.constant("mtime" as const), pick: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom(...EXTRA_PATHS)
      .chain((p) => entryFor(p).map((entry): Edit => ({ edit: "add", path: p, entry }))),
  },
  { weight: 2, arbitrary: fc.record({ edit: fc.constant("remove" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ edit: fc.constant("file-to-dir" as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({ edit: fc.constant("dir-to-file" as const), pick: fc.nat(), content: contentArb }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      edit: fc.constant("retarget" as const),
      pick: fc.nat(),
      target: fc.constantFrom(...LINK_TARGETS),
    }),
  },
  { weight: 2, arbitrary: fc.record({ edit: fc.constant("unlink" as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      edit: fc.constant("dockerignore" as const),
      patterns: fc.constantFrom(...IGNORE_SETS),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      edit: fc.constant("dockerfile-replace" as const),
      stage: fc.nat(),
      at: fc.nat(),
      instruction: instructionArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      edit: fc.constant("dockerfile-insert" as const),
      stage: fc.nat(),
      at: fc.nat(),
      instruction: instructionArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ edit: fc.constant("dockerfile-remove" as const), stage: fc.nat(), at: fc.nat() }),
  },
);

/** Cases: `maxEdits` 0 for one build (no edits); `syntax` (default "latest") limits the Dockerfiles. */
export function scenarioArb(options: {
  maxEdits: number;
  modes?: Mode[];
  snapshots?: Snapshots[];
  syntax?: Syntax;
}): fc.Arbitrary<Scenario> {
  const syntax = options.syntax ?? "latest";
  return fc
    .record({
      mode: fc.constantFrom(...(options.modes ?? (["root", "rootless"] as Mode[]))),
      snapshots: fc.constantFrom(...(options.snapshots ?? (["overlay", "copy"] as Snapshots[]))),
      context: contextArb,
      dockerignore: fc.constantFrom(...IGNORE_SETS),
      dockerfile: fc.record({ stages: fc.array(stageArbFor(syntax), { minLength: 1, maxLength: 3 }) }),
      edits: fc.array(editArb, { minLength: Math.min(1, options.maxEdits), maxLength: options.maxEdits }),
    })
    .map((s) => (s.mode === "rootless" ? readableByOwner(s) : s));
}

/**
 * Rootless, tbuild runs as the context's owner, who cannot read a file of mode 0000 any more than
 * `docker build` could: such modes are made readable (a build that cannot read its context fails
 * with one clear error, which other tests check).
 */
function readableByOwner(s: Scenario): Scenario {
  const fix = (mode: number) => (mode & 0o400 ? mode : mode | 0o400);
  const context = structuredClone(s.context);
  for (const entry of Object.values(context)) if (entry.kind === "file") entry.mode = fix(entry.mode);
  const edits = s.edits.map((e): Edit => {
    if (e.edit === "mode") return { ...e, mode: fix(e.mode) };
    if (e.edit === "add" && e.entry.kind === "file")
      return { ...e, entry: { ...e.entry, mode: fix(e.entry.mode) } };
    return e;
  });
  return { ...s, context, edits };
}

// ---------------------------------------------------------------------------------------------
// Trees

/** Adds `entry` at `p`, with any missing parent directories (0755), replacing what was there. */
export function addEntry(tree: Tree, p: string, entry: Entry): void {
  removeEntry(tree, p);
  const parts = p.split("/");
  for (let i = 1; i < parts.length; i++) {
    const parent = parts.slice(0, i).join("/");
    const existing = tree[parent];
    if (existing?.kind !== "dir") {
      if (existing) removeEntry(tree, parent);
      tree[parent] = { kind: "dir", mode: 0o755 };
    }
  }
  if (entry.kind === "hardlink") {
    const of = tree[entry.of];
    // A link to nothing (its file removed) is a plain new file instead.
    if (of?.kind !== "file") {
      tree[p] = { kind: "file", content: "a\n", mode: 0o644, mtime: MTIMES[1] };
      return;
    }
  }
  tree[p] = structuredClone(entry);
}

/** Removes `p` and everything below it; a hard link to a removed file keeps the file's data. */
export function removeEntry(tree: Tree, p: string): void {
  for (const name of Object.keys(tree)) {
    if (name !== p && !name.startsWith(`${p}/`)) continue;
    const entry = tree[name]!;
    delete tree[name];
    if (entry.kind === "file") {
      // The first remaining link becomes the file; the others stay links to it.
      const links = Object.keys(tree)
        .filter((q) => {
          const e = tree[q]!;
          return e.kind === "hardlink" && e.of === name;
        })
        .sort();
      const [heir, ...rest] = links;
      if (heir !== undefined) {
        tree[heir] = { ...entry };
        for (const q of rest) tree[q] = { kind: "hardlink", of: heir };
      }
    }
  }
}

/** The file entry a path's data is in (itself, or what it is a hard link of). */
export function dataOf(
  tree: Tree,
  p: string,
): { path: string; entry: Extract<Entry, { kind: "file" }> } | undefined {
  const entry = tree[p];
  if (entry?.kind === "file") return { path: p, entry };
  if (entry?.kind === "hardlink") {
    const of = tree[entry.of];
    if (of?.kind === "file") return { path: entry.of, entry: of };
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Rendering a Dockerfile: what each instruction becomes in text, decided once for the runner and
// the model alike (`planDockerfile`).

export interface PlannedStage {
  name: string;
  /** The base: busybox, scratch or an earlier stage's index. */
  base: { kind: "busybox" } | { kind: "scratch" } | { kind: "stage"; index: number };
  /** Whether the stage's filesystem holds busybox (RUN can run, user names resolve). */
  hasShell: boolean;
  instructions: PlannedInstruction[];
}

/** An instruction as it is built: references resolved, and its line. */
export type PlannedInstruction =
  | (Extract<Instruction, { kind: "workdir" | "env" | "arg" | "user" }> & { line: string })
  | (Omit<Extract<Instruction, { kind: "copy" | "add" }>, "from"> & {
      from?: { stage: number } | { image: "busybox" };
      line: string;
    })
  | { kind: "run"; script: string; mounts: PlannedMount[]; line: string };

export type PlannedMount =
  | { type: "bind-context"; source: string; target: "/m" }
  | { type: "bind-stage"; stage: number; source: string; target: "/m" }
  | { type: "cache"; id: string; target: "/cache" };

/** What each RUN step records: under /tmp, which no step observes. */
const OBSERVED = ["/app", "/dst", "/data", "/m"];

/** Stages `i` can refer to by `ref` (modulo `i`), or undefined for the first stage. */
function stageRef(ref: number, i: number): number | undefined {
  return i === 0 ? undefined : ref % i;
}

export function planDockerfile(dockerfile: Dockerfile): PlannedStage[] {
  const planned: PlannedStage[] = [];
  dockerfile.stages.forEach((stage, i) => {
    const baseRef = stage.base.kind === "stage" ? stageRef(stage.base.index, i) : undefined;
    const base: PlannedStage["base"] =
      stage.base.kind === "stage"
        ? baseRef === undefined
          ? { kind: "busybox" }
          : { kind: "stage", index: baseRef }
        : stage.base;
    const hasShell = base.kind === "busybox" || (base.kind === "stage" && planned[base.index]!.hasShell);
    // A stage with a filesystem: one COPY --from it has something to copy.
    const nonEmpty = (index: number): boolean => {
      const s = planned[index]!;
      return (
        s.hasShell ||
        (s.base.kind === "stage" && nonEmpty(s.base.index)) ||
        s.instructions.some(
          (ins) => ins.kind === "copy" || ins.kind === "add" || (ins.kind === "workdir" && ins.path !== "/"),
        )
      );
    };
    let runs = 0;
    const instructions: PlannedInstruction[] = [];
    for (const ins of stage.instructions) {
      switch (ins.kind) {
        case "workdir":
          instructions.push({ ...ins, line: `WORKDIR ${ins.path}` });
          break;
        case "env":
          instructions.push({ ...ins, line: `ENV ${ins.key}=${ins.value}` });
          break;
        case "arg":
          instructions.push({
            ...ins,
            line: `ARG ${ins.key}${ins.value !== undefined ? `=${ins.value}` : ""}`,
          });
          break;
        case "user":
          // Without an /etc/passwd a name cannot be resolved: numeric ids only.
          {
            const user = hasShell ? ins.user : numericUser(ins.user);
            instructions.push({ kind: "user", user, line: `USER ${user}` });
          }
          break;
        case "copy":
        case "add": {
          let from: { stage: number } | { image: "busybox" } | undefined;
          if (ins.kind === "add") {
            from = undefined;
          } else if (ins.from && "stage" in ins.from) {
            const ref = stageRef(ins.from.stage, i);
            from = ref !== undefined && nonEmpty(ref) ? { stage: ref } : undefined;
          } else {
            from = ins.from;
          }
          const sources = ins.from && !from ? ["a.txt"] : ins.sources;
          // COPY --link with --chmod is copied as a plain COPY today: kept apart.
          const chmod = ins.link ? undefined : ins.chmod;
          // A user name needs an /etc/passwd in the destination, which a --link layer has not.
          const chown =
            ins.chown !== undefined && (!hasShell || ins.link) ? numericUser(ins.chown) : ins.chown;
          const dest = sources.length > 1 && !ins.dest.endsWith("/") ? "/dst/" : ins.dest;
          const planned: Extract<PlannedInstruction, { kind: "copy" | "add" }> = {
            kind: ins.kind,
            sources,
            dest,
            ...(chown !== undefined ? { chown } : {}),
            ...(chmod !== undefined ? { chmod } : {}),
            ...(ins.link ? { link: true } : {}),
            ...(ins.parents && !from ? { parents: true } : {}),
            ...(ins.exclude !== undefined ? { exclude: ins.exclude } : {}),
            ...(from ? { from } : {}),
            line: "",
          };
          const flags = [
            planned.from
              ? `--from=${"stage" in planned.from ? `s${planned.from.stage}` : planned.from.image}`
              : "",
            planned.chown !== undefined ? `--chown=${planned.chown}` : "",
            planned.chmod !== undefined ? `--chmod=${planned.chmod}` : "",
            planned.link ? "--link" : "",
            planned.parents ? "--parents" : "",
            planned.exclude !== undefined ? `--exclude=${planned.exclude}` : "",
          ].filter(Boolean);
          planned.line = [ins.kind.toUpperCase(), ...flags, ...sources, dest].join(" ");
          instructions.push(planned);
          break;
        }
        case "run": {
          if (!hasShell) break; // Nothing to run a command with.
          runs++;
          const mounts: PlannedMount[] = [];
          for (const m of ins.mounts) {
            if (m.type === "bind-context")
              mounts.push({ type: "bind-context", source: m.source, target: "/m" });
            else if (m.type === "cache") mounts.push({ type: "cache", id: m.id, target: "/cache" });
            else {
              const ref = stageRef(m.stage, i);
              if (ref === undefined || !nonEmpty(ref)) continue;
              mounts.push({
                type: "bind-stage",
                stage: ref,
                source: planned[ref]!.hasShell ? "/tmp" : "/",
                target: "/m",
              });
            }
          }
          const hasCache = mounts.some((m) => m.type === "cache");
          const script = [
            ...ins.ops.filter((op) => op.op !== "cache-write" || hasCache).map(shellOp),
            `${OBSERVE_SCRIPT} > /tmp/obs-${i}-${runs} 2>&1`,
            "true",
          ].join("; ");
          const flags = mounts.map((m) =>
            m.type === "bind-context"
              ? `--mount=type=bind,source=${m.source},target=${m.target}`
              : m.type === "bind-stage"
                ? `--mount=type=bind,from=s${m.stage},source=${m.source},target=${m.target}`
                : `--mount=type=cache,id=${m.id},target=${m.target}`,
          );
          instructions.push({ kind: "run", script, mounts, line: ["RUN", ...flags, script].join(" ") });
          break;
        }
      }
    }
    planned.push({ name: `s${i}`, base, hasShell, instructions });
  });
  return planned;
}

function numericUser(user: string): string {
  return user === "root" ? "0" : user === "nobody" ? "65534" : user;
}

function shellOp(op: RunOp): string {
  switch (op.op) {
    case "write":
      return `mkdir -p $(dirname ${op.path}) 2>/dev/null; echo ${op.text} > ${op.path} 2>/dev/null`;
    case "delete":
      return `rm -rf ${op.path}`;
    case "rename":
      return `mv ${op.from} ${op.to} 2>/dev/null`;
    case "chmod":
      return `chmod ${op.mode} ${op.path} 2>/dev/null`;
    case "file-to-dir":
      return `rm -f ${op.path} 2>/dev/null; mkdir -p ${op.path}/d 2>/dev/null`;
    case "dir-to-file":
      return `rm -rf ${op.path} 2>/dev/null; echo f > ${op.path} 2>/dev/null`;
    case "cache-write":
      // The cache's contents differ between stores: only written, never let into the layer.
      return `echo ${op.text} >> /cache/log 2>/dev/null`;
  }
}

/**
 * Lists the observed directories and the working directory: for each entry its name, type, mode,
 * owner, and for non-directories its size and link count; and each regular file's md5sum.
 * Directories' sizes and link counts depend on the file system's history, not on the image.
 */
export const OBSERVE_SCRIPT = observe();

function observe(): string {
  const dirs = [...OBSERVED, '"$PWD"'].join(" ");
  return (
    `{ for d in ${dirs}; do [ "$d" != / ] && [ -e "$d" ] && find "$d" -xdev; done; } 2>/dev/null | sort -u | ` +
    "grep -v -E '^/etc/(hosts|hostname|resolv.conf|passwd|group)$' | while read f; do " +
    `if [ -d "$f" ] && [ ! -L "$f" ]; then stat -c '%n %F %a %u:%g' "$f"; ` +
    `else stat -c '%n %F %a %u:%g %s %h' "$f"; [ -f "$f" ] && [ ! -L "$f" ] && md5sum "$f"; fi; done`
  );
}

/** The Dockerfile's text. */
export function renderDockerfile(planned: readonly PlannedStage[]): string {
  const lines: string[] = [];
  for (const stage of planned) {
    const base = stage.base.kind === "stage" ? `s${stage.base.index}` : stage.base.kind;
    lines.push(`FROM ${base} AS ${stage.name}`);
    for (const ins of stage.instructions) lines.push(ins.line);
  }
  return `${lines.join("\n")}\n`;
}
