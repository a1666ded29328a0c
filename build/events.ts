/**
 * What a build tells whoever follows it: one typed union of plain objects, the very objects
 * `tbuild build --progress=rawjson` prints one per line and the library hands to `onEvent`. The
 * CLI's other progress modes (tty, plain, quiet) are renderings of the same stream, so nothing a
 * user sees in a terminal is missing from it.
 *
 * Order: `build.planned` (the graph about to be solved) once planning is done; then for each
 * step `vertex.started`, its `log`s, and one of `vertex.completed|cached|failed|canceled`
 * (a cached step may have no start); `warning`s at any time; last `build.completed` or
 * `build.failed`, then, with `explain`, one `explain` per step that ran.
 */
import { capMessage } from "../errors/excerpt.js";
import { isTbuildError } from "../errors/index.js";
import type { ImageConfig } from "../oci/spec.js";
import type { BuildGraph } from "../solver/graph.js";
import type { SolveEvent } from "../solver/solve.js";
import { FAILURE_OUTPUT_LINES, type StepFailure } from "./failure.js";
import { formatOutputLine, StepOutput } from "./step-output.js";

/** Fields of every event about one step. */
interface VertexFields {
  /** The vertex digest, or `internal:NAME` for tbuild's own steps (loading metadata, exporting). */
  vertex: string;
  /** `[2/3] RUN make`, as the progress shows it. */
  name: string;
  /** A step of tbuild's own, not an instruction of the Dockerfile. */
  internal?: true;
}

export type BuildEvent =
  /** Planning is done: `graph` and `root` are exactly what the solver is given next. */
  | {
      type: "build.planned";
      /** Steps the build will report on (those `root` needs). */
      vertices: number;
      /** The target stage's filesystem; absent for an empty image. */
      root?: string;
      graph: BuildGraph;
      /** The target's image config, as the frontend computed it. */
      image: ImageConfig;
    }
  | ({ type: "vertex.started" } & VertexFields)
  | ({ type: "vertex.completed"; durationMs: number } & VertexFields)
  | ({ type: "vertex.cached" } & VertexFields)
  | ({ type: "vertex.failed"; error: string } & VertexFields)
  | ({ type: "vertex.canceled" } & VertexFields)
  /** Output of a step's process: `data` is base64 of the bytes as they came (1 stdout, 2 stderr). */
  | { type: "log"; vertex: string; stream: 1 | 2; data: string }
  | { type: "warning"; message: string }
  /**
   * The build runs on a remote worker (`--worker`): the first event, from the client. In a build of
   * several platforms, one per platform, each naming the platform its worker builds.
   */
  | { type: "build.worker"; worker: string; platform?: string }
  | ({ type: "build.completed"; durationMs: number } & BuildSummary)
  | {
      type: "build.failed";
      durationMs: number;
      /** The TbuildError's code (docs/errors.md), when it is one. */
      code?: string;
      error: string;
      /** When a step failed: which, its exit code, where it is, what it printed last. */
      vertex?: string;
      name?: string;
      exitCode?: number;
      location?: { file: string; startLine: number; endLine: number };
      lastOutput?: string[];
      /** The Dockerfile lines around the step, ready to print. */
      excerpt?: string[];
    }
  /** `explain`: why a step that ran missed the cache. */
  | { type: "explain"; vertex: string; name: string; reason: string };

/** What a finished build made. */
export interface BuildSummary {
  /** The image's manifest digest: its ID, as `--iidfile` writes it. */
  digest: string;
  /** The image config's digest; none for an index of several platforms. */
  configDigest?: string;
  /** Bytes of the manifest, the config and the layers, as `tbuild images` counts them. */
  size: number;
  /** The names the image was stored, pushed or archived under. */
  names: string[];
  /** Dockerfile steps run, and taken from the cache (tbuild's own helper steps not counted). */
  ran: number;
  cached: number;
}

/** The id of one of tbuild's own steps, beside the vertex digests. */
export function internalStepId(name: string): string {
  return `internal:${name}`;
}

/**
 * Turns what a build does into BuildEvents for `onEvent`, and keeps each step's last output
 * lines so that a failure can show them.
 */
export class BuildEventStream {
  private readonly output = new StepOutput(FAILURE_OUTPUT_LINES);
  private readonly begun = performance.now();
  private readonly onEvent: (event: BuildEvent) => void;
  private ended = false;

  constructor(onEvent: (event: BuildEvent) => void) {
    this.onEvent = onEvent;
  }

  emit(event: BuildEvent): void {
    this.onEvent(event);
  }

  warn(message: string): void {
    this.emit({ type: "warning", message });
  }

  /** A step of tbuild's own, reported like a vertex. */
  async internal<T>(name: string, work: () => Promise<T>): Promise<T> {
    const vertex = internalStepId(name);
    this.emit({ type: "vertex.started", vertex, name, internal: true });
    const start = performance.now();
    try {
      const result = await work();
      const durationMs = Math.round(performance.now() - start);
      this.emit({ type: "vertex.completed", vertex, name, internal: true, durationMs });
      return result;
    } catch (err) {
      const error = capMessage(err instanceof Error ? err.message : String(err));
      this.emit({ type: "vertex.failed", vertex, name, internal: true, error });
      throw err;
    }
  }

  /** A line of output of the running internal step `name` (what it did, for the user to see). */
  internalLog(name: string, line: string): void {
    const data = Buffer.from(`${line}\n`).toString("base64");
    this.emit({ type: "log", vertex: internalStepId(name), stream: 1, data });
  }

  solved(event: SolveEvent): void {
    if (event.type === "log") {
      this.output.append(event.digest, event.stream, event.data);
      const data = Buffer.from(event.data.buffer, event.data.byteOffset, event.data.byteLength);
      this.emit({ type: "log", vertex: event.digest, stream: event.stream, data: data.toString("base64") });
      return;
    }
    if (event.type === "vertex.started") this.output.start(event.digest);
    else if (event.type !== "vertex.cached") this.output.end(event.digest);
    const fields: VertexFields = {
      vertex: event.digest,
      name: event.info.name,
      ...(event.info.internal ? { internal: true as const } : {}),
    };
    switch (event.type) {
      case "vertex.completed":
        this.emit({ type: event.type, ...fields, durationMs: Math.round(event.durationMs) });
        return;
      case "vertex.failed":
        this.emit({ type: event.type, ...fields, error: capMessage(event.error.message) });
        return;
      default:
        this.emit({ type: event.type, ...fields });
    }
  }

  /** The step's last output lines, oldest first, stamped as BuildKit stamps them (`0.123 text`). */
  lastOutput(vertex: string): string[] {
    return this.output.last(vertex).map(formatOutputLine);
  }

  completed(summary: BuildSummary): void {
    if (this.end()) this.emit({ type: "build.completed", ...summary, durationMs: this.elapsed() });
  }

  failed(error: unknown, failure?: StepFailure): void {
    if (!this.end()) return;
    this.emit({
      type: "build.failed",
      durationMs: this.elapsed(),
      ...(isTbuildError(error) ? { code: error.code } : {}),
      error: capMessage(failure ? failure.reason : error instanceof Error ? error.message : String(error)),
      ...(failure
        ? {
            vertex: failure.vertex,
            name: failure.name,
            ...(failure.exitCode !== undefined ? { exitCode: failure.exitCode } : {}),
            ...(failure.location ? { location: failure.location } : {}),
            lastOutput: failure.lastOutput,
            excerpt: failure.excerpt,
          }
        : {}),
    });
  }

  private end(): boolean {
    if (this.ended) return false;
    this.ended = true;
    return true;
  }

  private elapsed(): number {
    return Math.round(performance.now() - this.begun);
  }
}
