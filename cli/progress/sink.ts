/**
 * The one seam between a build and how its progress is shown: the live terminal view (`tty`),
 * BuildKit's plain log (`plain`), one JSON object per line (`rawjson`), or nothing but the image
 * ID (`quiet`). A build feeds every sink the same calls; each decides what the user sees.
 */
import type { SolveEvent } from "../../solver/solve.js";
import type { StepFailure } from "./failure.js";

/** What a finished build made, for the closing summary. */
export interface BuildSummary {
  /** The image's manifest digest: its ID, as `--iidfile` writes it. */
  digest: string;
  configDigest: string;
  /** Bytes of the manifest, the config and the layers, as `tbuild images` counts them. */
  size: number;
  /** The names the image was stored, pushed or archived under. */
  names: string[];
  /** Dockerfile steps run, and taken from the cache (tbuild's own helper steps not counted). */
  ran: number;
  cached: number;
}

export type BuildOutcome =
  | { ok: true; summary: BuildSummary }
  /** `failure` when a step failed; any other error is reported by the command as usual. */
  | { ok: false; error: unknown; failure?: StepFailure };

export interface ProgressSink {
  /**
   * True when `finish` gives a failure in the sink's own form (rawjson's last event), so the
   * command must not print it again.
   */
  readonly reportsErrors: boolean;
  /** The vertices the build will report on, known before the first runs (the view's `(n/total)`). */
  plan(vertices: number): void;
  /** A step of tbuild's own (reading the Dockerfile, exporting) shown like a vertex. */
  internal<T>(name: string, work: () => Promise<T>): Promise<T>;
  handle(event: SolveEvent): void;
  /** A warning for the user, placed where it does not break the display. */
  warn(message: string): void;
  /** The step's last output lines, oldest first, stamped as BuildKit stamps them (`0.123 text`). */
  lastOutput(vertex: string): string[];
  /** Ends the display; later calls do nothing. */
  finish(outcome: BuildOutcome): void;
}

/** Internal steps get ids of their own, beside the vertex digests. */
export function internalStepId(name: string): string {
  return `internal:${name}`;
}
