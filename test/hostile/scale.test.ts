// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Dockerfiles are written with ${...} on purpose
/**
 * Deep and long input: a Dockerfile nested or repeated far beyond what a person writes. Nesting
 * too deep is refused with a one-line error at its line and column (never "internal error:
 * Maximum call stack size exceeded"); a Dockerfile of 10,000 instructions builds; a build of 600
 * layers runs its steps on all of them, on an overlay as for a short one.
 */
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES, type Mode } from "./harness.js";

const world = hostileWorld();

/** `${a:-` nested `depth` deep around `x`. */
const nested = (depth: number, open = "${a:-", close = "}") => `${open.repeat(depth)}x${close.repeat(depth)}`;

/** The column of the 101st `${` in a line that starts with `prefix` and nests with `open`. */
const tooDeep = (prefix: string, open = "${a:-") => prefix.length + open.length * 100 + open.indexOf("$") + 1;

/**
 * Parsing a Dockerfile and planning its graph are the same code as root and rootless (nothing is
 * unpacked, mounted or run): these run as root only.
 */
describe("deep and long Dockerfiles, parsed (root)", () => {
  const mode: Mode = "root";
  it("refuses ${...} nested 2,000 deep with one line naming file:line:column", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const cases: { dockerfile: string; at: string }[] = [
      { dockerfile: `FROM busybox\nENV b=${nested(2_000)}\n`, at: `2:${tooDeep("ENV b=")}` },
      {
        dockerfile: `FROM busybox\nENV b="${nested(2_000, '"${a:-', '}"')}"\n`,
        at: `2:${tooDeep('ENV b="', '"${a:-')}`,
      },
      { dockerfile: `ARG A=${nested(2_000)}\nFROM busybox\n`, at: `1:${tooDeep("ARG A=")}` },
      {
        dockerfile: `FROM busybox\nRUN --mount=type=tmpfs,target=${nested(2_000)} true\n`,
        at: `2:${tooDeep("RUN --mount=type=tmpfs,target=")}`,
      },
      {
        dockerfile: `FROM busybox\nCOPY <<EOF /f\n${nested(2_000)}\nEOF\n`,
        at: `3:${tooDeep("")}`,
      },
    ];
    const outputs: string[] = [];
    for (const { dockerfile, at } of cases) {
      const context = world.context({ Dockerfile: dockerfile });
      const built = world.tbuild(mode, store, ["build", "-q", context]);
      outputs.push(built.stdout, built.stderr);
      expect(built.status, built.stderr).toBe(1);
      const errors = built.stderr.split("\n").filter((line) => line.startsWith("ERROR"));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(
        new RegExp(`^ERROR: \\S*/Dockerfile:${at}: variable expansion nested deeper than 100 levels`),
      );
      expect(built.stderr).not.toMatch(/internal error|Maximum call stack| {4}at /);
    }
    canary.expectUntouched(...outputs);
    world.expectStoreUsable(mode, store);
  });

  it("prints the graph of 10,000 RUN lines: a chain of 10,000 steps", () => {
    const store = world.store(mode);
    const lines = ["FROM busybox"];
    for (let i = 0; i < 10_000; i++) lines.push(`RUN echo ${i} > /step`);
    const context = world.context({ Dockerfile: `${lines.join("\n")}\n` });
    const graph = world.tbuild(mode, store, ["debug", "graph", context]);
    expect(graph.status, graph.stderr).toBe(0);
    const printed = JSON.parse(graph.stdout) as {
      graph: { vertices: Record<string, { op: { kind: string; args?: string[] }; inputs: string[] }> };
      root: string;
    };
    const vertices = printed.graph.vertices;
    let depth = 0;
    for (let digest: string | undefined = printed.root; digest; digest = vertices[digest]!.inputs[0]) {
      depth++;
    }
    expect(depth).toBe(10_001);
    expect(vertices[printed.root]!.op.args).toEqual(["/bin/sh", "-c", "echo 9999 > /step"]);
  });
});

describe.each(MODES)("long Dockerfiles, built (%s)", (mode) => {
  it("builds a Dockerfile of 10,000 instructions: a chain of 3,300 steps, 6,600 ENV and LABEL", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const lines = ["FROM busybox"];
    for (let i = 0; i < 20; i++) lines.push(`RUN echo ${i} >> /runs`);
    // COPY --link of the same file: one copy, then a step per line that stacks its layer.
    const env: string[] = [];
    const labels: Record<string, string> = {};
    let links = 0;
    for (let i = 0; lines.length < 10_000; i++) {
      if (i % 3 === 0) {
        lines.push("COPY --link f /f");
        links++;
      } else if (i % 3 === 1) {
        lines.push(`ENV E${i}=e${i}`);
        env.push(`E${i}=e${i}`);
      } else {
        lines.push(`LABEL l${i}=l${i}`);
        labels[`l${i}`] = `l${i}`;
      }
    }
    const context = world.context({ Dockerfile: `${lines.join("\n")}\n`, f: "linked\n" });
    const built = world.tbuild(mode, store, ["build", "-q", "-t", "long:10k", context], {
      timeoutMs: 300_000,
    });
    expect(built.status, built.stderr.slice(-2000)).toBe(0);
    const inspected = world.tbuild(mode, store, ["inspect", "long:10k"]);
    expect(inspected.status, inspected.stderr).toBe(0);
    const { config } = JSON.parse(inspected.stdout) as {
      config: {
        config: { Env: string[]; Labels: Record<string, string> };
        rootfs: { diff_ids: string[] };
        history: unknown[];
      };
    };
    expect(config.rootfs.diff_ids).toHaveLength(1 + 20 + links);
    expect(config.history).toHaveLength(1 + 9_999);
    expect(config.config.Env.slice(-env.length)).toEqual(env);
    expect(config.config.Labels).toEqual(labels);
    // Built again, everything is found cached: the same image; and that build exports its cache
    // (one build of 10,000 lines for both: each costs seconds of parsing and cache lookups).
    const exported = `${world.dir("cache", mode)}/out`;
    const again = world.tbuild(
      mode,
      store,
      ["build", "-q", "-t", "long:10k", "--cache-to", `type=local,dest=${exported}`, context],
      { timeoutMs: 300_000 },
    );
    expect(again.status, again.stderr.slice(-2000)).toBe(0);
    expect(again.stdout).toBe(built.stdout);
    // The exported cache, imported by another store: nothing runs there.
    const importing = world.tbuild(mode, world.store(mode), [
      "build",
      "--progress=plain",
      "--cache-from",
      `type=local,src=${exported}`,
      context,
    ]);
    expect(importing.status, importing.stderr.slice(-2000)).toBe(0);
    expect(importing.stderr).toMatch(/: 0 step\(s\) ran/);
    canary.expectUntouched(built.stdout, built.stderr, inspected.stdout);
    world.expectStoreUsable(mode, store);
  }, 600_000);

  it("runs steps on 600 layers and the image made of them, on an overlay as for a short build", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    // A RUN every 50 layers; the 49 between are COPY --link of one file (one copy, 49 layers).
    const lines = ["FROM busybox", "RUN mkdir /d && echo gone > /d/gone && echo 0 > /count"];
    for (let k = 1; k <= 12; k++) {
      for (let i = 0; i < 49; i++) lines.push("COPY --link f /f");
      if (k === 2) lines.push("RUN rm /d/gone && echo kept > /d/kept && echo 2 >> /count");
      else if (k === 7) lines.push("RUN chmod 700 /d && echo 7 >> /count");
      else lines.push(`RUN echo ${k} >> /count`);
    }
    const context = world.context({ Dockerfile: `${lines.join("\n")}\n`, f: "linked\n" });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", "-t", "deep:600", context], {
      timeoutMs: 300_000,
    });
    expect(built.status, built.stderr.slice(-2000)).toBe(0);
    // Past ~55 layers the overlay did not fit in its mount options, and each step copied them all.
    expect(built.stderr).not.toMatch(/copying the image's files instead/);
    const inspected = JSON.parse(world.tbuild(mode, store, ["inspect", "deep:600"]).stdout) as {
      config: { rootfs: { diff_ids: string[] } };
    };
    expect(inspected.config.rootfs.diff_ids).toHaveLength(1 + 1 + 12 * 50);
    const ran = world.tbuild(mode, store, [
      "run",
      "--rm",
      "deep:600",
      "sh",
      "-c",
      "tr '\\n' ' ' < /count; ls /d; stat -c %a /d; cat /f",
    ]);
    expect(ran.status, ran.stderr).toBe(0);
    expect(ran.stdout).toBe("0 1 2 3 4 5 6 7 8 9 10 11 12 kept\n700\nlinked\n");
    expect(ran.stderr).not.toMatch(/copying the image's files instead/);
    canary.expectUntouched(built.stdout, built.stderr, ran.stdout);
    world.expectStoreUsable(mode, store);
  }, 600_000);
});
