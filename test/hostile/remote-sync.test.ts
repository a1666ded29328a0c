/**
 * A hostile context synced to a remote worker (`--worker cmd://…`, the worker as the same user as
 * the client: root, or the rootless test user). The worker keeps a copy of each context between
 * builds; a pull request can turn what was a directory into a link to the worker user's files and
 * back, or name the canary from a link, hoping the worker writes through the link when it brings
 * its copy up to date. Each build must leave the canary as it was, the worker's store usable, and
 * the step see the context's own files only.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tbuildBin } from "../helpers/cli.js";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("a hostile context synced to a remote worker (%s)", (mode) => {
  it("a directory turned into a link to the canary and back: the worker never writes through it", () => {
    const client = world.store(mode);
    const worker = world.store(mode);
    const canary = world.canary(mode);
    const ctx = world.context(
      {
        Dockerfile: "FROM busybox\nCOPY . /ctx\nRUN find /ctx -type f | sort > /files\n",
        "d/a": "first\n",
        "d/secret": "mine\n",
      },
      mode,
    );
    const build = (tag: string) => {
      execFileSync("chmod", ["-R", "a+rX", ctx]);
      const built = world.tbuild(mode, client, [
        "build",
        "--progress=plain",
        "--worker",
        `cmd://TBUILD_ROOT=${worker} ${tbuildBin} worker --stdio`,
        "-t",
        tag,
        ctx,
      ]);
      const listed = world.tbuild(mode, client, ["run", "--rm", tag, "cat", "/files"]);
      return { built, listed };
    };

    const first = build("sync:1");
    expect(first.built.status, first.built.stderr).toBe(0);
    expect(first.listed.stdout).toBe("/ctx/Dockerfile\n/ctx/d/a\n/ctx/d/secret\n");

    // The directory becomes a link to the canary (absolute), and a link inside names its secret.
    rmSync(path.join(ctx, "d"), { recursive: true });
    symlinkSync(canary.dir, path.join(ctx, "d"));
    symlinkSync(path.join(canary.dir, "secret"), path.join(ctx, "leak"));
    const second = build("sync:2");
    expect(second.built.status, second.built.stderr).toBe(0);
    // Links are copied as links: the canary's files are not in the image.
    expect(second.listed.stdout).toBe("/ctx/Dockerfile\n");

    // Back to a directory, with a file whose name is the canary's: written into the copy, not through a link.
    rmSync(path.join(ctx, "d"));
    rmSync(path.join(ctx, "leak"));
    mkdirSync(path.join(ctx, "d"));
    writeFileSync(path.join(ctx, "d", "secret"), "overwritten\n");
    writeFileSync(path.join(ctx, "d", "sub"), "a file where the canary has a directory\n");
    const third = build("sync:3");
    expect(third.built.status, third.built.stderr).toBe(0);
    expect(third.listed.stdout).toBe("/ctx/Dockerfile\n/ctx/d/secret\n/ctx/d/sub\n");

    canary.expectUntouched(
      ...[first, second, third].flatMap(({ built, listed }) => [built.stdout, built.stderr, listed.stdout]),
    );
    world.expectStoreUsable(mode, worker);
    world.expectStoreUsable(mode, client);
  }, 240_000);
});
