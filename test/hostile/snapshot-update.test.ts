/**
 * The context snapshot a rebuild updates in place (worker/ops/source-snapshot.ts) holds what the
 * previous context held, symlinks to host paths included. A context that turns such a link into a
 * directory, or a file below it, must have its new entries written inside the snapshot, never
 * through the old link; and what the next steps copy is the new context, nothing of the host.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { buildToTar, hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("a context snapshot updated in place (%s)", (mode) => {
  it("never writes through a symlink the previous context held", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    // First build: `a` and `deep/b` are links to the canary's directories.
    const ctx = world.context(
      {
        Dockerfile: "FROM scratch\nCOPY . /ctx/\n",
        a: { link: canary.dir },
        "deep/b": { link: path.join(canary.dir, "sub") },
        keep: "kept\n",
      },
      mode,
    );
    const first = buildToTar(world, mode, store, ctx);
    expect(first.built.status, first.built.stderr).toBe(0);
    canary.expectUntouched(first.built.stdout, first.built.stderr, first.tar);

    // Second build: the links are now directories holding files named as the canary's are.
    const owner = execFileSync("stat", ["-c", "%u:%g", ctx], { encoding: "utf8" }).trim();
    for (const link of ["a", "deep/b"]) {
      rmSync(path.join(ctx, link));
      mkdirSync(path.join(ctx, link));
    }
    writeFileSync(path.join(ctx, "a", "secret"), "overwritten\n");
    mkdirSync(path.join(ctx, "a", "sub"));
    writeFileSync(path.join(ctx, "a", "sub", "file"), "overwritten\n");
    writeFileSync(path.join(ctx, "deep", "b", "file"), "overwritten\n");
    execFileSync("chown", ["-R", owner, ctx]);
    const second = buildToTar(world, mode, store, ctx);
    expect(second.built.status, second.built.stderr).toBe(0);
    canary.expectUntouched(second.built.stdout, second.built.stderr, second.tar);
    const read = (name: string) => execFileSync("tar", ["-xOf", second.out, name], { encoding: "utf8" });
    expect(read("ctx/a/secret")).toBe("overwritten\n");
    expect(read("ctx/deep/b/file")).toBe("overwritten\n");
    expect(read("ctx/keep")).toBe("kept\n");

    // Third build: back to links, now planted where files were.
    rmSync(path.join(ctx, "a"), { recursive: true });
    symlinkSync(canary.dir, path.join(ctx, "a"));
    rmSync(path.join(ctx, "keep"));
    symlinkSync(path.join(canary.dir, "secret"), path.join(ctx, "keep"));
    execFileSync("chown", ["-h", owner, path.join(ctx, "a"), path.join(ctx, "keep")]);
    const third = buildToTar(world, mode, store, ctx);
    expect(third.built.status, third.built.stderr).toBe(0);
    canary.expectUntouched(third.built.stdout, third.built.stderr, third.tar);
    world.expectStoreUsable(mode, store);
  });
});
