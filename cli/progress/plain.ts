/**
 * BuildKit's plain progress shape, so log parsers written for `docker buildx build --progress=plain`
 * keep working: `#N [stage i/n] INSTRUCTION`, output lines as `#N 0.123 text`, `#N CACHED`,
 * `#N DONE 1.2s`, `#N ERROR: message`; after a failed step, the step's last output and where it is
 * in the Dockerfile.
 */
import type { BuildEvent } from "../../build/events.js";
import { FAILURE_OUTPUT_LINES } from "../../build/failure.js";
import { formatOutputLine, StepOutput } from "../../build/step-output.js";
import { capLine } from "../../errors/excerpt.js";
import { formatStepFailure } from "./failure.js";
import type { ProgressSink } from "./sink.js";
import { summaryLine } from "./summary.js";

export class PlainProgress implements ProgressSink {
  readonly reportsErrors = false;
  private readonly numbers = new Map<string, number>();
  private readonly cached = new Set<string>();
  private readonly output = new StepOutput(FAILURE_OUTPUT_LINES);
  private next = 1;

  private readonly out: NodeJS.WritableStream;

  constructor(out: NodeJS.WritableStream) {
    this.out = out;
  }

  handle(event: BuildEvent): void {
    switch (event.type) {
      case "vertex.cached": {
        // One CACHED line per step, however many times the solver says so.
        if (this.cached.has(event.vertex)) return;
        this.cached.add(event.vertex);
        const n = this.number(event.vertex);
        this.write(`#${n} ${event.name}\n#${n} CACHED\n\n`);
        return;
      }
      case "vertex.started":
        this.output.start(event.vertex);
        this.write(`#${this.number(event.vertex)} ${event.name}\n`);
        return;
      case "log": {
        const lines = this.output.append(event.vertex, event.stream, Buffer.from(event.data, "base64"));
        this.lines(this.number(event.vertex), lines);
        return;
      }
      case "vertex.completed": {
        const n = this.number(event.vertex);
        this.lines(n, this.output.end(event.vertex));
        this.write(`#${n} DONE ${seconds(event.durationMs)}\n\n`);
        return;
      }
      case "vertex.failed": {
        const n = this.number(event.vertex);
        this.lines(n, this.output.end(event.vertex));
        this.write(`#${n} ERROR: ${capLine(event.error.split("\n")[0]!)}\n\n`);
        return;
      }
      case "vertex.canceled": {
        const n = this.number(event.vertex);
        this.lines(n, this.output.end(event.vertex));
        this.write(`#${n} CANCELED\n\n`);
        return;
      }
      case "warning":
        this.write(`WARNING: ${event.message}\n`);
        return;
      case "build.worker":
        // buildx's first line, `#0 building with "NAME" instance`, for the worker a build went to.
        this.write(`#0 building ${event.platform ? `${event.platform} ` : ""}on worker ${event.worker}\n\n`);
        return;
      case "build.completed":
        this.write(summaryLine(event, event.durationMs));
        return;
      case "build.failed":
        if (event.name !== undefined) this.write(formatStepFailure(event));
        return;
      case "explain":
        this.write(`explain: ${event.name}: ${event.reason}\n`);
        return;
    }
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
