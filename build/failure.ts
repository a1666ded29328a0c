/**
 * A failed step, described as BuildKit reports it after a failed build: the step's name, its last
 * output lines, and the Dockerfile lines around the instruction with `>>>` on each of its lines
 * (cli/progress/failure.ts prints them); the reason is the one line the error says.
 */
import { capLine } from "../errors/excerpt.js";
import { isTbuildError, TbuildError } from "../errors/index.js";
import type { StepFailedError } from "../solver/solve.js";

/** At most this many output lines are shown under the failed step. */
export const FAILURE_OUTPUT_LINES = 10;

export interface StepFailure {
  vertex: string;
  /** `[2/3] RUN false` */
  name: string;
  /** One line (a RUN's message without the output it carries): what the `ERROR:` line says. */
  reason: string;
  /** The exit code of a RUN's process. */
  exitCode?: number;
  location?: { file: string; startLine: number; endLine: number };
  /** The step's last output lines, `0.123 text`, oldest first. */
  lastOutput: string[];
  /** The Dockerfile excerpt, ready to print (empty when the step has no place in the Dockerfile). */
  excerpt: string[];
}

/** The worker's error for a RUN that exited non-zero carries the exit code and the output it saw. */
interface RunFailure {
  code: "E_RUN_FAILED";
  exitCode: number;
  lastOutput: string[];
  message: string;
}

function isRunFailure(err: unknown): err is RunFailure {
  return isTbuildError(err) && err.code === "E_RUN_FAILED" && Array.isArray(Reflect.get(err, "lastOutput"));
}

export function describeStepFailure(
  err: StepFailedError,
  lastOutput: string[],
  dockerfile: { displayName: string; source: string | Buffer },
): StepFailure {
  const cause = err.cause;
  const run = isRunFailure(cause) ? cause : undefined;
  const message = cause instanceof Error ? cause.message : String(cause);
  const location = err.info.location;
  const output = lastOutput.length > 0 ? lastOutput : (run?.lastOutput ?? []);
  return {
    vertex: err.digest,
    name: err.info.name,
    reason: run ? capLine(message.split("\n")[0]!) : message,
    ...(run ? { exitCode: run.exitCode } : {}),
    ...(location ? { location } : {}),
    lastOutput: output.slice(-FAILURE_OUTPUT_LINES),
    excerpt:
      location && location.file === dockerfile.displayName
        ? dockerfileExcerpt(String(dockerfile.source), location)
        : [],
  };
}

/**
 * BuildKit's excerpt of the instruction's lines: `Dockerfile:3`, a rule, each line numbered with
 * `>>>` on the instruction's own, and context around it: two lines each side of a one-line
 * instruction, one each side of a longer one (fewer at the file's edges), then a rule.
 */
export function dockerfileExcerpt(
  source: string,
  location: { file: string; startLine: number; endLine: number },
): string[] {
  const lines = source.split("\n");
  if (lines.length > 1 && lines.at(-1) === "") lines.pop();
  const first = location.startLine;
  const last = Math.min(Math.max(location.endLine, first), lines.length);
  if (first < 1 || first > lines.length) return [];
  // BuildKit's loop: each round widens both sides where it can and counts one more, until `pad`.
  const pad = first === last ? 4 : 2;
  let start = first;
  let end = last;
  for (let widened = 0; widened < pad; widened++) {
    if (start > 1) {
      start--;
      widened++;
    }
    if (end < lines.length) {
      end++;
      widened++;
    }
  }
  const rule = "-".repeat(20);
  const excerpt = [`${location.file}:${first}`, rule];
  for (let n = start; n <= end; n++) {
    const marker = n >= first && n <= last ? ">>>" : "   ";
    excerpt.push(` ${String(n).padStart(3)} | ${marker} ${capLine(lines[n - 1]!.replace(/\r$/, ""))}`);
  }
  excerpt.push(rule);
  return excerpt;
}

/** A step failed: the error says why in one line; `failure` has the step, its output and where it is. */
export class BuildStepFailedError extends TbuildError {
  readonly failure: StepFailure;

  constructor(failure: StepFailure, cause: StepFailedError) {
    super("E_STEP_FAILED", failure.reason, { cause, exitCode: cause.exitCode });
    this.failure = failure;
  }
}
