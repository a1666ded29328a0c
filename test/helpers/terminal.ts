/**
 * A real terminal for tests of what tbuild draws on one: the command runs under a pseudo-terminal
 * (util-linux `script`, with `stty` setting its size), and the bytes it wrote are played through
 * xterm.js's headless emulator, which gives the screen a user would be left looking at.
 */
import { spawnSync } from "node:child_process";
import xterm from "@xterm/headless";

export interface TerminalRun {
  status: number | null;
  /** Everything the command wrote to the terminal (stdout and stderr share it), as bytes. */
  output: Buffer;
}

const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

/** Runs `argv` on a pseudo-terminal of `columns` x `rows`, with `env` as its whole environment. */
export function runOnTerminal(
  argv: string[],
  options: { env: NodeJS.ProcessEnv; cwd?: string; columns?: number; rows?: number },
): TerminalRun {
  const { columns = 80, rows = 24 } = options;
  const command = `stty cols ${columns} rows ${rows} && exec ${argv.map(quote).join(" ")}`;
  const result = spawnSync("script", ["-q", "-e", "-c", command, "/dev/null"], {
    env: options.env,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (result.error) throw result.error;
  return { status: result.status, output: result.stdout };
}

export interface Screen {
  /** Each row of the screen and its scrollback, trailing blanks trimmed. */
  lines: string[];
  /** Whether each row continues the row above: text that was wider than the terminal. */
  wrapped: boolean[];
  /** The lines as written: rows that continue the row above joined to it. */
  logicalLines: string[];
}

/** What a terminal of `columns` x `rows` shows after `output` was written to it. */
export async function renderScreen(
  output: Buffer | string,
  options: { columns?: number; rows?: number } = {},
): Promise<Screen> {
  const terminal = new xterm.Terminal({
    cols: options.columns ?? 80,
    rows: options.rows ?? 24,
    scrollback: 10_000,
    allowProposedApi: true,
  });
  await new Promise<void>((resolve) => terminal.write(output, resolve));
  return readScreen(terminal);
}

export function readScreen(terminal: InstanceType<typeof xterm.Terminal>): Screen {
  const buffer = terminal.buffer.active;
  const lines: string[] = [];
  const wrapped: boolean[] = [];
  for (let i = 0; i < buffer.length; i++) {
    const line = buffer.getLine(i);
    if (!line) continue;
    wrapped.push(line.isWrapped);
    lines.push(line.translateToString(true));
  }
  while (lines.length > 0 && lines.at(-1) === "") {
    lines.pop();
    wrapped.pop();
  }
  const logicalLines: string[] = [];
  lines.forEach((line, i) => {
    if (wrapped[i] && logicalLines.length > 0) logicalLines[logicalLines.length - 1] += line;
    else logicalLines.push(line);
  });
  return { lines, wrapped, logicalLines };
}
