/**
 * BuildKit's plain progress shape, so log parsers written for `docker buildx build --progress=plain`
 * keep working: `#N [stage i/n] INSTRUCTION`, output lines as `#N 0.123 text`, `#N CACHED`,
 * `#N DONE 1.2s`, `#N ERROR: message`; after a failed step, the step's last output and where it is
 * in the Dockerfile.
 */
import { capLine } from "../../errors/excerpt.js";
import type { SolveEvent } from "../../solver/solve.js";
import { FAILURE_OUTPUT_LINES, formatStepFailure } from "./failure.js";
import { type BuildOutcome, internalStepId, type ProgressSink } from "./sink.js";
import { formatOutputLine, StepOutput } from "./step-output.js";
import { summaryLine } from "./summary.js";

export class PlainProgress implements ProgressSink {
  readonly reportsErrors = false;
  private readonly numbers = new Map<string, number>();
  private readonly cached = new Set<string>();
  private readonly output = new StepOutput(FAILURE_OUTPUT_LINES);
  private readonly begun = performance.now();
  private next = 1;
  private finished = false;

  private readonly out: NodeJS.WritableStream;

  constructor(out: NodeJS.WritableStream) {
    this.out = out;
  }

  plan(): void {}

  async internal<T>(name: string, work: () => Promise<T>): Promise<T> {
    const n = this.number(internalStepId(name));
    this.write(`#${n} ${name}\n`);
    const start = performance.now();
    try {
      const result = await work();
      this.write(`#${n} DONE ${seconds(performance.now() - start)}\n\n`);
      return result;
    } catch (err) {
      this.write(`#${n} ERROR: ${capLine((err as Error).message.split("\n")[0]!)}\n\n`);
      throw err;
    }
  }

  handle(event: SolveEvent): void {
    const n = this.number(event.digest);
    switch (event.type) {
      case "vertex.cached":
        // One CACHED line per step, however many times the solver says so.
        if (this.cached.has(event.digest)) return;
        this.cached.add(event.digest);
        this.write(`#${n} ${event.info.name}\n#${n} CACHED\n\n`);
        return;
      case "vertex.started":
        this.output.start(event.digest);
        this.write(`#${n} ${event.info.name}\n`);
        return;
      case "log":
        this.lines(n, this.output.append(event.digest, event.stream, event.data));
        return;
      case "vertex.completed":
        this.lines(n, this.output.end(event.digest));
        this.write(`#${n} DONE ${seconds(event.durationMs)}\n\n`);
        return;
      case "vertex.failed":
        this.lines(n, this.output.end(event.digest));
        this.write(`#${n} ERROR: ${capLine(event.error.message.split("\n")[0]!)}\n\n`);
        return;
      case "vertex.canceled":
        this.lines(n, this.output.end(event.digest));
        this.write(`#${n} CANCELED\n\n`);
        return;
    }
  }

  warn(message: string): void {
    this.write(`WARNING: ${message}\n`);
  }

  lastOutput(vertex: string): string[] {
    return this.output.last(vertex).map(formatOutputLine);
  }

  finish(outcome: BuildOutcome): void {
    if (this.finished) return;
    this.finished = true;
    if (outcome.ok) this.write(summaryLine(outcome.summary, performance.now() - this.begun));
    else if (outcome.failure) this.write(formatStepFailure(outcome.failure));
  }

  private number(id: string): number {
    let n = this.numbers.get(id);
    if (n === undefined) {
      n = this.next++;
      this.numbers.set(id, n);
    }
    return n;
  }

  private lines(n: number, lines: ReturnType<StepOutput["append"]>) {
    for (const line of lines) this.write(`#${n} ${formatOutputLine(line)}\n`);
  }

  private write(text: string) {
    this.out.write(text);
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}
