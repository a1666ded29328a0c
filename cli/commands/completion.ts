/**
 * `tbuild completion bash|zsh|fish`: a completion script made from the command specs, so it
 * offers exactly the commands and flags `--help` lists, and the values of flags that take one of
 * a fixed set (`--progress`, `--format`, `--network`). Other values and operands complete as file
 * names.
 */
import { UsageError } from "../../errors/index.js";
import { commands } from "../commands.js";
import { globalFlags } from "../help.js";
import type { CommandContext, CommandSpec, FlagSpec, ParsedCommandLine } from "../spec.js";

const SHELLS = { bash: bashScript, zsh: zshScript, fish: fishScript } as const;

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [shell, ...extra] = args.positionals;
  if (shell === undefined || extra.length > 0 || !Object.hasOwn(SHELLS, shell)) {
    throw new UsageError(
      `tbuild completion takes one SHELL: bash, zsh or fish${shell !== undefined && extra.length === 0 ? ` (not "${shell}")` : ""}`,
    );
  }
  ctx.stdout.write(SHELLS[shell as keyof typeof SHELLS]());
  return 0;
}

/** Every spelling of a flag: `--file`, `-f`. */
function spellings(flag: FlagSpec): string[] {
  return [`--${flag.name}`, ...(flag.short ? [`-${flag.short}`] : [])];
}

function allFlags(spec: CommandSpec): FlagSpec[] {
  return [...spec.flags, ...globalFlags];
}

/** Quotes for a POSIX shell (bash, zsh): single quotes, a single quote as '\''. */
function shQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The first words of every command (`debug` once for `debug parse` and `debug graph`). */
function firstWords(): string[] {
  return [...new Set(commands.map((c) => c.name.split(" ")[0]!))];
}

/** Commands of two words, by their first word: `debug` → `parse graph`. */
function subcommands(): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const c of commands) {
    const [first, second] = c.name.split(" ");
    if (second !== undefined) groups.set(first!, [...(groups.get(first!) ?? []), second]);
  }
  return groups;
}

function bashScript(): string {
  const flagCases = commands.map(
    (c) => `    ${shQuote(c.name)}) flags=${shQuote(allFlags(c).flatMap(spellings).join(" "))} ;;`,
  );
  const valueCases: string[] = [];
  for (const c of commands) {
    for (const f of c.flags.filter((f) => f.type === "string")) {
      const patterns = spellings(f)
        .map((s) => shQuote(`${c.name} ${s}`))
        .join("|");
      valueCases.push(`    ${patterns}) values=${shQuote((f.values ?? []).join(" "))} ;;`);
    }
  }
  const operandCases = commands
    .filter((c) => c.operandValues)
    .map(
      (c) =>
        `    ${shQuote(c.name)}) COMPREPLY=($(compgen -W ${shQuote(c.operandValues!.join(" "))} -- "$cur")) ;;`,
    );
  const subcommandCases = [...subcommands()].map(
    ([first, seconds]) => `    ${shQuote(first)}) subcommands=${shQuote(seconds.join(" "))} ;;`,
  );
  return `# bash completion for tbuild, made by \`tbuild completion bash\`.
# Load it with: source <(tbuild completion bash)

# Sets flags to the flags of command $1.
_tbuild_flags() {
  flags=
  case $1 in
${flagCases.join("\n")}
  esac
}

# Succeeds when flag $2 of command $1 takes a value; sets values to its fixed values, if any.
_tbuild_flag_values() {
  values=
  case "$1 $2" in
${valueCases.join("\n")}
    *) return 1 ;;
  esac
}

_tbuild() {
  COMPREPLY=()
  local cur=\${COMP_WORDS[COMP_CWORD]} prev= flag= i word command= subcommands= flags= values=
  [ "$COMP_CWORD" -gt 0 ] && prev=\${COMP_WORDS[COMP_CWORD-1]}
  # The command: the first words that are not flags (tbuild takes flags after the command).
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=\${COMP_WORDS[i]}
    case $word in -*) continue ;; esac
    if [ -z "$command" ]; then
      command=$word
      case $command in
${subcommandCases.map((line) => `    ${line}`).join("\n")}
      esac
      [ -n "$subcommands" ] || break
    else
      command="$command $word"
      break
    fi
  done
  if [ -z "$command" ]; then
    if [[ $cur == -* ]]; then
      COMPREPLY=($(compgen -W ${shQuote(globalFlags.flatMap(spellings).join(" "))} -- "$cur"))
    else
      COMPREPLY=($(compgen -W ${shQuote(firstWords().join(" "))} -- "$cur"))
    fi
    return 0
  fi
  if [ -n "$subcommands" ] && [[ $command != *" "* ]]; then
    COMPREPLY=($(compgen -W "$subcommands" -- "$cur"))
    return 0
  fi
  # A flag's value: \`--flag VALUE\`, or \`--flag=VALUE\` (which bash splits at the =).
  if [ "$cur" = "=" ]; then
    flag=$prev
    cur=
  elif [ "$prev" = "=" ] && [ "$COMP_CWORD" -gt 1 ]; then
    flag=\${COMP_WORDS[COMP_CWORD-2]}
  elif [[ $prev == -* ]]; then
    flag=$prev
  fi
  if [ -n "$flag" ] && _tbuild_flag_values "$command" "$flag"; then
    # No fixed values: file names (complete -o default).
    [ -n "$values" ] && COMPREPLY=($(compgen -W "$values" -- "$cur"))
    return 0
  fi
  if [[ $cur == -* ]]; then
    _tbuild_flags "$command"
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return 0
  fi
  case $command in
${operandCases.join("\n")}
  esac
  return 0
}

complete -o default -F _tbuild tbuild
`;
}

/** Text inside a zsh `_arguments` description (`[...]`) or message (`:...:`). */
function zshEscape(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("[", "\\[").replaceAll("]", "\\]").replaceAll(":", "\\:");
}

function zshFlag(flag: FlagSpec): string {
  const description = `[${zshEscape(flag.description)}]`;
  const value =
    flag.type === "string"
      ? `:${zshEscape(flag.value ?? flag.name)}:${flag.values ? `(${flag.values.join(" ")})` : "_files"}`
      : "";
  const repeat = flag.multiple ? "*" : "";
  if (!flag.short) return shQuote(`${repeat}--${flag.name}${description}${value}`);
  // Either spelling excludes the other unless the flag repeats.
  const exclusion = flag.multiple ? "*" : `(-${flag.short} --${flag.name})`;
  return `${shQuote(exclusion)}{-${flag.short},--${flag.name}}${shQuote(`${description}${value}`)}`;
}

function zshArguments(spec: CommandSpec): string {
  const operand = spec.operandValues
    ? `'1:${zshEscape(spec.operands)}:(${spec.operandValues.join(" ")})'`
    : spec.operands
      ? `'*:${zshEscape(spec.operands)}:_files'`
      : "";
  return ["_arguments -s", ...allFlags(spec).map(zshFlag), ...(operand ? [operand] : [])].join(
    " \\\n        ",
  );
}

function zshDescribe(name: string, entries: Array<[string, string]>): string {
  const list = entries.map(([word, summary]) => shQuote(`${word}:${summary.replaceAll(":", "\\:")}`));
  return `local -a ${name}\n      ${name}=(\n        ${list.join("\n        ")}\n      )`;
}

function zshScript(): string {
  const firsts = firstWords().map((word): [string, string] => {
    const spec = commands.find((c) => c.name === word);
    return [word, spec ? spec.summary : `${subcommands().get(word)!.join(", ")}`];
  });
  const cases: string[] = [];
  for (const c of commands.filter((c) => !c.name.includes(" "))) {
    cases.push(`    ${c.name})\n      ${zshArguments(c)}\n      ;;`);
  }
  for (const [first, seconds] of subcommands()) {
    const inner = seconds.map((second) => {
      const spec = commands.find((c) => c.name === `${first} ${second}`)!;
      return `        ${second})\n          ${zshArguments(spec).replaceAll("\n        ", "\n            ")}\n          ;;`;
    });
    const entries = seconds.map((second): [string, string] => [
      second,
      commands.find((c) => c.name === `${first} ${second}`)!.summary,
    ]);
    cases.push(`    ${first})
      if (( CURRENT == 2 )); then
      ${zshDescribe("subcommands", entries)}
        _describe -t commands 'tbuild ${first} command' subcommands
        return
      fi
      shift words
      (( CURRENT-- ))
      case $words[1] in
${inner.join("\n")}
      esac
      ;;`);
  }
  return `#compdef tbuild
# zsh completion for tbuild, made by \`tbuild completion zsh\`.
# Install it with: tbuild completion zsh > "\${fpath[1]}/_tbuild"

_tbuild() {
  local curcontext=$curcontext state line
  _arguments -C \\
    ${globalFlags.map(zshFlag).join(" \\\n    ")} \\
    '1: :->command' \\
    '*:: :->args'
  case $state in
    command)
      ${zshDescribe("commands", firsts)}
      _describe -t commands 'tbuild command' commands
      ;;
    args)
      case $words[1] in
${cases.map((c) => c.replaceAll("\n", "\n    ").replace(/^/, "    ")).join("\n")}
      esac
      ;;
  esac
}

if [ "$funcstack[1]" = "_tbuild" ]; then
  _tbuild "$@"
else
  compdef _tbuild tbuild
fi
`;
}

/** A word in single quotes for fish (which escapes only \\ and ' inside them). */
function fishQuote(text: string): string {
  return `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}

function fishScript(): string {
  const lines = [
    "# fish completion for tbuild, made by `tbuild completion fish`.",
    "# Install it with: tbuild completion fish > ~/.config/fish/completions/tbuild.fish",
    "",
    "# Succeeds when the words before the cursor (flags left out) begin with the words given.",
    "function __tbuild_command_is",
    "    set -l words (commandline -opc | string match -v -- '-*')",
    "    set -e words[1]",
    "    test (count $words) -ge (count $argv); or return 1",
    "    for i in (seq (count $argv))",
    '        test "$words[$i]" = "$argv[$i]"; or return 1',
    "    end",
    "end",
    "",
    "# Succeeds when no command has been typed yet.",
    "function __tbuild_needs_command",
    "    set -l words (commandline -opc | string match -v -- '-*')",
    "    test (count $words) -eq 1",
    "end",
    "",
    "complete -c tbuild -e",
  ];
  for (const flag of globalFlags) {
    lines.push(
      `complete -c tbuild -l ${flag.name}${flag.short ? ` -s ${flag.short}` : ""} -d ${fishQuote(flag.description)}`,
    );
  }
  for (const word of firstWords()) {
    const spec = commands.find((c) => c.name === word);
    const summary = spec ? spec.summary : subcommands().get(word)!.join(", ");
    lines.push(`complete -c tbuild -f -n __tbuild_needs_command -a ${word} -d ${fishQuote(summary)}`);
  }
  for (const [first, seconds] of subcommands()) {
    for (const second of seconds) {
      const spec = commands.find((c) => c.name === `${first} ${second}`)!;
      lines.push(
        `complete -c tbuild -f -n '__tbuild_command_is ${first}; and not __tbuild_command_is ${first} ${seconds.join(`; and not __tbuild_command_is ${first} `)}' -a ${second} -d ${fishQuote(spec.summary)}`,
      );
    }
  }
  for (const spec of commands) {
    const condition = `-n ${fishQuote(`__tbuild_command_is ${spec.name}`)}`;
    for (const flag of spec.flags) {
      const names = `-l ${flag.name}${flag.short ? ` -s ${flag.short}` : ""}`;
      const value =
        flag.type === "boolean" ? "" : flag.values ? ` -x -a ${fishQuote(flag.values.join(" "))}` : " -r -F";
      lines.push(`complete -c tbuild ${condition} ${names}${value} -d ${fishQuote(flag.description)}`);
    }
    if (spec.operandValues) {
      lines.push(`complete -c tbuild ${condition} -f -a ${fishQuote(spec.operandValues.join(" "))}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
