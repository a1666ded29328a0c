/**
 * The library's own errors, beside the TbuildError subclasses the folders throw: each with a
 * stable `code` (docs/errors.md lists every code).
 */
import { TbuildError } from "../errors/index.js";
import { hasWorkerPrivileges } from "../worker/userns.js";

/** The caller's AbortSignal ended the operation. */
export class BuildCanceledError extends TbuildError {
  constructor(reason: unknown, cause: unknown) {
    const why = reason instanceof Error ? reason.message : reason === undefined ? "" : String(reason);
    super("E_CANCELED", `canceled${why ? `: ${why}` : ""}`, { cause, exitCode: 130 });
  }
}

/**
 * Building and running need root, or root of a user namespace: the CLI re-executes itself in one
 * when run by an unprivileged user; the library does not do that yet, and says so.
 */
export function requirePrivileges(what: string): void {
  if (hasWorkerPrivileges()) return;
  throw new TbuildError(
    "E_NOT_SUPPORTED",
    `${what} as an unprivileged user is not supported by the library yet: run it as root, or inside a user namespace (unshare --user --map-auto --map-root-user --mount), or use the tbuild CLI, which enters one itself`,
  );
}
