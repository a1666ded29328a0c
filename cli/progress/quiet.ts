/**
 * `--progress=quiet` / `-q`: nothing while the build runs, the image ID alone on stdout at the end
 * (so `id=$(tbuild build -q .)` works); warnings and a failed step's report still go to stderr.
 */
import type { SolveEvent } from "../../solver/solve.js";
import { FAILURE_OUTPUT_LINES, formatStepFailure } from "./failure.js";
import type { BuildOutcome, ProgressSink } from "./sink.js";
import { formatOutputLine, StepOutput } from "./step-output.js";

export class QuietProgress implements ProgressSink {
  readonly reportsErrors = false;
  private readonly output = new StepOutput(FAILURE_OUTPUT_LINES);
  private readonly stdout: NodeJS.WritableStream;
  private readonly stderr: NodeJS.WritableStream;
  private finished = false;

  constructor(stdout: NodeJS.WritableStream, stderr: NodeJS.WritableStream) {
    this.stdout = stdout;
    this.stderr = stderr;
  }

  plan(): void {}

  internal<T>(_name: string, work: () => Promise<T>): Promise<T> {
    return work();
  }

  handle(event: SolveEvent): void {
    if (event.type === "vertex.started") this.output.start(event.digest);
    else if (event.type === "log") this.output.append(event.digest, event.stream, event.data);
    else if (event.type !== "vertex.cached") this.output.end(event.digest);
  }

  warn(message: string): void {
    this.stderr.write(`WARNING: ${message}\n`);
  }

  lastOutput(vertex: string): string[] {
    return this.output.last(vertex).map(formatOutputLine);
  }

  finish(outcome: BuildOutcome): void {
    if (this.finished) return;
    this.finished = true;
    if (outcome.ok) this.stdout.write(`${outcome.summary.digest}\n`);
    else if (outcome.failure) this.stderr.write(formatStepFailure(outcome.failure));
  }
}
