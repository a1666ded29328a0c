/**
 * `--progress=rawjson`: one JSON object per line on stderr, nothing else, so a program can follow
 * the build: the plan, every vertex's start, completion, cache hit, failure or cancellation, its
 * output (base64, as it came), warnings, and at the end the image's digests or what failed.
 */
import { capMessage } from "../../errors/excerpt.js";
import { isTbuildError } from "../../errors/index.js";
import type { SolveEvent } from "../../solver/solve.js";
import { FAILURE_OUTPUT_LINES } from "./failure.js";
import { type BuildOutcome, internalStepId, type ProgressSink } from "./sink.js";
import { formatOutputLine, StepOutput } from "./step-output.js";

export class RawJsonProgress implements ProgressSink {
  readonly reportsErrors = true;
  private readonly output = new StepOutput(FAILURE_OUTPUT_LINES);
  private readonly begun = performance.now();
  private readonly out: NodeJS.WritableStream;
  private finished = false;

  constructor(out: NodeJS.WritableStream) {
    this.out = out;
  }

  plan(vertices: number): void {
    this.emit({ type: "build.planned", vertices });
  }

  async internal<T>(name: string, work: () => Promise<T>): Promise<T> {
    const vertex = internalStepId(name);
    this.emit({ type: "vertex.started", vertex, name, internal: true });
    const start = performance.now();
    try {
      const result = await work();
      this.emit({
        type: "vertex.completed",
        vertex,
        name,
        internal: true,
        durationMs: Math.round(performance.now() - start),
      });
      return result;
    } catch (err) {
      this.emit({
        type: "vertex.failed",
        vertex,
        name,
        internal: true,
        error: capMessage((err as Error).message),
      });
      throw err;
    }
  }

  handle(event: SolveEvent): void {
    if (event.type === "log") {
      this.output.append(event.digest, event.stream, event.data);
      this.emit({
        type: "log",
        vertex: event.digest,
        stream: event.stream,
        data: Buffer.from(event.data).toString("base64"),
      });
      return;
    }
    if (event.type === "vertex.started") this.output.start(event.digest);
    else if (event.type !== "vertex.cached") this.output.end(event.digest);
    this.emit({
      type: event.type,
      vertex: event.digest,
      name: event.info.name,
      ...(event.info.internal ? { internal: true } : {}),
      ...("durationMs" in event ? { durationMs: Math.round(event.durationMs) } : {}),
      ...("error" in event ? { error: capMessage(event.error.message) } : {}),
    });
  }

  warn(message: string): void {
    this.emit({ type: "warning", message });
  }

  lastOutput(vertex: string): string[] {
    return this.output.last(vertex).map(formatOutputLine);
  }

  finish(outcome: BuildOutcome): void {
    if (this.finished) return;
    this.finished = true;
    const durationMs = Math.round(performance.now() - this.begun);
    if (outcome.ok) {
      this.emit({ type: "build.completed", ...outcome.summary, durationMs });
      return;
    }
    const { error, failure } = outcome;
    this.emit({
      type: "build.failed",
      durationMs,
      ...(isTbuildError(error) ? { code: error.code } : {}),
      error: capMessage(failure ? failure.reason : error instanceof Error ? error.message : String(error)),
      ...(failure
        ? {
            vertex: failure.vertex,
            name: failure.name,
            ...(failure.exitCode !== undefined ? { exitCode: failure.exitCode } : {}),
            ...(failure.location ? { location: failure.location } : {}),
            lastOutput: failure.lastOutput,
          }
        : {}),
    });
  }

  private emit(event: Record<string, unknown>) {
    this.out.write(`${JSON.stringify(event)}\n`);
  }
}
