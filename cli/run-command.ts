/**
 * One command line, run: the command its first words name, its flags parsed as its spec says
 * (`--help` prints its help), then the command's module. main.ts wraps this with the process's
 * signals and error reporting; tests run commands through it in-process.
 */
import { parseArgs } from "node:util";
import { UsageError } from "../errors/index.js";
import { findCommand } from "./commands.js";
import { commandHelp, globalFlags } from "./help.js";
import type { CommandContext, CommandSpec, FlagSpec, ParsedCommandLine } from "./spec.js";

export async function runCommand(
  words: string[],
  ctx: CommandContext,
  options: { onDebug?: () => void } = {},
): Promise<number> {
  const found = findCommand(words);
  if (!found) throw unknownCommand(words);
  const commandLine = parseCommandLine(found.spec, words.slice(found.consumed));
  if (commandLine.debug) options.onDebug?.();
  if (commandLine.help) {
    ctx.stdout.write(commandHelp(found.spec));
    return 0;
  }
  const module = await found.spec.load();
  return await module.run(commandLine, ctx);
}

export function unknownCommand(words: string[]): UsageError {
  return new UsageError(
    `unknown command "${words.slice(0, 2).join(" ")}"\nRun 'tbuild --help' for the list of commands.`,
  );
}

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
    const withBare = withBareValues(argv, [...globalFlags, ...spec.flags]);
    const args = spec.flagsEndAtFirstOperand ? endFlagsAtFirstOperand(withBare, options) : withBare;
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

/** `argv` with each bare flag that has a `bare` value given it (`--provenance` → `--provenance=true`), up to `--`. */
function withBareValues(argv: string[], flags: readonly FlagSpec[]): string[] {
  const bare = new Map(flags.filter((f) => f.bare !== undefined).map((f) => [`--${f.name}`, f.bare!]));
  if (bare.size === 0) return argv;
  const end = argv.indexOf("--");
  return argv.map((word, i) => (bare.has(word) && (end < 0 || i < end) ? `${word}=${bare.get(word)}` : word));
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
