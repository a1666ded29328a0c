/**
 * The fast path of a context rebuild: the previous source snapshot updated in place
 * (worker/ops/source-snapshot.ts) must be exactly the snapshot an empty store writes whole, for
 * any context and any edit. Random contexts and edits (the differential build test's generators)
 * are built in one warm store, edit after edit, and each time in an empty store; the two
 * snapshots, which later COPY and RUN steps read, are compared entry by entry: type, owner,
 * permission bits, mtime, size, link count, content and link target. Root and rootless.
 */
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
} from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { applyContextEdit, syncContext } from "../build/differential/context.js";
import { contextArb, editArb, type Tree } from "../build/differential/scenario.js";
import { tempDirs } from "../helpers/temp.js";
import { CONTEXT_EDITS, describeTree, type Mode, ownerOf, tbuildIn } from "./in-place.js";

const tempDir = tempDirs();
const DOCKERFILE = "FROM scratch\nCOPY . /ctx/\n";

let work: string;
beforeAll(() => {
  work = tempDir("snapshot-update");
  chmodSync(work, 0o755);
});

function build(mode: Mode, store: string, ctx: string, extra: string[] = []): void {
  const result = tbuildIn(mode, store, ["build", "-q", ...extra, ctx]);
  if (result.status !== 0) throw new Error(`tbuild build failed: ${result.stderr}`);
}

/**
 * The store's snapshot of its one source (the context), as its record names it; none when every
 * build of it was abandoned (a context with hard links is unpacked from its tar instead).
 */
function sourceSnapshot(store: string): string | undefined {
  const records = path.join(store, "snapshots", "sources");
  const names = existsSync(records) ? readdirSync(records).filter((n) => n.endsWith(".json")) : [];
  if (names.length === 0) return undefined;
  expect(names).toHaveLength(1);
  const { layer } = JSON.parse(readFileSync(path.join(records, names[0]!), "utf8")) as { layer: string };
  return path.join(store, "snapshots", "layers", layer.split(":")[1]!);
}

/** Times in whole seconds. */
function seconds(mtimeMs: number): string {
  return String(Math.floor(mtimeMs / 1000));
}

describe.each(["root", "rootless"] as const)("a context snapshot updated in place (%s)", (mode) => {
  it("is the snapshot an empty store writes, after any edits", async () => {
    const owner = ownerOf(mode);
    let cases = 0;
    let updatedInPlace = 0;
    await fc.assert(
      fc.asyncProperty(
        // Mostly without hard links: a context holding one is never snapshotted (nor updated).
        fc
          .tuple(contextArb, fc.nat({ max: 3 }))
          .map(([tree, keep]) =>
            keep === 0
              ? tree
              : Object.fromEntries(Object.entries(tree).filter(([, e]) => e.kind !== "hardlink")),
          ),
        fc.array(
          editArb.filter((e) => CONTEXT_EDITS.has(e.edit)),
          { minLength: 1, maxLength: 4 },
        ),
        async (context, edits) => {
          const caseDir = path.join(work, `case-${mode}-${++cases}`);
          mkdirSync(caseDir);
          chownSync(caseDir, owner.uid, owner.gid);
          try {
            const ctx = path.join(caseDir, "ctx");
            mkdirSync(ctx);
            chownSync(ctx, owner.uid, owner.gid);
            const dockerfile: Tree = {
              Dockerfile: { kind: "file", content: DOCKERFILE, mode: 0o644, mtime: 1262304000 },
            };
            let tree: Tree = {};
            let files = context;
            const warm = path.join(caseDir, "warm");
            for (let round = 0; round <= edits.length; round++) {
              if (round > 0) files = applyContextEdit(files, edits[round - 1]!);
              const next = { ...files, ...dockerfile };
              syncContext(ctx, tree, next, owner);
              tree = next;
              const previous = round > 0 ? sourceSnapshot(warm) : undefined;
              const before = previous && existsSync(previous) ? lstatSync(previous).ino : undefined;
              build(mode, warm, ctx);
              const cold = path.join(caseDir, `cold-${round}`);
              build(mode, cold, ctx);
              // An empty store writes a snapshot unless the tar holds what a snapshot cannot (a
              // hard link). The warm store wrote one of the same tar unless its context step was
              // cached (an edit of mtimes only, or one undone), which leaves its last one as it was.
              const fresh = sourceSnapshot(cold);
              const updated = sourceSnapshot(warm);
              if (
                fresh !== undefined &&
                updated !== undefined &&
                path.basename(updated) === path.basename(fresh)
              ) {
                if (before !== undefined && lstatSync(updated).ino === before) updatedInPlace++;
                expect(
                  describeTree(updated, seconds),
                  `after edits ${JSON.stringify(edits.slice(0, round))}`,
                ).toEqual(describeTree(fresh, seconds));
              }
              rmSync(cold, { recursive: true, force: true });
            }
          } finally {
            rmSync(caseDir, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: Number(process.env.SNAPSHOT_UPDATE_RUNS ?? 4) },
    );
    // The property is about the fast path: the random cases must have taken it.
    expect(updatedInPlace).toBeGreaterThan(0);
  }, 600_000);

  it("gives the image an empty store gives when the earlier snapshot is older than SOURCE_DATE_EPOCH", () => {
    // COPY . /ctx/ gives /ctx the snapshot root's times, which the layer clamps to the epoch: an
    // updated snapshot's root must be as new as a new snapshot's, not as old as the first build.
    const owner = ownerOf(mode);
    const caseDir = path.join(work, `epoch-${mode}`);
    const ctx = path.join(caseDir, "ctx");
    mkdirSync(ctx, { recursive: true });
    execFileSync("chown", ["-R", `${owner.uid}:${owner.gid}`, caseDir]);
    const files: Tree = {
      Dockerfile: { kind: "file", content: DOCKERFILE, mode: 0o644, mtime: 1262304000 },
      sub: { kind: "dir", mode: 0o755 },
      "sub/a.txt": { kind: "file", content: "a\n", mode: 0o644, mtime: 1262304000 },
    };
    syncContext(ctx, {}, files, owner);
    const warm = path.join(caseDir, "warm");
    build(mode, warm, ctx);
    // As if that build ran in 2001.
    const long = new Date("2001-01-01T00:00:00Z");
    utimesSync(sourceSnapshot(warm)!, long, long);
    // An edit below the root, which leaves the root's own entries as they were.
    const next = {
      ...files,
      "sub/a.txt": { kind: "file" as const, content: "edited\n", mode: 0o644, mtime: 1262304000 },
    };
    syncContext(ctx, files, next, owner);
    const digest = (store: string) => {
      const metadata = path.join(caseDir, `${path.basename(store)}.json`);
      build(mode, store, ctx, ["--build-arg", "SOURCE_DATE_EPOCH=1262304000", "--metadata-file", metadata]);
      return JSON.parse(readFileSync(metadata, "utf8"))["containerimage.digest"] as string;
    };
    expect(digest(warm)).toBe(digest(path.join(caseDir, "fresh")));
  }, 120_000);

  it("writes only the edited file of a large context, keeping the others' inodes", () => {
    const owner = ownerOf(mode);
    const caseDir = path.join(work, `large-${mode}`);
    const ctx = path.join(caseDir, "ctx");
    mkdirSync(path.join(ctx, "src"), { recursive: true });
    const files: Tree = {};
    for (let i = 0; i < 300; i++)
      files[`src/f${i}.c`] = { kind: "file", content: `int f${i};\n`, mode: 0o644, mtime: 1262304000 };
    files.Dockerfile = { kind: "file", content: DOCKERFILE, mode: 0o644, mtime: 1262304000 };
    execFileSync("chown", ["-R", `${owner.uid}:${owner.gid}`, caseDir]);
    syncContext(ctx, {}, files, owner);
    const warm = path.join(caseDir, "warm");
    build(mode, warm, ctx);
    const inode = (rel: string) => lstatSync(path.join(sourceSnapshot(warm)!, rel)).ino;
    const untouched = inode("src/f7.c");
    const next = {
      ...files,
      "src/f1.c": { kind: "file" as const, content: "int changed;\n", mode: 0o644, mtime: 1262304000 },
    };
    syncContext(ctx, files, next, owner);
    build(mode, warm, ctx);
    expect(readFileSync(path.join(sourceSnapshot(warm)!, "src/f1.c"), "utf8")).toBe("int changed;\n");
    expect(inode("src/f7.c")).toBe(untouched);
  }, 120_000);
});
