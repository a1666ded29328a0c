/**
 * Node's system errors (a full disk, a store that is not the user's, a program that is not
 * installed, a refused connection, an untrusted certificate) that reach the CLI without a folder
 * having explained them: each becomes a TbuildError saying what happened, where, and what to do,
 * instead of an internal error with a stack trace.
 */
import path from "node:path";
import { TbuildError } from "./index.js";

/** Where the command's store and config file are, for advice that names them. */
export interface SystemErrorContext {
  storeRoot: string;
  configPath: string;
}

/** A Node system error: a `code` such as `ENOSPC`, and usually `syscall`, `path`, `address`. */
export interface SystemError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  path?: string;
  dest?: string;
  address?: string;
  port?: number;
  hostname?: string;
}

/** Node's codes for a certificate chain that ends in no CA tbuild trusts. */
export const UNTRUSTED_CERTIFICATE_CODES: ReadonlySet<string> = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
]);

/** Certificate failures Node reports as codes of their own (from OpenSSL's verify results). */
const CERTIFICATE_CODES = new Set([
  ...UNTRUSTED_CERTIFICATE_CODES,
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** Debian packages of the programs tbuild or its steps start. */
const PACKAGE_OF_PROGRAM: Record<string, string> = {
  runc: "runc",
  newuidmap: "uidmap",
  newgidmap: "uidmap",
  unshare: "util-linux",
  git: "git",
  xz: "xz-utils",
  bzip2: "bzip2",
  zstd: "zstd",
  gzip: "gzip",
  ssh: "openssh-client",
  cp: "coreutils",
};

export function isSystemError(err: unknown): err is SystemError {
  if (!(err instanceof Error) || err instanceof TbuildError) return false;
  const code = (err as Partial<SystemError>).code;
  if (typeof code !== "string") return false;
  return (
    CERTIFICATE_CODES.has(code) ||
    ((/^E[A-Z0-9]+$/.test(code) || code === "ENOTFOUND") &&
      (typeof (err as SystemError).syscall === "string" || typeof (err as SystemError).errno === "number"))
  );
}

function isInside(file: string, dir: string): boolean {
  const relative = path.relative(dir, path.resolve(file));
  return relative === "" || (!relative.startsWith("..") && !path.isAbsolute(relative));
}

/** What to do when the store's disk is full. */
export const FREE_STORE_SPACE =
  "free some with `tbuild prune` (build cache) or `tbuild rmi` (images), or set TBUILD_ROOT to a larger disk, and run again";

/**
 * The TbuildError a user should see for a system error, or undefined when the code is not one a
 * user can act on (then it is an internal error, shown with its stack under --debug).
 */
export function explainSystemError(err: unknown, context: SystemErrorContext): TbuildError | undefined {
  if (!isSystemError(err)) return undefined;
  const { code, syscall } = err;
  const file = err.path ?? err.dest;
  const store = context.storeRoot;
  const make = (message: string) => new TbuildError(`E_SYSTEM_${code}`, message, { cause: err });
  switch (code) {
    case "ENOSPC":
    case "EDQUOT": {
      const full = code === "EDQUOT" ? "over its disk quota" : "out of space";
      if (file === undefined) {
        // A write to an open file names no path; tbuild writes mostly into its store.
        return make(
          `the store at ${store} is most likely ${full} (${code}: no space left on device, in ${syscall ?? "a write"}): ${FREE_STORE_SPACE}`,
        );
      }
      if (isInside(file, store))
        return make(`the store at ${store} is ${full} (${code} writing ${file}): ${FREE_STORE_SPACE}`);
      return make(`no space left on the device of ${file} (${code}): free some space there and run again`);
    }
    case "EACCES":
    case "EPERM": {
      const what = code === "EACCES" ? "permission denied" : "operation not permitted";
      if (file !== undefined && isInside(file, store)) {
        return make(
          `${what}: cannot ${syscall ?? "use"} ${file} in the store at ${store}. The store must be writable by the user running tbuild, ` +
            "and each user needs a store of their own: set TBUILD_ROOT to a directory you own (or run as the store's owner)",
        );
      }
      return make(`${what}: cannot ${syscall ?? "use"} ${file ?? "a file"} (${code})`);
    }
    case "EROFS":
      return make(
        `${file ?? "a file"} is on a read-only file system (${syscall ?? "write"})${file !== undefined && isInside(file, store) ? `; set TBUILD_ROOT to a writable directory` : ""}`,
      );
    case "ENOENT": {
      if (syscall?.startsWith("spawn")) {
        const program = path.basename(err.path ?? syscall.slice("spawn ".length));
        const pkg = PACKAGE_OF_PROGRAM[program];
        return make(
          `${program} is not installed (not found on PATH)${pkg ? `\nTo fix it, run: sudo apt-get install ${pkg}` : ""}`,
        );
      }
      return make(`${file ?? "a file"}: no such file or directory (${syscall ?? "open"})`);
    }
    case "ECONNREFUSED":
      return make(
        `connection refused by ${err.address ?? "the server"}${err.port ? `:${err.port}` : ""}: is it running and the address right? ` +
          `A registry's address and settings are in ${context.configPath} ([registry."HOST"])`,
      );
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return make(
        `cannot resolve the host name ${err.hostname ?? ""} (${code}): check the name and this machine's DNS`,
      );
    case "ETIMEDOUT":
    case "ECONNRESET":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return make(
        `network failure talking to ${err.address ?? "a server"}${err.port ? `:${err.port}` : ""} (${code}): check the network and run again`,
      );
    case "EMFILE":
    case "ENFILE":
      return make(
        `too many open files (${code}): raise the limit (ulimit -n) or run fewer steps at once (tbuild build --jobs N)`,
      );
    case "ENOMEM":
      return make(
        `out of memory (${syscall ?? code}): close other programs or run fewer steps at once (--jobs N)`,
      );
    default:
      if (CERTIFICATE_CODES.has(code)) {
        const untrusted = !/EXPIRED|NOT_YET_VALID|ALTNAME/.test(code);
        return make(
          `TLS: ${untrusted ? "the server's certificate is not trusted" : "the server's certificate is not valid"} (${code}: ${err.message}). ` +
            `For a registry with a private certificate authority add it in ${context.configPath}: [registry."HOST"] ca = ["/path/to/ca.pem"]; ` +
            `or, unsafe, insecure = true there`,
        );
      }
      return undefined;
  }
}
