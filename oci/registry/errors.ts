/**
 * What can go wrong talking to a registry, as errors a user can act on: each names the registry
 * (and repository, tag or digest where there is one) and says what to do next.
 */
import { TbuildError } from "../../errors/index.js";
import { UNTRUSTED_CERTIFICATE_CODES } from "../../errors/system.js";
import type { DistributionErrors } from "../spec.js";
import { DOCKER_HUB } from "./hosts.js";

/** Any registry failure; `registry` is the name as the user wrote it (`docker.io`, `127.0.0.1:5000`). */
export class RegistryError extends TbuildError {
  readonly registry: string;

  constructor(code: string, registry: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
    this.registry = registry;
  }
}

/** The repository or the tag/digest does not exist there. */
export class ImageNotFoundError extends RegistryError {
  constructor(registry: string, repository: string, reference: string, what: "repository" | "manifest") {
    const kind = reference.includes(":") ? "digest" : "tag";
    const message =
      what === "repository"
        ? `repository "${repository}" not found on registry ${registry} (asked for ${kind} "${reference}")`
        : `${kind} "${reference}" not found in repository "${repository}" on registry ${registry}`;
    super("E_NOT_FOUND", registry, message);
  }
}

/** A blob a manifest names is missing from the registry. */
export class BlobNotFoundError extends RegistryError {
  constructor(registry: string, repository: string, digest: string) {
    super(
      "E_BLOB_NOT_FOUND",
      registry,
      `blob ${digest} not found in repository "${repository}" on registry ${registry}`,
    );
  }
}

/**
 * What a refusal says about the saved login: none was sent, or the one sent was refused (a wrong
 * password); undefined when it cannot tell (an account without the rights asked for).
 */
export type RefusedLogin = { saved: false } | { saved: true; username: string };

/** Credentials missing, wrong, or without the rights asked for. */
export class UnauthorizedError extends RegistryError {
  constructor(registry: string, detail: string, login?: RefusedLogin) {
    const login_ = `\`tbuild login ${registry}\``;
    const advice =
      login === undefined
        ? `; run ${login_} with an account that may do this`
        : login.saved
          ? `: the saved login${login.username ? ` of user ${login.username}` : ""} was refused; run ${login_} again with the right password`
          : `: no login is saved for it; run ${login_}`;
    super(
      "E_UNAUTHORIZED",
      registry,
      `unauthorized: registry ${registry} refused access${detail ? ` (${detail})` : ""}${advice}`,
    );
  }
}

/** The TLS handshake failed: an unknown CA, a name mismatch, an expired certificate, a plain-HTTP server. */
export class RegistryTlsError extends RegistryError {
  constructor(
    registry: string,
    host: string,
    reason: string,
    configPath: string | undefined,
    cause: unknown,
  ) {
    const where = configPath ? ` in ${configPath}` : " in tbuild's config.toml";
    // Node's own advice (--use-system-ca) is about Node, not about tbuild's settings.
    const said = reason
      .split("\n")[0]!
      .replace(/;? *if the root CA is installed locally.*$/s, "")
      .trim()
      .replace(/\.$/, "");
    const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? "";
    const shown = `registry ${registry}${host === registry ? "" : ` (${host})`}`;
    const why = UNTRUSTED_CERTIFICATE_CODES.has(code) ? `its certificate is not trusted (${said})` : said;
    // OpenSSL's words for a handshake answered with something that is not TLS, such as "HTTP/1.1 400".
    const plain = /wrong version number|packet length too long|http request/i.test(said);
    super(
      "E_TLS",
      registry,
      plain
        ? `${shown} answered the TLS handshake in plain HTTP: it speaks plain HTTP, not HTTPS. If that is ` +
            `expected, set${where}: [registry."${registry}"] http = true`
        : `TLS connection to ${shown} failed: ${why}. If it uses a private certificate authority, ` +
            `add it${where}: [registry."${registry}"] ca = ["/path/to/ca.pem"]; to skip verification for this ` +
            `registry alone (unsafe) set insecure = true there; for a plain-HTTP registry set http = true`,
      { cause },
    );
  }
}

/** Nothing listens where the registry should be. */
export class ConnectionRefusedError extends RegistryError {
  constructor(registry: string, hostPort: string, cause: unknown, configKey = registry, configPath?: string) {
    super(
      "E_CONNECTION_REFUSED",
      registry,
      `connection refused by ${hostPort} (registry ${registry}): is the registry running and the address right? ` +
        `Check the name, and [registry."${configKey}"] (mirrors, http) in ${configPath ?? "tbuild's config.toml"}`,
      { cause },
    );
  }
}

/** A request outlasted the registry's total deadline: the message names the setting that sets it. */
export class RegistryTimeoutError extends RegistryError {
  constructor(
    registry: string,
    what: string,
    limit: string,
    configKey: string,
    configPath: string | undefined,
    cause: unknown,
  ) {
    super(
      "E_REGISTRY_TIMEOUT",
      registry,
      `registry ${registry} is too slow: ${what} did not finish within ${limit}. If it is only slow, ` +
        `raise the deadline in ${configPath ?? "tbuild's config.toml"}: [registry."${configKey}"] timeout = "1h"`,
      { cause },
    );
  }
}

/** The network failed in a way retries did not cure (resets, timeouts, unknown host). */
export class RegistryNetworkError extends RegistryError {
  constructor(registry: string, hostPort: string, reason: string, cause: unknown) {
    super("E_NETWORK", registry, `cannot reach registry ${registry} at ${hostPort}: ${reason}`, { cause });
  }
}

/**
 * Docker Hub is out of reach (no route to it, as on many CI runners and closed networks): the
 * network's own failure, then how to pull `busybox` and other docker.io images through a mirror.
 * Keeps the failure's code, so scripts that tell failures apart still can.
 */
export class DockerHubUnreachableError extends RegistryError {
  constructor(cause: RegistryError, mirrors: readonly string[], configPath: string | undefined) {
    const file = configPath ?? "tbuild's config.toml";
    const advice =
      mirrors.length === 0
        ? `docker.io cannot be reached from here: to pull its images (busybox, library/...) through a mirror, set in ${file}: [registry."docker.io"] mirrors = ["mirror.example:5000"]`
        : `docker.io cannot be reached from here, and its mirrors (${mirrors.join(", ")}) failed too (see the warnings above): check [registry."docker.io"] mirrors in ${file}`;
    super(
      cause.code,
      DOCKER_HUB,
      `${cause.message.replace(/\.$/, "")}. ${advice}; or load the image with 'tbuild load'`,
      {
        cause,
      },
    );
  }
}

/** The failures that say a registry cannot be reached at all (not that it answered no). */
export function isUnreachable(err: unknown): err is RegistryError {
  return (
    err instanceof RegistryError &&
    (err instanceof RegistryNetworkError ||
      err instanceof ConnectionRefusedError ||
      err instanceof RegistryTimeoutError)
  );
}

/** Any other answer the client cannot use: the status, and the registry's own error codes. */
export class RegistryResponseError extends RegistryError {
  readonly status: number;
  readonly errors: DistributionErrors["errors"];

  constructor(registry: string, what: string, status: number, body: DistributionErrors | undefined) {
    const codes = (body?.errors ?? []).map((e) => `${e.code}${e.message ? `: ${e.message}` : ""}`).join("; ");
    super(
      "E_REGISTRY",
      registry,
      `registry ${registry} answered ${status} to ${what}${codes ? ` (${codes})` : ""}`,
    );
    this.status = status;
    this.errors = body?.errors;
  }
}

/** Bytes that do not hash to the digest they were asked for: never retried into success. */
export class ManifestDigestMismatchError extends RegistryError {
  constructor(registry: string, expected: string, actual: string, repository: string) {
    super(
      "E_DIGEST_MISMATCH",
      registry,
      `digest mismatch: registry ${registry} sent a manifest with digest ${actual} when ${expected} of repository "${repository}" was asked for; nothing was stored`,
    );
  }
}

/** A feature of the distribution protocol tbuild does not handle yet. */
export class RegistryNotSupportedError extends RegistryError {
  constructor(registry: string, what: string) {
    super("E_NOT_SUPPORTED", registry, `${what} is not supported yet (registry ${registry})`);
  }
}

/** The login command's own failure: the credentials were refused. */
export class LoginFailedError extends RegistryError {
  constructor(registry: string, detail: string) {
    super("E_LOGIN_FAILED", registry, `login to ${registry} failed: ${detail}`);
  }
}

/** Reading or writing docker's config.json, or running a credential helper, failed. */
export class CredentialsError extends TbuildError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super("E_CREDENTIALS", message, options);
  }
}
