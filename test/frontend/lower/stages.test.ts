import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { asExec, asFile, lower } from "./lower.js";

describe("stages", () => {
  it("a stage based on an earlier stage starts from its filesystem and config", async () => {
    const build = await lower(`FROM busybox AS base
ENV A=1
RUN touch /a
FROM base
RUN test -f /a
`);
    const run = asExec(build.rootVertex().op);
    expect(run.args).toEqual(["/bin/sh", "-c", "test -f /a"]);
    expect(build.env(run).A).toBe("1");
    const parent = build.graph.vertices[build.rootVertex().inputs[0]!]!;
    expect(asExec(parent.op).args.at(-1)).toBe("touch /a");
    expect(build.image.config.Env).toContain("A=1");
  });

  it("COPY --from takes a stage by name, by index, or an image", async () => {
    const build = await lower(`FROM busybox AS one
RUN echo 1 > /one
FROM busybox
RUN echo 2 > /two
FROM scratch
COPY --from=one /one /
COPY --from=1 /two /
COPY --from=debian:12 /etc/os-release /
`);
    const copies = build.ops("file").flatMap((op) => op.actions);
    expect(copies.map((a) => (a.action === "copy" ? a.src : a.action))).toEqual([
      "/one",
      "/two",
      "/etc/os-release",
    ]);
    expect(build.asked).toContain("docker.io/library/debian:12");
    expect(build.stages.map((s) => s.name)).toEqual(["one", "stage-1", "stage-2"]);
  });

  it("a stage may copy from a later stage, which is lowered first", async () => {
    const build = await lower(
      `FROM busybox AS first
COPY --from=later /x /x
FROM busybox AS later
RUN touch /x
`,
      { target: "first" },
    );
    expect(build.stages.map((s) => s.name)).toEqual(["later", "first"]);
    const copy = asFile(build.rootVertex().op).actions[0]!;
    expect(copy.action === "copy" && copy.src).toBe("/x");
  });

  it("--target builds only the stages the target needs", async () => {
    const dockerfile = `FROM debian:12 AS unused
RUN echo unused
FROM busybox AS base
RUN echo base
FROM base AS test
RUN echo test
FROM busybox AS final
COPY --from=base /etc/passwd /passwd
`;
    const build = await lower(dockerfile, { target: "test" });
    expect(build.stages.map((s) => s.name)).toEqual(["base", "test"]);
    expect(build.asked).not.toContain("docker.io/library/debian:12");
    const commands = build.ops("exec").map((op) => op.args.at(-1));
    expect(commands).toEqual(["echo base", "echo test"]);
  });

  it("an unknown --target names the stages there are", async () => {
    await expect(lower("FROM busybox AS a\nFROM busybox AS b\n", { target: "release" })).rejects.toThrow(
      'target stage "release" could not be found in Dockerfile (stages: a, b)',
    );
  });

  it("an unknown --target close to a stage's name suggests it, as BuildKit does", async () => {
    await expect(lower("FROM busybox AS build\nFROM busybox\n", { target: "bulid" })).rejects.toThrow(
      'target stage "bulid" could not be found (did you mean build?)',
    );
  });

  it("a stage index out of range is a positioned error", async () => {
    const err = await lower("FROM busybox\nCOPY --from=3 /a /b\n").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).line).toBe(2);
    expect((err as DockerfileError).reason).toContain("invalid stage index 3");
  });

  it("a --from cycle is a positioned error", async () => {
    const err = await lower(`FROM busybox AS a
COPY --from=b /x /x
FROM busybox AS b
COPY --from=a /y /y
`).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).reason).toMatch(/circular dependency detected on stage: (a|b)/);
  });

  it("an image that cannot be resolved names the FROM line", async () => {
    const err = await lower("FROM busybox\nFROM nosuchimage:1\nRUN true\n").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).line).toBe(2);
    expect((err as DockerfileError).message).toContain("nosuchimage:1");
  });

  it("an image COPY --from names that cannot be resolved names the COPY line", async () => {
    const err = await lower("FROM scratch\nENV foo=bar\nCOPY --from=nosuchimage foo bar\n").catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).line).toBe(3);
  });

  it("a --build-context NAME=docker-image://scratch makes FROM NAME and COPY --from=NAME the empty image", async () => {
    const build = await lower("FROM busybox AS build\nRUN true\nFROM scratch\nCOPY --from=busybox /x /x\n", {
      namedContexts: { busybox: { type: "image", ref: "scratch" } },
    }).catch((e: unknown) => e);
    // The COPY reads an empty filesystem: refused as a COPY from an empty stage is.
    expect((build as DockerfileError).reason).toContain("filesystem is empty");
    const fromOnly = await lower("FROM busybox\nCOPY <<EOF /out\nhi\nEOF\n", {
      namedContexts: { busybox: { type: "image", ref: "scratch" } },
    });
    expect(fromOnly.asked).toEqual([]);
    expect(fromOnly.ops("image")).toEqual([]);
  });

  it("instructions before the first FROM other than ARG are rejected", async () => {
    const err = await lower("ENV A=1\nFROM busybox\n").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).reason).toContain("ENV cannot come before the first FROM");
  });

  it("the same step in two stages is one vertex", async () => {
    const build = await lower(`FROM busybox AS a
RUN echo same
FROM busybox AS b
RUN echo same
FROM scratch
COPY --from=a /etc/passwd /a
COPY --from=b /etc/passwd /b
`);
    expect(build.ops("exec")).toHaveLength(1);
    expect(build.ops("image")).toHaveLength(1);
  });

  it("COPY --link stacks a layer instead of copying onto the stage", async () => {
    const build = await lower("FROM busybox\nCOPY --link app.txt /app/\n");
    const root = build.rootVertex();
    expect(root.op.kind).toBe("merge");
    expect(root.inputs).toHaveLength(2);
    const layer = asFile(build.graph.vertices[root.inputs[1]!]!.op);
    expect(layer.base).toBeUndefined();
  });

  it("an empty COPY destination is the WORKDIR as a directory, also in a --link layer", async () => {
    const build = await lower('FROM busybox\nWORKDIR /var/www\nENV empty=""\nCOPY --link app.txt $empty\n');
    const root = build.rootVertex();
    const layer = asFile(build.graph.vertices[root.inputs[1]!]!.op);
    expect(layer.actions[0]).toMatchObject({ src: "/app.txt", dest: "/var/www/" });
  });
});
