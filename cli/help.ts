import { commands } from "./commands.js";
import type { CommandSpec } from "./spec.js";

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
    "  --debug    show stack traces of internal errors",
    "  -h, --help show help",
    "",
    "Run 'tbuild COMMAND --help' for a command's flags.",
  ];
  return `${lines.join("\n")}\n`;
}

export function commandHelp(spec: CommandSpec): string {
  const rows = spec.flags.map((f) => {
    const names = `${f.short ? `-${f.short}, ` : "    "}--${f.name}${f.value ? ` ${f.value}` : ""}`;
    const extra = f.default !== undefined && f.default !== false ? ` (default: ${f.default})` : "";
    const repeat = f.multiple ? " (repeatable)" : "";
    return [names, `${f.description}${repeat}${extra}`];
  });
  rows.push(["    --debug", "show stack traces of internal errors"], ["-h, --help", "show this help"]);
  const width = Math.max(...rows.map((r) => r[0]!.length));
  const lines = [
    `Usage: tbuild ${spec.name}${spec.flags.length ? " [FLAGS]" : ""}${spec.operands ? ` ${spec.operands}` : ""}`,
    "",
    `${spec.summary[0]!.toUpperCase()}${spec.summary.slice(1)}.`,
    "",
    "Flags:",
    ...rows.map(([names, text]) => `  ${names!.padEnd(width)}  ${text}`),
  ];
  return `${lines.join("\n")}\n`;
}
