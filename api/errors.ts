/**
 * The library's own errors, beside the TbuildError subclasses the folders throw: each with a
 * stable `code` (docs/errors.md lists every code).
 */
import { TbuildError } from "../errors/index.js";

/** The caller's AbortSignal ended the operation. */
export class BuildCanceledError extends TbuildError {
  constructor(reason: unknown, cause: unknown) {
    const why = reason instanceof Error ? reason.message : reason === undefined ? "" : String(reason);
    super("E_CANCELED", `canceled${why ? `: ${why}` : ""}`, { cause, exitCode: 130 });
  }
}
