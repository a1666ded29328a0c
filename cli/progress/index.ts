/**
 * How a build shows its progress, as `docker buildx build --progress` does: `auto` (the live
 * view on a terminal, plain text elsewhere and in CI), `tty`, `plain`, `rawjson` and `quiet`.
 */
import { TbuildError, UsageError } from "../../errors/index.js";
import { PlainProgress } from "./plain.js";
import { QuietProgress } from "./quiet.js";
import { RawJsonProgress } from "./rawjson.js";
import type { ProgressSink } from "./sink.js";
import { type TerminalStream, TtyProgress } from "./tty.js";

export type { ProgressSink } from "./sink.js";

export type ProgressMode = "tty" | "plain" | "rawjson" | "quiet";

/**
 * The mode a build uses: `-q` wins, then `--progress`, then `$TBUILD_PROGRESS` (given as
 * `requested`), then `auto`, which is `tty` when stderr is a terminal and `$CI` is not set.
 */
export function progressModeOf(
  requested: string | undefined,
  quiet: boolean,
  stderr: NodeJS.WritableStream,
  env: NodeJS.ProcessEnv,
): ProgressMode {
  if (quiet) return "quiet";
  switch (requested || "auto") {
    case "auto":
      return isTerminal(stderr) && !inCi(env) && env.TERM !== "dumb" ? "tty" : "plain";
    case "tty":
      if (!isTerminal(stderr)) {
        throw new TbuildError(
          "E_NOT_A_TERMINAL",
          "--progress=tty needs stderr to be a terminal: use --progress=plain (or auto)",
        );
      }
      return "tty";
    case "plain":
      return "plain";
    case "rawjson":
      return "rawjson";
    case "quiet":
      return "quiet";
    default:
      throw new UsageError(`--progress must be auto, tty, plain, rawjson or quiet, not "${requested}"`);
  }
}

export function openProgress(
  mode: ProgressMode,
  streams: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; env: NodeJS.ProcessEnv },
): ProgressSink {
  switch (mode) {
    case "tty":
      return new TtyProgress(streams.stderr as TerminalStream, { color: !streams.env.NO_COLOR });
    case "plain":
      return new PlainProgress(streams.stderr);
    case "rawjson":
      return new RawJsonProgress(streams.stderr);
    case "quiet":
      return new QuietProgress(streams.stdout, streams.stderr);
  }
}

function isTerminal(stream: NodeJS.WritableStream): boolean {
  return (stream as { isTTY?: boolean }).isTTY === true;
}

/** CI services set `CI` (GitHub Actions, GitLab, CircleCI, Travis, Buildkite...). */
function inCi(env: NodeJS.ProcessEnv): boolean {
  const value = env.CI?.toLowerCase();
  return value !== undefined && value !== "" && value !== "0" && value !== "false";
}
