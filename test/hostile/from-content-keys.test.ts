/**
 * The second cache key of a `COPY --from` reads the files the copy selects in the stage, before
 * anything runs: a stage an attacker wrote can hold links to the host's files, links that loop,
 * FIFOs that block a reader. The key reads inside the stage only, never blocks, and a source it
 * cannot follow fails the step with the copy's own one-line error; the store stays usable.
 */
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("what a COPY --from's key reads of a stage (%s)", (mode) => {
  it("a link to a host path is followed inside the stage, for the key and the copy alike", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    const dockerfile = (marker: string) =>
      [
        "FROM busybox AS build",
        `RUN echo ${marker} > /marker && mkdir -p /out ${canary.dir} && echo stage-file > ${canary.dir}/secret && ln -s ${canary.dir}/secret /out/app && ln -s ${canary.dir}/sub /out/sub`,
        "FROM busybox",
        "COPY --from=build /out/app /app",
        "COPY --from=build /out/sub/ /sub/",
        "",
      ].join("\n");
    const ctx = world.context({ Dockerfile: dockerfile("one") });
    const first = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "from-keys:1", ctx]);
    canary.expectUntouched(first.stdout, first.stderr);
    // /out/sub leads to the canary's sub directory on the host, which the stage does not have.
    expect(first.status).toBe(1);
    expect(first.stderr).toContain(" > [stage-1 3/3] COPY --from=build /out/sub/ /sub/:");
    expect(first.stderr.trimEnd().split("\n").at(-1)).toBe(
      "ERROR: /out/sub: not found (no file or directory of the source matches it)",
    );

    const copyOnly = world.context({
      Dockerfile: dockerfile("one").replace("COPY --from=build /out/sub/ /sub/\n", ""),
    });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "from-keys:1", copyOnly]);
    canary.expectUntouched(built.stdout, built.stderr);
    expect(built.status, built.stderr).toBe(0);
    const ran = world.tbuild(mode, store, ["run", "--rm", "from-keys:1", "cat", "/app"]);
    expect(ran.stdout).toBe("stage-file\n");
    world.expectStoreUsable(mode, store);
  });

  it("a FIFO is keyed without being opened, and a link loop fails the copy with one line", () => {
    const store = world.store(mode);
    const stage = [
      "FROM busybox AS build",
      "RUN mkdir /out && mkfifo /out/fifo && ln -s loop /out/loop && echo x > /out/x",
      "FROM busybox",
    ];
    const ctx = world.context({
      Dockerfile: [...stage, "COPY --from=build /out/fifo /out/x /o/", ""].join("\n"),
    });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "from-keys:fifo", ctx], {
      timeoutMs: 120_000,
    });
    expect(built.status, built.stderr).toBe(0);
    const ran = world.tbuild(mode, store, [
      "run",
      "--rm",
      "from-keys:fifo",
      "sh",
      "-c",
      "test -p /o/fifo && cat /o/x",
    ]);
    expect(ran.stdout).toBe("x\n");

    const loop = world.context({ Dockerfile: [...stage, "COPY --from=build /out/loop /l", ""].join("\n") });
    const failed = world.tbuild(mode, store, ["build", "--progress=plain", loop]);
    expect(failed.status).toBe(1);
    const errors = failed.stderr.split("\n").filter((line) => line.startsWith("ERROR"));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBe("ERROR: too many levels of symbolic links resolving /out/loop");
    expect(failed.stderr).toContain(" > [stage-1 2/2] COPY --from=build /out/loop /l:");
    expect(failed.stderr).not.toMatch(/^\s+at /m);
    world.expectStoreUsable(mode, store);
  });
});
