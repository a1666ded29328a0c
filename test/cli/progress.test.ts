/**
 * What `tbuild build` shows while it works and when it fails, in each `--progress` mode, through
 * the real CLI: BuildKit's plain log, rawjson events that cover the whole graph, the live view on a
 * real pseudo-terminal (rendered by a terminal emulator), and BuildKit's report of a failed RUN.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuild, tbuildBin } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";
import { renderScreen, runOnTerminal, type Screen } from "../helpers/terminal.js";

const tempDir = tempDirs();

let storeRoot: string;
beforeAll(async () => {
  storeRoot = tempDir("progress-store");
  await importBusybox(storeRoot, "busybox");
});

function context(files: Record<string, string>): string {
  const dir = tempDir("progress-ctx");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

/** The environment of a user at a terminal: no CI, no progress preference, a real TERM. */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TBUILD_ROOT: storeRoot, TERM: "xterm-256color", ...extra };
  for (const name of ["CI", "TBUILD_PROGRESS", "NO_COLOR"]) if (!(name in extra)) delete env[name];
  return env;
}

function build(args: string[], extra: NodeJS.ProcessEnv = {}) {
  return tbuild(["build", ...args], { env: userEnv(extra) });
}

function buildOnTerminal(args: string[], extra: NodeJS.ProcessEnv = {}) {
  return runOnTerminal([tbuildBin, "build", ...args], { env: userEnv(extra), columns: 80, rows: 24 });
}

/** The Dockerfile's instructions, as the progress names them: `[i/n] INSTRUCTION`. */
function stepNames(dockerfile: string): string[] {
  const instructions = dockerfile.split("\n").filter((line) => line.trim() !== "");
  return instructions.map(
    (line, i) => `[${i + 1}/${instructions.length}] ${line.startsWith("FROM ") ? "FROM" : line}`,
  );
}

const ESCAPE_LEFTOVER = /\x1b|\[\d+(;\d+)*[A-HJKm]|\[\?25[hl]/;

/** The live view's rows: its header, and a row per step or output line. */
const isViewRow = (line: string) => line.startsWith("[+] Building") || line.startsWith(" => ");

function expectCleanScreen(screen: Screen, raw: Buffer) {
  for (const line of screen.lines) expect(line).not.toMatch(ESCAPE_LEFTOVER);
  // The view is one block at the top, and none of its rows wrapped (the next row would continue it).
  const viewRows = screen.lines.findIndex((line) => !isViewRow(line));
  expect(viewRows).toBeGreaterThan(1);
  expect(screen.lines.slice(viewRows).filter(isViewRow)).toEqual([]);
  expect(screen.wrapped.slice(0, viewRows + 1)).not.toContain(true);
  // Every row of the view that tbuild wrote fits 80 columns once its escape sequences are taken out.
  const rows = raw
    .toString("utf8")
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, "")
    .split(/\r?\n|\r/)
    .filter(isViewRow);
  expect(rows.length).toBeGreaterThanOrEqual(viewRows);
  for (const row of rows) expect([...row].length).toBeLessThanOrEqual(80);
}

describe("--progress=plain", () => {
  it("a cached rebuild prints exactly one #N CACHED per step", () => {
    const dockerfile = "FROM busybox\nRUN echo one > /one\nCOPY x /x\nRUN cat /x > /y\n";
    const dir = context({ Dockerfile: dockerfile, x: "x\n" });
    expect(build(["--progress=plain", "-t", "plain:1", dir]).status).toBe(0);
    const again = build(["--progress=plain", "-t", "plain:1", dir]);
    expect(again.status, again.stderr).toBe(0);

    const names = new Map<string, string>();
    for (const [, n, name] of again.stderr.matchAll(/^#(\d+) (\[.*)$/gm)) names.set(n!, name!);
    const cached = [...again.stderr.matchAll(/^#(\d+) CACHED$/gm)].map((m) => names.get(m[1]!)!);
    // Each of the Dockerfile's steps, and the read of the context, once each.
    const expected = [...stepNames(dockerfile), "[internal] load build context"];
    expect(cached).toHaveLength(expected.length);
    for (const name of expected) expect(cached.filter((c) => c.startsWith(name))).toHaveLength(1);
    expect(again.stderr).toContain("0 step(s) ran, 4 cached");
  });
});

describe("--progress=rawjson", () => {
  it("writes only JSON lines that cover every vertex of the graph and end with the image's digest", () => {
    const dockerfile =
      "FROM busybox AS base\nRUN echo base > /base\nFROM busybox\nCOPY --from=base /base /base\nCOPY x /x\nRUN cat /base /x\n";
    const dir = context({ Dockerfile: dockerfile, x: "x\n" });
    const iidfile = path.join(tempDir("progress-iid"), "iid");
    const built = build(["--progress=rawjson", "--iidfile", iidfile, "-t", "json:1", dir]);
    expect(built.status, built.stderr).toBe(0);

    const lines = built.stderr.split("\n").filter((l) => l !== "");
    const events = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const graph = tbuild(["debug", "graph", "--format", "json", dir], { env: userEnv() });
    expect(graph.status, graph.stderr).toBe(0);
    const vertices = Object.keys(
      (JSON.parse(graph.stdout) as { graph: { vertices: object } }).graph.vertices,
    );
    const reported = new Set(events.filter((e) => String(e.type).startsWith("vertex.")).map((e) => e.vertex));
    for (const vertex of vertices) expect(reported).toContain(vertex);
    // The RUN's output arrives as a log event of its vertex.
    const logs = events
      .filter((e) => e.type === "log")
      .map((e) => Buffer.from(String(e.data), "base64").toString());
    expect(logs.join("")).toContain("base\nx\n");

    const last = events.at(-1)!;
    expect(last.type).toBe("build.completed");
    expect(last.digest).toBe(readFileSync(iidfile, "utf8"));
    expect(last.configDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(last.names).toEqual(["docker.io/library/json:1"]);
  });

  it("reports a failed step as a last JSON event, with no other line", () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo going down; exit 4\n" });
    const failed = build(["--progress=rawjson", dir]);
    expect(failed.status).toBe(1);
    const events = failed.stderr
      .split("\n")
      .filter((l) => l !== "")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(events.at(-1)).toMatchObject({
      type: "build.failed",
      name: "[2/2] RUN echo going down; exit 4",
      exitCode: 4,
      location: { startLine: 2, endLine: 2 },
    });
    expect(String((events.at(-1)!.lastOutput as string[]).at(-1))).toMatch(/ going down$/);
  });
});

describe("--progress=quiet", () => {
  it("-q prints the image ID alone on stdout", () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo quiet > /q\n" });
    const iidfile = path.join(tempDir("progress-iid"), "iid");
    const built = build(["-q", "--iidfile", iidfile, "-t", "quiet:1", dir]);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stdout).toBe(`${readFileSync(iidfile, "utf8")}\n`);
    expect(built.stderr).toBe("");
  });
});

describe("the progress mode", () => {
  it("TBUILD_PROGRESS sets the default and --progress wins over it", () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo mode > /m\n" });
    const fromEnv = build(["-t", "mode:1", dir], { TBUILD_PROGRESS: "rawjson" });
    expect(fromEnv.status).toBe(0);
    for (const line of fromEnv.stderr.trim().split("\n")) expect(() => JSON.parse(line)).not.toThrow();
    const fromFlag = build(["--progress=plain", "-t", "mode:1", dir], { TBUILD_PROGRESS: "rawjson" });
    expect(fromFlag.stderr).toMatch(/^#1 /);
  });

  it("--progress=tty without a terminal is an error", () => {
    const dir = context({ Dockerfile: "FROM busybox\n" });
    const refused = build(["--progress=tty", dir]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("--progress=tty needs stderr to be a terminal");
  });
});

describe("--progress=tty", () => {
  const dockerfile = "FROM busybox\nRUN echo first && echo second >&2\nCOPY x /x\nRUN cat /x\n";

  it("leaves a final view with every step, their times and the summary, fitted to 80 columns", async () => {
    const dir = context({ Dockerfile: dockerfile, x: "x\n" });
    const run = buildOnTerminal(["--progress=tty", "-t", "tty:1", dir]);
    expect(run.status, run.output.toString()).toBe(0);
    const screen = await renderScreen(run.output);
    expectCleanScreen(screen, run.output);

    expect(screen.lines[0]).toMatch(/^\[\+\] Building \d+\.\ds \((\d+)\/\1\) FINISHED$/);
    // The base image may be cached from an earlier build in this store; the other steps are new.
    for (const name of stepNames(dockerfile)) {
      const rows = screen.lines.filter((line) =>
        line.replace(" => CACHED ", " => ").startsWith(` => ${name}`),
      );
      expect(rows, name).toHaveLength(1);
      expect(rows[0]).toMatch(/ \d+\.\ds$/);
    }
    const summary = screen.logicalLines.at(-1)!;
    const counts = summary.match(
      /^built in \d+\.\ds: (\d) step\(s\) ran, (\d) cached; image sha256:[0-9a-f]{64} \(\d+(\.\d+)?[kM]?B\) named docker\.io\/library\/tty:1$/,
    );
    expect(counts, summary).not.toBeNull();
    expect(Number(counts![1]) + Number(counts![2])).toBe(stepNames(dockerfile).length);
    expect(Number(counts![1])).toBeGreaterThanOrEqual(3);

    const again = buildOnTerminal(["--progress=tty", "-t", "tty:1", dir]);
    const cached = await renderScreen(again.output);
    expectCleanScreen(cached, again.output);
    for (const name of stepNames(dockerfile)) {
      expect(
        cached.lines.filter((line) => line.startsWith(` => CACHED ${name}`)),
        name,
      ).toHaveLength(1);
    }
    expect(cached.logicalLines.at(-1)).toMatch(/^built in \d+\.\ds: 0 step\(s\) ran, 4 cached; image /);
  });

  it("shows a running step's timer and its last six output lines while it runs", async () => {
    const dir = context({
      Dockerfile: "FROM busybox\nRUN for i in 1 2 3 4 5 6 7 8 9; do echo live $i; done; sleep 1\n",
    });
    const run = buildOnTerminal(["--progress=tty", dir]);
    expect(run.status).toBe(0);
    // Each redraw starts by moving the cursor up to the top of the previous frame.
    const frames = run.output
      .toString("utf8")
      .split(/\x1b\[\d+A/)
      .map((frame) => frame.replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, "").split(/\r?\n|\r/));
    const running = frames.filter((rows) => rows.some((row) => row.includes(" => => # live 9")));
    expect(running.length).toBeGreaterThan(0);
    for (const rows of running) {
      expect(rows.filter((row) => row.startsWith(" => => # "))).toEqual(
        [4, 5, 6, 7, 8, 9].map((i) => ` => => # live ${i}`),
      );
      expect(rows).toContainEqual(expect.stringMatching(/^ => \[2\/2\] RUN for i in .* \d+\.\ds$/));
    }
    // Once done, the step is one line: its output is gone from the final view.
    const screen = await renderScreen(run.output);
    expect(screen.lines.filter((line) => line.includes("live"))).toEqual([
      expect.stringMatching(
        /^ => \[2\/2\] RUN for i in 1 2 3 4 5 6 7 8 9; do echo live \$i; done; sl.* \d+\.\ds$/,
      ),
    ]);
  });

  it("is what auto picks on a terminal, unless CI is set", async () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo auto > /a\n" });
    const auto = buildOnTerminal(["-t", "auto:1", dir]);
    expect(auto.status).toBe(0);
    const screen = await renderScreen(auto.output);
    expect(screen.lines[0]).toMatch(/^\[\+\] Building .* FINISHED$/);

    const ci = buildOnTerminal(["-t", "auto:1", dir], { CI: "true" });
    expect(ci.status).toBe(0);
    const plain = await renderScreen(ci.output);
    expect(plain.lines[0]).toBe("#1 [internal] load metadata and resolve base images");
    expect(ci.output.toString()).not.toContain("\x1b[");
  });

  it("on failure, the final view marks the step and shows its last output, then BuildKit's report", async () => {
    const dir = context({
      Dockerfile:
        "FROM busybox\nRUN for i in 1 2 3 4 5 6 7 8; do echo out $i; done; exit 5\nRUN echo never\n",
    });
    const run = buildOnTerminal(["--progress=tty", dir]);
    expect(run.status).toBe(1);
    const screen = await renderScreen(run.output);
    expectCleanScreen(screen, run.output);
    const failedRow = screen.lines.findIndex((line) => line.startsWith(" => ERROR [2/3] RUN for i in"));
    expect(failedRow).toBeGreaterThan(0);
    // Its last six lines under it, the oldest first.
    expect(screen.lines.slice(failedRow + 1, failedRow + 7)).toEqual(
      [3, 4, 5, 6, 7, 8].map((i) => ` => => # out ${i}`),
    );
    expect(screen.lines.some((line) => line.includes("[3/3] RUN echo never"))).toBe(false);
    const report = screen.logicalLines.slice(screen.logicalLines.indexOf("------"));
    expect(report[1]).toBe(" > [2/3] RUN for i in 1 2 3 4 5 6 7 8; do echo out $i; done; exit 5:");
    expect(report.join("\n")).toContain(" >>> RUN for i in");
    expect(report.at(-1)).toBe(
      'ERROR: process "/bin/sh -c for i in 1 2 3 4 5 6 7 8; do echo out $i; done; exit 5" did not complete successfully: exit code: 5',
    );
  });
});

describe("a failed RUN", () => {
  function failedReport(dockerfile: string) {
    const dir = context({ Dockerfile: dockerfile, x: "x\n" });
    const failed = build(["--progress=plain", dir]);
    expect(failed.status).toBe(1);
    expect(failed.stderr).not.toMatch(/\n\s+at /);
    const lines = failed.stderr.trimEnd().split("\n");
    return { lines, report: lines.slice(lines.indexOf("------")), dir };
  }

  it("is reported as BuildKit does: the step's last output, the Dockerfile around it, the exit code", () => {
    const command = 'echo "about to fail"; echo "last words" >&2; exit 3';
    const dockerfile = `FROM busybox\nRUN echo hi\nRUN ${command}\nCOPY x /x\nRUN echo never\n`;
    const { report, dir } = failedReport(dockerfile);
    const source = dockerfile.split("\n");
    expect(report[0]).toBe("------");
    expect(report[1]).toBe(` > [3/5] RUN ${command}:`);
    // Its stdout and stderr come through two pipes: which line is read first is not fixed.
    const output = report.slice(2, 4);
    for (const line of output) expect(line).toMatch(/^\d+\.\d{3} /);
    expect(output.map((line) => line.replace(/^\S+ /, "")).sort()).toEqual(["about to fail", "last words"]);
    expect(report.slice(4)).toEqual([
      "------",
      `${path.join(dir, "Dockerfile")}:3`,
      "--------------------",
      `   1 |     ${source[0]}`,
      `   2 |     ${source[1]}`,
      `   3 | >>> ${source[2]}`,
      `   4 |     ${source[3]}`,
      `   5 |     ${source[4]}`,
      "--------------------",
      `ERROR: process "/bin/sh -c ${command}" did not complete successfully: exit code: 3`,
    ]);
  });

  it("marks every line of a continued instruction", () => {
    const dockerfile = "FROM busybox\nRUN echo one && \\\n    echo two && false\nCOPY x /x\nRUN echo never\n";
    const { report, dir } = failedReport(dockerfile);
    const source = dockerfile.split("\n");
    const excerpt = report.slice(report.indexOf("--------------------") - 1);
    expect(excerpt[0]).toBe(`${path.join(dir, "Dockerfile")}:2`);
    expect(excerpt.slice(1, 7)).toEqual([
      "--------------------",
      `   1 |     ${source[0]}`,
      `   2 | >>> ${source[1]}`,
      `   3 | >>> ${source[2]}`,
      `   4 |     ${source[3]}`,
      "--------------------",
    ]);
    expect(report.some((line) => /^\d+\.\d{3} two$/.test(line))).toBe(true);
    expect(report.at(-1)).toBe(
      'ERROR: process "/bin/sh -c echo one &&     echo two && false" did not complete successfully: exit code: 1',
    );
  });
});
