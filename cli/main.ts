import { enableCompileCache } from "node:module";
import { parseArgs } from "node:util";
import { isTbuildError, UsageError } from "../errors/index.js";
import { findCommand } from "./commands.js";
import { commandHelp, topLevelHelp } from "./help.js";
import type { CommandContext, CommandSpec, ParsedCommandLine } from "./spec.js";

// Commands load their modules after this line; Node keeps their compiled code between runs (in
// its default cache directory), which takes a good part off every start.
enableCompileCache();

function parseCommandLine(
  spec: CommandSpec,
  argv: string[],
): ParsedCommandLine & { help: boolean; debug: boolean } {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {
    help: { type: "boolean", short: "h" },
    debug: { type: "boolean" },
  };
  for (const f of spec.flags) {
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
  const debug = argv.includes("--debug");
  const controller = new AbortController();
  const ctx: CommandContext = {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    cwd: process.cwd(),
    signal: controller.signal,
    warn: (message) => process.stderr.write(`WARNING: ${message}\n`),
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error(`interrupted by ${sig}`));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const words = argv.filter((a) => a !== "--debug");
    if (words.length === 0 || words[0] === "--help" || words[0] === "-h" || words[0] === "help") {
      process.stdout.write(topLevelHelp());
      return words.length === 0 ? 2 : 0;
    }
    if (words[0] === "--version") words[0] = "version";
    const found = findCommand(words);
    if (!found) {
      throw new UsageError(
        `unknown command "${words.slice(0, 2).join(" ")}"\nRun 'tbuild --help' for the list of commands.`,
      );
    }
    const commandLine = parseCommandLine(found.spec, words.slice(found.consumed));
    if (commandLine.help) {
      process.stdout.write(commandHelp(found.spec));
      return 0;
    }
    const module = await found.spec.load();
    return await module.run(commandLine, ctx);
  } catch (err) {
    if (isTbuildError(err)) {
      process.stderr.write(`ERROR: ${err.message}\n`);
      if (debug && err.stack) process.stderr.write(`${err.stack}\n`);
      return err.exitCode;
    }
    process.stderr.write(`ERROR: internal error: ${(err as Error)?.message ?? String(err)}\n`);
    if (debug) process.stderr.write(`${(err as Error)?.stack ?? ""}\n`);
    else process.stderr.write("Run again with --debug for the stack trace, and please report it.\n");
    return 1;
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
