import { commands } from "./commands.js";
import type { CommandSpec, FlagSpec } from "./spec.js";

/** Flags every command takes, handled by main before the command runs. */
export const globalFlags: readonly FlagSpec[] = [
  { name: "debug", type: "boolean", description: "show the stack trace of an internal error" },
  { name: "help", short: "h", type: "boolean", description: "show help" },
];

export function topLevelHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = [
    "Usage: tbuild COMMAND [FLAGS] [ARGS]",
    "",
    "Build OCI images from Dockerfiles without a daemon and without root.",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Global flags:",
    ...flagRows(globalFlags),
    "",
    "Run 'tbuild COMMAND --help' for a command's flags.",
    "Settings: config.toml and environment variables (TBUILD_ROOT, TBUILD_CONFIG, ...): docs/config.md in the sources.",
  ];
  return `${lines.join("\n")}\n`;
}

/** What a flag's value looks like: `FILE`, or its values as `a|b|c`. */
export function flagValue(flag: FlagSpec): string | undefined {
  return flag.value ?? flag.values?.join("|");
}

function flagRows(flags: readonly FlagSpec[]): string[] {
  const rows = flags.map((f) => {
    const value = flagValue(f);
    const names = `${f.short ? `-${f.short}, ` : "    "}--${f.name}${value ? ` ${value}` : ""}`;
    const repeat = f.multiple ? " (repeatable)" : "";
    const fallback = f.default !== undefined ? ` (default: ${f.default})` : "";
    return [names, `${f.description}${repeat}${fallback}`] as const;
  });
  const width = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([names, text]) => `  ${names.padEnd(width)}  ${text}`);
}

export function commandHelp(spec: CommandSpec): string {
  const lines = [
    `Usage: tbuild ${spec.name}${spec.flags.length ? " [FLAGS]" : ""}${spec.operands ? ` ${spec.operands}` : ""}`,
    "",
    `${spec.summary[0]!.toUpperCase()}${spec.summary.slice(1)}.`,
    ...(spec.operandValues ? ["", `${spec.operands} is one of: ${spec.operandValues.join(", ")}.`] : []),
    ...(spec.details ?? []).flatMap((paragraph) => ["", paragraph]),
    "",
    "Flags:",
    ...flagRows([...spec.flags, ...globalFlags]),
  ];
  return `${lines.join("\n")}\n`;
}
