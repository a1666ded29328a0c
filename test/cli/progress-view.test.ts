/**
 * The live view and the Dockerfile excerpt on their own: a terminal resized while the view is
 * drawn (what SIGWINCH brings), played through a terminal emulator that reflows as real ones do;
 * and the excerpt at the edges of a file.
 */
import { EventEmitter } from "node:events";
import xterm from "@xterm/headless";
import { describe, expect, it } from "vitest";
import { dockerfileExcerpt } from "../../build/failure.js";
import { type TerminalStream, TtyProgress } from "../../cli/progress/tty.js";
import { readScreen } from "../helpers/terminal.js";

/** stderr as a terminal of a given size, keeping what is written to it. */
class TerminalOutput extends EventEmitter {
  columns: number;
  rows: number;
  written: string[] = [];

  constructor(columns: number, rows: number) {
    super();
    this.columns = columns;
    this.rows = rows;
  }

  write(text: string): boolean {
    this.written.push(text);
    return true;
  }

  /** What was written since the last call. */
  take(): string {
    return this.written.splice(0).join("");
  }
}

const write = (terminal: InstanceType<typeof xterm.Terminal>, data: string) =>
  new Promise<void>((resolve) => terminal.write(data.replaceAll("\n", "\r\n"), resolve));

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 250));

describe("the live view", () => {
  it("redraws in place at the new width when the terminal is resized", async () => {
    const out = new TerminalOutput(100, 20);
    const terminal = new xterm.Terminal({ cols: 100, rows: 20, scrollback: 1000, allowProposedApi: true });
    const view = new TtyProgress(out as unknown as TerminalStream, { color: true });
    const name = `[1/2] RUN ${"make everything ".repeat(5).trim()}`;
    view.handle({ type: "vertex.cached", vertex: "sha256:a", name: "[internal] load build context" });
    view.handle({ type: "vertex.started", vertex: "sha256:b", name });
    view.handle({
      type: "log",
      vertex: "sha256:b",
      stream: 1,
      data: Buffer.from(`${"output ".repeat(15)}\n`).toString("base64"),
    });
    await nextFrame();
    await write(terminal, out.take());
    expect(readScreen(terminal).lines.some((line) => line.startsWith(` => ${name.slice(0, 40)}`))).toBe(true);

    out.columns = 50;
    terminal.resize(50, 20);
    out.emit("resize");
    view.handle({ type: "vertex.completed", vertex: "sha256:b", name, durationMs: 1200 });
    view.handle({
      type: "build.completed",
      digest: "sha256:1234",
      configDigest: "sha256:5678",
      size: 1000,
      names: [],
      ran: 1,
      cached: 0,
      durationMs: 1300,
    });
    await write(terminal, out.take());

    const screen = readScreen(terminal);
    expect(screen.lines[0]).toMatch(/^\[\+\] Building \d+\.\ds \(2\/2\) FINISHED$/);
    expect(screen.lines.slice(1, 3)).toEqual([
      expect.stringMatching(/^ => CACHED \[internal\] load build context +0\.0s$/),
      expect.stringMatching(/^ => \[1\/2\] RUN make everything make every\S* +1\.2s$/),
    ]);
    for (const line of screen.lines.slice(0, 3)) expect(line.length).toBeLessThan(50);
    expect(screen.wrapped.slice(0, 4)).not.toContain(true);
    // Nothing of the wider frames is left: the summary (wrapped at 50 columns) follows the view.
    expect(screen.logicalLines.slice(3)).toEqual([
      expect.stringMatching(/^built in \d+\.\ds: 1 step\(s\) ran, 0 cached; image sha256:1234 \(1kB\)$/),
    ]);
  });

  it("shows no more than six output lines under a running step, and puts warnings above the view", async () => {
    const out = new TerminalOutput(80, 24);
    const terminal = new xterm.Terminal({ cols: 80, rows: 24, scrollback: 1000, allowProposedApi: true });
    const view = new TtyProgress(out as unknown as TerminalStream, { color: false });
    const name = "[1/1] RUN ./build.sh";
    view.handle({ type: "vertex.started", vertex: "sha256:c", name });
    const lines = Array.from({ length: 9 }, (_, i) => `\x1b[32mstep ${i + 1}\x1b[0m\tdone`);
    view.handle({
      type: "log",
      vertex: "sha256:c",
      stream: 2,
      data: Buffer.from(`${lines.join("\n")}\n50%\r75%`).toString("base64"),
    });
    view.handle({ type: "warning", message: "the base image is old" });
    await nextFrame();
    await write(terminal, out.take());

    const screen = readScreen(terminal);
    expect(screen.lines[0]).toBe("WARNING: the base image is old");
    expect(screen.lines[1]).toMatch(/^\[\+\] Building \d+\.\ds \(0\/1\)$/);
    expect(screen.lines[2]).toMatch(/^ => \[1\/1\] RUN \.\/build\.sh +\d+\.\ds$/);
    expect(screen.lines.slice(3)).toEqual([
      " => => # step 5 done",
      " => => # step 6 done",
      " => => # step 7 done",
      " => => # step 8 done",
      " => => # step 9 done",
      " => => # 75%",
    ]);
    view.handle({ type: "build.failed", error: "interrupted", durationMs: 2000 });
    await write(terminal, out.take());
    expect(readScreen(terminal).lines[2]).toMatch(/^ => CANCELED \[1\/1\] RUN \.\/build\.sh +\d+\.\ds$/);
  });
});

describe("the Dockerfile excerpt", () => {
  const location = (startLine: number, endLine = startLine) => ({ file: "Dockerfile", startLine, endLine });

  it("shows what the file has when the instruction is at its start or end", () => {
    expect(dockerfileExcerpt("FROM busybox\n", location(1))).toEqual([
      "Dockerfile:1",
      "--------------------",
      "   1 | >>> FROM busybox",
      "--------------------",
    ]);
    const source = "FROM busybox\nRUN a\nRUN b\nRUN c\nRUN d\n";
    expect(dockerfileExcerpt(source, location(1)).slice(2, -1)).toEqual([
      "   1 | >>> FROM busybox",
      "   2 |     RUN a",
      "   3 |     RUN b",
    ]);
    expect(dockerfileExcerpt(source, location(5)).slice(2, -1)).toEqual([
      "   3 |     RUN b",
      "   4 |     RUN c",
      "   5 | >>> RUN d",
    ]);
  });

  it("gives nothing for a line the file does not have", () => {
    expect(dockerfileExcerpt("FROM busybox\n", location(3))).toEqual([]);
  });
});
