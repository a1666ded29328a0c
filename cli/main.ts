import { enableCompileCache } from "node:module";
import { parseArgs } from "node:util";
import { UsageError } from "../errors/index.js";
import { watchOuterProcess } from "../worker/userns.js";
import { findCommand } from "./commands.js";
import { commandHelp, globalFlags, topLevelHelp } from "./help.js";
import { exitCodeOfSignal, InterruptedError, reportError } from "./report-error.js";
import type { CommandContext, CommandSpec, ParsedCommandLine } from "./spec.js";

// Commands load their modules after this line; Node keeps their compiled code between runs (in
// its default cache directory), which takes a good part off every start.
enableCompileCache();

function parseCommandLine(
  spec: CommandSpec,
  argv: string[],
): ParsedCommandLine & { help: boolean; debug: boolean } {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const f of [...globalFlags, ...spec.flags]) {
    options[f.name] = {
      type: f.type,
      ...(f.short ? { short: f.short } : {}),
      ...(f.multiple ? { multiple: true } : {}),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    const args = spec.flagsEndAtFirstOperand ? endFlagsAtFirstOperand(argv, options) : argv;
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(
      `${(err as Error).message.replace(/\. To specify a positional.*$/s, "")}\nRun 'tbuild ${spec.name} --help' for its flags.`,
    );
  }
  const values = parsed.values as ParsedCommandLine["values"];
  return {
    values,
    positionals: parsed.positionals,
    help: values.help === true,
    debug: values.debug === true,
  };
}

/**
 * `argv` with `--` inserted before the first operand, so that parseArgs takes every later word as
 * an operand. A flag that takes a value consumes the next word unless its value is attached
 * (`--name=x`, `-nx`); unknown flags are left for parseArgs to report.
 */
function endFlagsAtFirstOperand(
  argv: string[],
  options: Record<string, { type: "string" | "boolean"; short?: string }>,
): string[] {
  const shortTypes = new Map(
    Object.values(options)
      .filter((o) => o.short)
      .map((o) => [o.short!, o.type]),
  );
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") return argv;
    if (word.startsWith("--")) {
      if (!word.includes("=") && options[word.slice(2)]?.type === "string") i++;
    } else if (word.startsWith("-") && word.length > 1) {
      for (let c = 1; c < word.length; c++) {
        if (shortTypes.get(word[c]!) === "string") {
          if (c === word.length - 1) i++;
          break;
        }
      }
    } else {
      return [...argv.slice(0, i), "--", ...argv.slice(i)];
    }
  }
  return argv;
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
    const found = findCommand(words);
    if (!found) throw unknownCommand(words);
    const commandLine = parseCommandLine(found.spec, words.slice(found.consumed));
    debug ||= commandLine.debug;
    if (commandLine.help) {
      process.stdout.write(commandHelp(found.spec));
      return 0;
    }
    const module = await found.spec.load();
    return await module.run(commandLine, ctx);
  } catch (err) {
    if (outputClosed) return 0;
    return await reportError(err, { debug, signal: controller.signal, env: ctx.env, stderr: ctx.stderr });
  }
}

function unknownCommand(words: string[]): UsageError {
  return new UsageError(
    `unknown command "${words.slice(0, 2).join(" ")}"\nRun 'tbuild --help' for the list of commands.`,
  );
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
