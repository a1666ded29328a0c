/**
 * A COPY re-run updates the previous run's upper directory in place (worker/ops/copy-reuse.ts),
 * which holds what the previous context held, symlinks to host paths included. A context that
 * turns such a link into a directory, at the copy's destination or below it, must have its new
 * entries written inside the image, never through the old link; the image is the new context's.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { buildToTar, hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("a COPY updated in place (%s)", (mode) => {
  it("never writes through a symlink the previous copy made", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    // First build: `tree/a` and `tree/deep/b` (copied into /app as they are) link to the canary.
    const ctx = world.context(
      {
        Dockerfile: "FROM busybox\nCOPY tree /app/\n",
        "tree/a": { link: canary.dir },
        "tree/deep/b": { link: path.join(canary.dir, "sub") },
        "tree/keep": "kept\n",
      },
      mode,
    );
    const first = buildToTar(world, mode, store, ctx);
    expect(first.built.status, first.built.stderr).toBe(0);
    canary.expectUntouched(first.built.stdout, first.built.stderr, first.tar);
    expect(execFileSync("tar", ["-tvf", first.out], { encoding: "utf8" })).toMatch(
      new RegExp(`app/a -> ${canary.dir}`),
    );

    // Second build: the links are now directories holding files named as the canary's are.
    const owner = execFileSync("stat", ["-c", "%u:%g", ctx], { encoding: "utf8" }).trim();
    for (const link of ["tree/a", "tree/deep/b"]) {
      rmSync(path.join(ctx, link));
      mkdirSync(path.join(ctx, link));
    }
    writeFileSync(path.join(ctx, "tree", "a", "secret"), "overwritten\n");
    mkdirSync(path.join(ctx, "tree", "a", "sub"));
    writeFileSync(path.join(ctx, "tree", "a", "sub", "file"), "overwritten\n");
    writeFileSync(path.join(ctx, "tree", "deep", "b", "file"), "overwritten\n");
    execFileSync("chown", ["-R", owner, ctx]);
    const second = buildToTar(world, mode, store, ctx);
    expect(second.built.status, second.built.stderr).toBe(0);
    canary.expectUntouched(second.built.stdout, second.built.stderr, second.tar);
    const read = (out: string, name: string) =>
      execFileSync("tar", ["-xOf", out, name], { encoding: "utf8" });
    expect(read(second.out, "app/a/secret")).toBe("overwritten\n");
    expect(read(second.out, "app/a/sub/file")).toBe("overwritten\n");
    expect(read(second.out, "app/deep/b/file")).toBe("overwritten\n");
    expect(read(second.out, "app/keep")).toBe("kept\n");

    // Third build: back to links, now planted where the copies' files and directories are.
    rmSync(path.join(ctx, "tree", "a"), { recursive: true });
    symlinkSync(canary.dir, path.join(ctx, "tree", "a"));
    rmSync(path.join(ctx, "tree", "keep"));
    symlinkSync(path.join(canary.dir, "secret"), path.join(ctx, "tree", "keep"));
    execFileSync("chown", ["-h", owner, path.join(ctx, "tree", "a"), path.join(ctx, "tree", "keep")]);
    const third = buildToTar(world, mode, store, ctx);
    expect(third.built.status, third.built.stderr).toBe(0);
    canary.expectUntouched(third.built.stdout, third.built.stderr, third.tar);
    const listing = execFileSync("tar", ["-tvf", third.out], { encoding: "utf8" });
    expect(listing).toMatch(new RegExp(`app/a -> ${canary.dir}`));
    expect(listing).toMatch(new RegExp(`app/keep -> ${path.join(canary.dir, "secret")}`));
    expect(read(third.out, "app/deep/b/file")).toBe("overwritten\n");
    world.expectStoreUsable(mode, store);
  });
});
