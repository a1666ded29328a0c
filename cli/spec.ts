/** How a command is described: the data behind argument parsing, `--help` and completion. */

export interface FlagSpec {
  /** Long name without dashes, e.g. `build-arg`. */
  name: string;
  short?: string;
  type: "string" | "boolean";
  /** A flag given several times collects every value. */
  multiple?: boolean;
  /** What the value looks like in help, e.g. `K=V`; `values` joined by `|` when absent. */
  value?: string;
  /** The whole set of values the flag accepts, offered by shell completion. */
  values?: readonly string[];
  description: string;
  /** Shown in help as `(default: ...)`: a value, or what happens when the flag is absent. */
  default?: string;
  /** The value of the flag given bare, without `=VALUE` (`--provenance` is `--provenance=true`), as pflag's NoOptDefVal. */
  bare?: string;
}

export interface CommandSpec {
  /** One or two words: `build`, `debug parse`. */
  name: string;
  summary: string;
  /** Positional arguments as shown in help, e.g. `CONTEXT`. */
  operands: string;
  /** The whole set of words the operand may be, offered by shell completion (else file names). */
  operandValues?: readonly string[];
  /** Paragraphs of help after the summary: examples, where things go. */
  details?: readonly string[];
  flags: FlagSpec[];
  /**
   * Flags end at the first operand: the words after it are operands even when they look like
   * flags, as in `tbuild run IMAGE sh -c 'exit 7'` (docker's rule for `run`).
   */
  flagsEndAtFirstOperand?: boolean;
  /** Loaded only when the command runs, so `--help` stays fast. */
  load: () => Promise<CommandModule>;
}

export interface ParsedCommandLine {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export interface CommandContext {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
  cwd: string;
  signal: AbortSignal;
  /** Warnings go here, one line each, prefixed by the caller's renderer. */
  warn: (message: string) => void;
}

export interface CommandModule {
  run(args: ParsedCommandLine, ctx: CommandContext): Promise<number>;
}
