/**
 * `tbuild debug graph` prints the graph `tbuild build` solves, given the same command line: for
 * every example, the build's `build.planned` event (the graph and root it hands the solver, and
 * the image config) equals what `debug graph` prints. The flags that once made them differ are
 * given: a build arg taken from the environment, a label, a named build context. (The BuildKit
 * scenarios make the same comparison for every fixture they build: buildkit-scenarios.test.ts.)
 *
 * The examples on Debian get busybox under the name debian:bookworm-slim: the comparison needs
 * the base image in the store, not apt; their builds stop at the first apt step, after planning.
 */
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { BuildEvent } from "../../build/events.js";
import type { LoweredBuild } from "../../frontend/lower/index.js";
import { projectRoot, tbuild } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  const store = tempDir("plan-store");
  env = { TBUILD_ROOT: store, BASE: "busybox:latest" };
  await importBusybox(store, "busybox");
  const tagged = tbuild(["tag", "busybox", "debian:bookworm-slim"], { env });
  expect(tagged.stderr).toBe("");
}, 60_000);

const examplesDir = path.join(projectRoot, "examples");
const examples = readdirSync(examplesDir).filter((name) =>
  existsSync(path.join(examplesDir, name, "Dockerfile")),
);

/** The flags of each build: those `debug graph` once ignored (a label, a named context, an env build arg). */
const cases = [
  ...examples.map((name) => ({ name, flags: ["--label", "org.example.case=plan"] })),
  { name: "hello", flags: ["--build-arg", "BASE", "--label", "org.example.case=plan"] },
  { name: "hello", flags: ["--build-context", "base=docker-image://busybox:latest"] },
];

describe("debug graph prints the graph the build solves", () => {
  it("has examples to compare", () => {
    expect(examples).toEqual(
      expect.arrayContaining(["hello", "node-service", "python-cache", "static-binary"]),
    );
  });

  it.each(cases)("examples/$name $flags", ({ name, flags }) => {
    const dir = path.join(examplesDir, name);
    const built = tbuild(["build", "--progress=rawjson", ...flags, dir], { env });
    const events = built.stderr
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as BuildEvent);
    const planned = events.find((e) => e.type === "build.planned");
    expect(planned, built.stderr.slice(-2000)).toBeDefined();

    const printed = tbuild(["debug", "graph", ...flags, dir], { env });
    // Every base image is in the store: the printed graph pins them as the build does.
    expect(printed.stderr).not.toContain("not in the local store");
    expect(printed.status).toBe(0);
    const graph = JSON.parse(printed.stdout) as LoweredBuild;
    expect(Object.keys(graph.graph.vertices).length).toBeGreaterThan(2);
    expect({ graph: graph.graph, root: graph.root, image: graph.image }).toEqual({
      graph: planned!.graph,
      root: planned!.root,
      image: planned!.image,
    });
  });
});
