import { enableCompileCache } from "node:module";
import { tmpdir } from "node:os";
import { watchOuterProcess } from "../worker/userns.js";
import { findCommand } from "./commands.js";
import { compileCacheDir } from "./compile-cache.js";
import { commandHelp, topLevelHelp } from "./help.js";
import { exitCodeOfSignal, InterruptedError, reportError } from "./report-error.js";
import { runCommand, unknownCommand } from "./run-command.js";
import type { CommandContext } from "./spec.js";

// Commands load their modules after this line; Node keeps their compiled code between runs, in a
// directory of this user's (compile-cache.ts). NODE_COMPILE_CACHE, Node's own setting, wins.
if (!process.env.NODE_COMPILE_CACHE) {
  const dir = compileCacheDir(process.env, tmpdir(), process.getuid?.() ?? -1);
  if (dir !== undefined) enableCompileCache(dir);
}

export async function main(argv: string[]): Promise<number> {
  const controller = new AbortController();
  const ctx: CommandContext = {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    signal: controller.signal,
    warn: (message) => process.stderr.write(`WARNING: ${message}\n`),
  };
  const cancel = (reason: InterruptedError) => {
    if (!controller.signal.aborted) controller.abort(reason);
  };
  // The first signal aborts the command, which cleans up and exits 130/143; a second one exits at
  // once. The listeners stay for the whole run: with `once`, signal-exit (proper-lockfile's) would
  // find itself the last listener after the first signal and re-raise it, killing tbuild mid-cleanup.
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(exitCodeOfSignal(sig));
    controller.abort(new InterruptedError(sig));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // A hangup (the terminal closed; rootless, the parent-death signal of the tbuild re-run in the
  // user namespace, which the kernel sends again for each thread of the dying parent) cancels the
  // same way, however often it comes.
  process.on("SIGHUP", () => cancel(new InterruptedError("SIGHUP")));
  // Rootless, this may be that re-run tbuild: when the tbuild the user ran is killed outright, this
  // one cancels as on Ctrl-C (stops its containers, removes its state, names no image) rather than
  // going on unseen. The lifeline tells it even when the signal was never set up or came first.
  watchOuterProcess(process.env, () =>
    cancel(new InterruptedError("SIGHUP", "the tbuild that started this one was killed")),
  );
  // A reader that stops early (`tbuild images | head -1`) closes the pipe, and the next write
  // fails with EPIPE. No one reads what follows: the command is cancelled as by a signal (so it
  // stops its containers and removes its temporary state), says nothing more, and tbuild ends with
  // status 0, as git and docker end there quietly, with no stack trace.
  let outputClosed = false;
  const onOutputError = (err: NodeJS.ErrnoException) => {
    if (outputClosed) return;
    if (err.code !== "EPIPE") throw err;
    outputClosed = true;
    controller.abort(new Error("the reader of tbuild's output has gone"));
  };
  process.stdout.on("error", onOutputError);
  process.stderr.on("error", onOutputError);
  process.on("exit", () => {
    if (outputClosed) process.exitCode = 0;
  });
  // Global flags before the command; after it, the command's own parsing takes them, so that an
  // operand spelled `--debug` (`tbuild run IMAGE tool --debug`) reaches the container.
  let debug = false;
  let words = argv;
  while (words[0] === "--debug") {
    debug = true;
    words = words.slice(1);
  }
  try {
    if (words.length === 0 || words[0] === "--help" || words[0] === "-h" || words[0] === "help") {
      const named = words[0] === "help" && words.length > 1 ? findCommand(words.slice(1)) : undefined;
      if (words[0] === "help" && words.length > 1 && !named) throw unknownCommand(words.slice(1));
      process.stdout.write(named ? commandHelp(named.spec) : topLevelHelp());
      return words.length === 0 ? 2 : 0;
    }
    if (words[0] === "--version") words = ["version", ...words.slice(1)];
    return await runCommand(words, ctx, {
      onDebug: () => {
        debug = true;
      },
    });
  } catch (err) {
    if (outputClosed) return 0;
    return await reportError(err, { debug, signal: controller.signal, env: ctx.env, stderr: ctx.stderr });
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`ERROR: ${String(err)}\n`);
    process.exitCode = 1;
  },
);
