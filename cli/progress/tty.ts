/**
 * `--progress=tty`: BuildKit's live view, redrawn in place about ten times a second while it
 * changes. A header with the elapsed time and how many steps are done, one line per step (a
 * running timer, `CACHED`, `ERROR`, or the time it took), and under each running step its last
 * few output lines. Every row fits the terminal's width (so nothing wraps and the redraw lands
 * where it should), live frames fit its height, and a resize redraws at the new size. At the end
 * one full, static render stays on screen, followed by the summary or the failed step's report.
 */
import { type BuildEvent, internalStepId } from "../../build/events.js";
import { FAILURE_OUTPUT_LINES } from "../../build/failure.js";
import { StepOutput } from "../../build/step-output.js";
import { formatStepFailure } from "./failure.js";
import type { ProgressSink } from "./sink.js";
import { summaryLine } from "./summary.js";
import { columnsOf, fitColumns, terminalLine } from "./terminal-text.js";

/** What the view needs of stderr: a terminal's size, and word of its changes. */
export interface TerminalStream extends NodeJS.WritableStream {
  columns?: number;
  rows?: number;
}

/** Output lines shown under a running step. */
const STEP_OUTPUT_ROWS = 6;
const FRAME_INTERVAL_MS = 100;

const ESC = "\x1b[";
const HIDE_CURSOR = `${ESC}?25l`;
const SHOW_CURSOR = `${ESC}?25h`;
const STYLE = { done: `${ESC}34m`, error: `${ESC}31m`, canceled: `${ESC}33m`, output: `${ESC}2m` } as const;
const RESET = `${ESC}0m`;

type StepState = "running" | "done" | "cached" | "error" | "canceled";

interface Step {
  id: string;
  name: string;
  state: StepState;
  started: number;
  ended?: number;
  /** The last complete output lines, as a terminal shows them. */
  tail: string[];
}

interface Row {
  text: string;
  style?: keyof typeof STYLE;
}

export class TtyProgress implements ProgressSink {
  readonly reportsErrors = false;
  private readonly out: TerminalStream;
  private readonly color: boolean;
  private readonly steps: Step[] = [];
  private readonly byId = new Map<string, Step>();
  private readonly output = new StepOutput(FAILURE_OUTPUT_LINES);
  private readonly begun = performance.now();
  private readonly timer: NodeJS.Timeout;
  private planned = 0;
  private internalSteps = 0;
  /** The frame on screen: its text, and the columns each of its rows takes. */
  private drawn = { text: "", widths: [] as number[], rows: 0 };
  private finished = false;

  constructor(out: TerminalStream, options: { color: boolean }) {
    this.out = out;
    this.color = options.color;
    this.timer = setInterval(() => this.render(), FRAME_INTERVAL_MS);
    this.timer.unref();
    this.out.on("resize", this.onResize);
  }

  handle(event: BuildEvent): void {
    switch (event.type) {
      case "build.planned":
        this.planned = event.vertices;
        return;
      case "vertex.cached": {
        if (this.byId.has(event.vertex)) return;
        this.end(this.step(event.vertex, event.name), "cached");
        return;
      }
      case "vertex.started":
        // tbuild's own steps (loading metadata, exporting) are not in the plan's count.
        if (event.vertex.startsWith(internalStepId("")) && !this.byId.has(event.vertex)) this.internalSteps++;
        this.output.start(event.vertex);
        this.step(event.vertex, event.name);
        return;
      case "log": {
        const step = this.byId.get(event.vertex) ?? this.step(event.vertex, event.vertex);
        const data = Buffer.from(event.data, "base64");
        this.keepOutput(step, this.output.append(event.vertex, event.stream, data));
        return;
      }
      case "vertex.completed":
      case "vertex.failed":
      case "vertex.canceled": {
        const step = this.byId.get(event.vertex) ?? this.step(event.vertex, event.name);
        this.keepOutput(step, this.output.end(event.vertex));
        const state =
          event.type === "vertex.completed" ? "done" : event.type === "vertex.failed" ? "error" : "canceled";
        this.end(step, state, event.type === "vertex.completed" ? event.durationMs : undefined);
        return;
      }
      case "warning":
        this.warn(event.message);
        return;
      case "build.worker":
        this.out.write(`building ${event.platform ? `${event.platform} ` : ""}on worker ${event.worker}\n`);
        return;
      case "build.completed":
      case "build.failed":
        this.finish(event);
        return;
      case "explain":
        this.out.write(`explain: ${event.name}: ${event.reason}\n`);
        return;
    }
  }

  private warn(message: string): void {
    if (this.finished) {
      this.out.write(`WARNING: ${message}\n`);
      return;
    }
    // The warning takes the frame's place; the frame is drawn again below it.
    this.out.write(`${this.cursorToFrameStart()}${ESC}J${terminalLine(`WARNING: ${message}`)}\n`);
    this.drawn = { text: "", widths: [], rows: 0 };
    this.render();
  }

  private finish(outcome: Extract<BuildEvent, { type: "build.completed" | "build.failed" }>): void {
    if (this.finished) return;
    this.finished = true;
    clearInterval(this.timer);
    this.out.off("resize", this.onResize);
    const now = performance.now();
    // Steps still running when the build ended (an interrupt, another step's failure) were stopped.
    for (const step of this.steps) if (step.state === "running") this.end(step, "canceled", undefined, now);
    this.draw(this.frame(outcome), true);
    if (outcome.type === "build.completed") this.out.write(summaryLine(outcome, outcome.durationMs));
    else if (outcome.name !== undefined) this.out.write(formatStepFailure(outcome));
  }

  private step(id: string, name: string): Step {
    let step = this.byId.get(id);
    if (step) {
      step.state = "running";
      step.started = performance.now();
      delete step.ended;
    } else {
      step = { id, name: terminalLine(name), state: "running", started: performance.now(), tail: [] };
      this.byId.set(id, step);
      this.steps.push(step);
    }
    return step;
  }

  private end(step: Step, state: StepState, durationMs?: number, at = performance.now()) {
    step.state = state;
    step.ended = durationMs !== undefined ? step.started + durationMs : at;
  }

  private keepOutput(step: Step, lines: { text: string }[]) {
    for (const line of lines) step.tail.push(terminalLine(line.text));
    if (step.tail.length > STEP_OUTPUT_ROWS) step.tail.splice(0, step.tail.length - STEP_OUTPUT_ROWS);
  }

  private get columns(): number {
    // The last column is never written: some terminals wrap as soon as it is.
    return Math.max(20, (this.out.columns ?? 80) - 1);
  }

  /** The rows of a frame: live (fitted to the terminal's height), or the final one (everything). */
  private frame(outcome?: Extract<BuildEvent, { type: "build.completed" | "build.failed" }>): Row[] {
    const width = this.columns;
    const now = performance.now();
    const done = this.steps.filter((s) => s.state !== "running").length;
    const total = Math.max(this.planned + this.internalSteps, this.steps.length);
    const elapsed = ((now - this.begun) / 1000).toFixed(1);
    const finished = outcome?.type === "build.completed" ? " FINISHED" : "";
    const header: Row = { text: fitColumns(`[+] Building ${elapsed}s (${done}/${total})${finished}`, width) };
    const blocks = this.steps.map((step) => {
      const rows: Row[] = [this.stepRow(step, width, now)];
      const failed = outcome !== undefined && step.state === "error";
      if (step.state === "running" || failed) {
        const unfinished = step.state === "running" ? this.output.unfinished(step.id).map(terminalLine) : [];
        const lines = [...step.tail, ...unfinished.filter((l) => l !== "")].slice(-STEP_OUTPUT_ROWS);
        for (const line of lines) {
          rows.push({ text: fitColumns(` => => # ${line}`, width), style: "output" });
        }
      }
      return { step, rows };
    });
    if (outcome === undefined) {
      // A live frame must fit the screen (the cursor cannot go back above its top): finished
      // steps scroll away first, oldest first; then the oldest rows of what is left.
      const room = Math.max(2, (this.out.rows ?? 24) - 2);
      let excess = blocks.reduce((n, b) => n + b.rows.length, 0) - room;
      for (const block of blocks) {
        if (excess <= 0) break;
        if (block.step.state !== "running") {
          excess -= block.rows.length;
          block.rows = [];
        }
      }
      const rows = blocks.flatMap((b) => b.rows);
      return [header, ...rows.slice(Math.max(0, rows.length - room))];
    }
    return [header, ...blocks.flatMap((b) => b.rows)];
  }

  /** ` => CACHED [2/3] RUN make        0.0s`: the timer at the right edge, the name cut to fit. */
  private stepRow(step: Step, width: number, now: number): Row {
    const label =
      { running: "", done: "", cached: "CACHED ", error: "ERROR ", canceled: "CANCELED " }[step.state] +
      step.name;
    let seconds = step.state === "cached" ? 0 : ((step.ended ?? now) - step.started) / 1000;
    if (seconds < 0.05) seconds = 0;
    const timer = ` ${seconds.toFixed(1)}s`;
    const left = fitColumns(` => ${label}`, Math.max(0, width - timer.length - 1));
    const text = fitColumns(
      `${left}${" ".repeat(Math.max(1, width - columnsOf(left) - timer.length))}${timer}`,
      width,
    );
    const style = { running: undefined, done: "done", cached: "done", error: "error", canceled: "canceled" }[
      step.state
    ] as Row["style"];
    return style ? { text, style } : { text };
  }

  private render() {
    if (!this.finished) this.draw(this.frame(), false);
  }

  /**
   * Draws `rows` over the frame on screen, unless nothing changed; erases what the old frame left
   * below. The cursor is hidden during the one write, never left hidden whatever ends the process.
   */
  private draw(rows: Row[], always: boolean) {
    const lines = rows.map((row) =>
      this.color && row.style ? `${STYLE[row.style]}${row.text}${RESET}` : row.text,
    );
    const text = lines.join("\n");
    if (!always && text === this.drawn.text) return;
    let out = HIDE_CURSOR + this.cursorToFrameStart();
    for (const line of lines) out += `${ESC}2K${line}\n`;
    out += `${ESC}J${SHOW_CURSOR}`;
    this.out.write(out);
    this.drawn = { text, widths: rows.map((row) => columnsOf(row.text)), rows: rows.length };
  }

  private cursorToFrameStart(): string {
    return `${this.drawn.rows > 0 ? `${ESC}${this.drawn.rows}A` : ""}\r`;
  }

  private readonly onResize = () => {
    // A terminal that reflows has wrapped the rows drawn for a wider screen: count the rows they
    // take now, so that the next frame starts where the old one did.
    const columns = Math.max(1, this.out.columns ?? 80);
    const rows = this.drawn.widths.reduce((n, w) => n + Math.max(1, Math.ceil(w / columns)), 0);
    this.drawn = { text: "", widths: this.drawn.widths, rows: Math.min(rows, this.out.rows ?? rows) };
    this.render();
  };
}
