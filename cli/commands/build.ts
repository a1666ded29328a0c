/**
 * `tbuild build`: the flags become a BuildRequest (cli/build-request.ts), which the library's
 * build() runs; what is left here is the terminal's part: the progress view, and, unprivileged, running the
 * whole command again inside a user namespace over the user's subuids.
 *
 * `TBUILD_EVENTS_FILE=FILE` also appends every event, as `--progress=rawjson` prints it, to FILE,
 * whatever the progress mode: a CI log stays readable and a program still gets the events (the
 * plan among them: the graph the build solved, which `tbuild debug graph` prints too).
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { isTbuildError } from "../../errors/index.js";
import { BuildCanceledError, build } from "../../index.js";
import { defaultStoreRoot } from "../../oci/store/index.js";
import { stopAbandonedContainers } from "../../worker/build-state.js";
import { hasWorkerPrivileges, reexecInUserNamespace } from "../../worker/userns.js";
import { parseBuildRequest } from "../build-request.js";
import { openProgress, type ProgressSink, progressModeOf } from "../progress/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const { values } = args;
  // Checked before anything runs (and before a rootless re-exec).
  const request = await parseBuildRequest(args, ctx, "build");
  const progressMode = progressModeOf(
    (values.progress as string | undefined) ?? ctx.env.TBUILD_PROGRESS,
    values.quiet === true,
    ctx.stderr,
    ctx.env,
  );

  // A build on a remote worker runs no step here: no user namespace, no containers of this store.
  if (request.worker === undefined) {
    if (!hasWorkerPrivileges()) await stopAbandonedContainers(defaultStoreRoot(ctx.env));
    const reexec = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
    if (reexec !== undefined) return reexec;
  }

  // Opened on the first event: an error before the build starts (no Dockerfile) is printed alone.
  let progress: ProgressSink | undefined;
  let failureShown = false;
  const eventsFile = ctx.env.TBUILD_EVENTS_FILE;
  let eventsFd: number | undefined;
  try {
    await build(request, {
      env: ctx.env,
      cwd: ctx.cwd,
      signal: ctx.signal,
      stdout: ctx.stdout,
      onEvent: (event) => {
        progress ??= openProgress(progressMode, ctx);
        progress.handle(event);
        if (event.type === "build.failed") failureShown = progress.reportsErrors;
        if (eventsFile) {
          eventsFd ??= openSync(eventsFile, "a", 0o600);
          writeSync(eventsFd, `${JSON.stringify(event)}\n`);
        }
      },
    });
    return 0;
  } catch (caught) {
    // An interrupt is reported as the CLI reports signals (main.ts), with the signal's exit code.
    const err = caught instanceof BuildCanceledError ? caught.cause : caught;
    // rawjson's last event said it all: nothing more is printed, the exit code says the rest.
    if (failureShown && isTbuildError(err)) return err.exitCode;
    throw err;
  } finally {
    if (eventsFd !== undefined) closeSync(eventsFd);
  }
}
