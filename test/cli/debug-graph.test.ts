import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { LoweredBuild } from "../../frontend/lower/index.js";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

function context(files: Record<string, string>): string {
  const dir = tempDir("graph");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

describe("tbuild debug graph", () => {
  it("prints the graph and image config of examples/hello without running anything", () => {
    // A store of its own, without busybox: the user's may hold it (the Quick start imports it).
    const { status, stdout, stderr } = tbuild(["debug", "graph", "examples/hello"], {
      env: { TBUILD_ROOT: tempDir("graph-store") },
    });
    expect(status).toBe(0);
    const build = JSON.parse(stdout) as LoweredBuild;
    const kinds = Object.values(build.graph.vertices).map((v) => v.op.kind);
    expect(kinds).toEqual(expect.arrayContaining(["image", "local", "file", "exec"]));
    expect(build.image.config.Cmd).toEqual(["hello"]);
    expect(build.target.name).toBe("stage-2");
    expect(stderr).toContain("is not in the local store");
  });

  it("takes -f, --build-arg, --target and .dockerignore", () => {
    const dir = context({
      "build/Dockerfile.dev":
        "ARG BASE=busybox\nFROM ${BASE} AS dev\nCOPY . /src\nFROM dev AS release\nRUN make\n",
      "build/Dockerfile.dev.dockerignore": "*.log\n",
    });
    const { status, stdout } = tbuild([
      "debug",
      "graph",
      "-f",
      path.join(dir, "build/Dockerfile.dev"),
      "--build-arg",
      "BASE=debian:12",
      "--target",
      "dev",
      dir,
    ]);
    expect(status).toBe(0);
    const build = JSON.parse(stdout) as LoweredBuild;
    const ops = Object.values(build.graph.vertices).map((v) => v.op);
    expect(ops.find((op) => op.kind === "image")).toMatchObject({ ref: "docker.io/library/debian:12" });
    expect(ops.find((op) => op.kind === "local")).toMatchObject({ excludePatterns: ["*.log"] });
    expect(ops.some((op) => op.kind === "exec")).toBe(false);
  });

  it("reads a lowercase dockerfile when the context has no Dockerfile, as BuildKit does", () => {
    const dir = context({ dockerfile: "FROM scratch\nLABEL from=lowercase\n" });
    try {
      const { status, stdout, stderr } = tbuild(["debug", "graph", dir]);
      expect(stderr).toBe("");
      expect(status).toBe(0);
      expect((JSON.parse(stdout) as LoweredBuild).image.config.Labels).toEqual({ from: "lowercase" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("prints DOT with --format dot", () => {
    const { status, stdout } = tbuild(["debug", "graph", "--format", "dot", "examples/hello"]);
    expect(status).toBe(0);
    expect(stdout).toMatch(/^digraph build \{/);
    expect(stdout).toContain("->");
  });

  it("reports a Dockerfile error with file:line:column, the line and a caret, and exit code 1", () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUNN echo hi\n" });
    const { status, stderr } = tbuild(["debug", "graph", dir]);
    expect(status).toBe(1);
    expect(stderr).toMatch(/Dockerfile:2:1: .*RUNN/);
    expect(stderr).toContain("RUN");
    expect(stderr).toContain("^");
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  it("says which Dockerfile is missing", () => {
    const dir = context({});
    const { status, stderr } = tbuild(["debug", "graph", dir]);
    expect(status).toBe(1);
    expect(stderr).toContain(path.join(dir, "Dockerfile"));
  });

  it("rejects an unknown target with the stages there are", () => {
    const dir = context({ Dockerfile: "FROM busybox AS a\nFROM busybox AS b\n" });
    const { status, stderr } = tbuild(["debug", "graph", "--target", "release", dir]);
    expect(status).toBe(1);
    expect(stderr).toContain('target stage "release" could not be found');
    expect(stderr).toContain("stages: a, b");
  });

  it("--network sets the network of each RUN without its own --network; a RUN's flag still wins", () => {
    const dir = context({
      Dockerfile:
        "FROM busybox\nRUN echo plain\nRUN --network=default echo default\nRUN --network=host echo host\n",
    });
    const networks = (args: string[]) => {
      const { status, stdout, stderr } = tbuild(["debug", "graph", ...args, dir]);
      expect(status, stderr).toBe(0);
      const build = JSON.parse(stdout) as LoweredBuild;
      return Object.fromEntries(
        Object.values(build.graph.vertices).flatMap((v) =>
          v.op.kind === "exec" ? [[v.op.args.at(-1), v.op.network]] : [],
        ),
      );
    };
    expect(networks(["--network", "none"])).toEqual({
      "echo plain": "none",
      "echo default": "none",
      "echo host": "host",
    });
    expect(networks([])).toEqual({ "echo plain": "default", "echo default": "default", "echo host": "host" });
    const wrong = tbuild(["debug", "graph", "--network", "bridge", dir]);
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toContain('--network must be default, none or host, not "bridge"');
  });
});
