// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfiles are written with ${...} on purpose
/**
 * Long and deep Dockerfiles: what a generator (or an attacker) writes, far beyond what a person
 * does. They lower, or fail with an error that names the place; never with a stack overflow.
 */
import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { MAX_EXPANSION_DEPTH } from "../../../frontend/shell/lex.js";
import { lower } from "./lower.js";

async function failure(dockerfile: string): Promise<DockerfileError> {
  const err = await lower(dockerfile).catch((e: unknown) => e);
  if (err instanceof DockerfileError) return err;
  throw new Error(`expected a DockerfileError, got ${String(err)}`);
}

describe("a long Dockerfile", () => {
  it("lowers 10,000 RUN steps into a chain of 10,000 vertices on the base image", async () => {
    const lines = ["FROM busybox"];
    for (let i = 0; i < 10_000; i++) lines.push(`RUN echo ${i} > /step`);
    const build = await lower(`${lines.join("\n")}\n`);
    expect(build.ops("exec")).toHaveLength(10_000);
    expect(build.rootVertex().op).toMatchObject({ args: ["/bin/sh", "-c", "echo 9999 > /step"] });
    const runs = (build.image.history ?? []).filter((h) => h.created_by?.startsWith("RUN "));
    expect(runs).toHaveLength(10_000);
  });

  it("lowers 100,000 ENV lines: each variable in the image's config, a reassigned one where it was first set", async () => {
    const lines = ["FROM busybox", "ENV FIRST=1"];
    for (let i = 0; i < 100_000; i++) lines.push(`ENV V${i}=${i}`);
    lines.push("ENV FIRST=again", "RUN env");
    const build = await lower(`${lines.join("\n")}\n`);
    const env = build.image.config.Env ?? [];
    expect(env).toHaveLength(100_002); // the base image's PATH, FIRST, V0..V99999
    expect(env[1]).toBe("FIRST=again");
    expect(env.at(-1)).toBe("V99999=99999");
    expect(build.env(build.ops("exec")[0]!)).toMatchObject({ FIRST: "again", V54321: "54321" });
  });
});

describe("a long chain of stages", () => {
  it("lowers 12,000 stages, each FROM the one before, and finds a cycle among them", async () => {
    const lines = ["FROM busybox AS s0"];
    for (let i = 1; i < 12_000; i++) lines.push(`FROM s${i - 1} AS s${i}`);
    const build = await lower(`${lines.join("\n")}\nRUN true\n`);
    expect(build.stages).toHaveLength(12_000);
    expect(build.target.name).toBe("s11999");
    lines[0] = "FROM busybox AS s0\nCOPY --from=s11999 /f /f";
    const cycle = await failure(`${lines.join("\n")}\n`);
    // Where the path closes: s1's FROM s0, on line 3.
    expect([cycle.reason, cycle.line]).toEqual(["circular dependency detected on stage: s0", 3]);
  });
});

describe("deep nesting", () => {
  const nested = (depth: number) => `${"${A:-".repeat(depth)}x${"}".repeat(depth)}`;

  it(`expands \${...} nested ${MAX_EXPANSION_DEPTH} deep`, async () => {
    const build = await lower(`FROM busybox\nENV B=${nested(MAX_EXPANSION_DEPTH)}\n`);
    expect(build.image.config.Env).toContain("B=x");
  });

  it("refuses deeper nesting at the line and column of the ${ one level too deep", async () => {
    const err = await failure(`FROM busybox\nENV B=${nested(2_000)}\n`);
    expect(err.reason).toMatch(`variable expansion nested deeper than ${MAX_EXPANSION_DEPTH} levels`);
    expect([err.line, err.column]).toEqual([2, "ENV B=".length + 5 * MAX_EXPANSION_DEPTH + 1]);
  });

  it("finds the place in a RUN --mount value and in a COPY heredoc's body", async () => {
    const mount = await failure(`FROM busybox\nRUN --mount=type=cache,target=${nested(500)} true\n`);
    expect([mount.line, mount.column]).toEqual([
      2,
      "RUN --mount=type=cache,target=".length + 5 * MAX_EXPANSION_DEPTH + 1,
    ]);
    const heredoc = await failure(`FROM busybox\nCOPY <<EOF /f\nfirst line\n  ${nested(500)}\nEOF\n`);
    expect([heredoc.line, heredoc.column]).toEqual([4, 3 + 5 * MAX_EXPANSION_DEPTH]);
  });
});
