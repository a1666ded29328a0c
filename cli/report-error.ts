/**
 * How a command's failure reaches the user: one `ERROR:` message and an exit code. A TbuildError
 * (a user error) is its message alone, never a stack trace. A system error a user can act on (a
 * full disk, a store that is not theirs, a program not installed, a refused connection, an
 * untrusted certificate) is explained the same way. Anything else is an internal error: its stack
 * is shown with --debug, and without it the user is asked to report it.
 */
import { constants as osConstants } from "node:os";
import { inspect } from "node:util";
import { capMessage } from "../errors/excerpt.js";
import { isTbuildError, type TbuildError } from "../errors/index.js";
import { explainSystemError, isSystemError, type SystemErrorContext } from "../errors/system.js";

/** The abort reason main gives a command's signal on SIGINT or SIGTERM. */
export class InterruptedError extends Error {
  readonly signal: NodeJS.Signals;

  constructor(signal: NodeJS.Signals, why?: string) {
    super(why ? `interrupted: ${why}` : `interrupted by ${signal}`);
    this.signal = signal;
  }
}

/** 128 + the signal's number, as shells report a process a signal ended. */
export function exitCodeOfSignal(signal: NodeJS.Signals): number {
  return 128 + (osConstants.signals[signal] ?? 1);
}

export interface ReportOptions {
  debug: boolean;
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
  stderr: NodeJS.WritableStream;
  /** Where the store and config are, for advice; found from `env` when absent. */
  context?: SystemErrorContext;
}

/** Node's codes for a function called wrongly: a bug in tbuild, not in what the user gave it. */
const MISUSE_CODES = new Set([
  "ERR_INVALID_ARG_TYPE",
  "ERR_INVALID_ARG_VALUE",
  "ERR_INVALID_RETURN_VALUE",
  "ERR_OUT_OF_RANGE",
  "ERR_MISSING_ARGS",
  "ERR_INVALID_STATE",
  "ERR_ASSERTION",
]);

/**
 * A programming error: the kinds JavaScript throws on a bug, and Node's codes for misuse. Other
 * errors a user error wraps (a parse failure, a library's complaint about its input) are not.
 */
export function isProgrammingError(err: unknown): boolean {
  if (!(err instanceof Error) || isTbuildError(err)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") return MISUSE_CODES.has(code);
  return err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError;
}

/** The errors in `err`'s `cause` chain, `err` first. */
function causeChain(err: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e: unknown = err; e !== undefined && !chain.includes(e); e = (e as Error | undefined)?.cause) {
    chain.push(e);
    if (!(e instanceof Error)) break;
  }
  return chain;
}

/** Prints `err` for the user and gives the exit code. */
export async function reportError(err: unknown, options: ReportOptions): Promise<number> {
  const write = (text: string) => options.stderr.write(text);
  const reason = options.signal.reason;
  if (options.signal.aborted && reason instanceof InterruptedError && !isTbuildError(err)) {
    write(`ERROR: ${reason.message}\n`);
    return exitCodeOfSignal(reason.signal);
  }
  const chain = causeChain(err);
  const systemError = chain.find(isSystemError);
  const explained = systemError
    ? explainSystemError(systemError, options.context ?? (await systemErrorContext(options.env)))
    : undefined;
  if (isTbuildError(err) || explained) {
    write(`ERROR: ${capMessage(userMessage(err, systemError, explained))}\n`);
    // A user error that carries a bug (a step that failed on a TypeError) is still a bug.
    const bug = chain.find(isProgrammingError);
    if (bug !== undefined) {
      if (options.debug) write(`${inspect(bug)}\n`);
      else
        write(
          "This looks like a bug in tbuild: run again with --debug for the stack trace, and please report it.\n",
        );
    }
    return isTbuildError(err) ? err.exitCode : 1;
  }
  write(`ERROR: internal error: ${capMessage((err as Error)?.message ?? String(err))}\n`);
  if (options.debug) write(`${inspect(err)}\n`);
  else write("Run again with --debug for the stack trace, and please report it.\n");
  return 1;
}

/**
 * The message to show: the TbuildError's own, with a system error it relays word for word
 * (`ENOSPC: no space left on device, write`) replaced by what that error means here.
 */
function userMessage(err: unknown, systemError: unknown, explained: TbuildError | undefined): string {
  if (!isTbuildError(err)) return explained!.message;
  if (!explained) return err.message;
  const raw = (systemError as Error).message;
  return raw && err.message.includes(raw) ? err.message.replace(raw, explained.message) : err.message;
}

async function systemErrorContext(env: NodeJS.ProcessEnv): Promise<SystemErrorContext> {
  const [{ defaultStoreRoot }, { configPath }] = await Promise.all([
    import("../oci/store/index.js"),
    import("../build/config.js"),
  ]);
  return { storeRoot: defaultStoreRoot(env), configPath: configPath(env) };
}
