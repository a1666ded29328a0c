/**
 * Errors a user can act on. The CLI prints `message` alone (no stack trace) and exits with
 * `exitCode`; anything that is not a TbuildError is an internal error, whose stack is shown only
 * with `--debug`. Each folder defines its own subclasses with stable `code`s.
 */
export class TbuildError extends Error {
  readonly code: string;
  readonly exitCode: number;

  constructor(code: string, message: string, options: { cause?: unknown; exitCode?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = options.exitCode ?? 1;
  }
}

/** Wrong words on the command line: exit code 2, as DESIGN.md promises. */
export class UsageError extends TbuildError {
  constructor(message: string) {
    super("E_USAGE", message, { exitCode: 2 });
  }
}

export function isTbuildError(err: unknown): err is TbuildError {
  return err instanceof TbuildError;
}
