/**
 * What pull, push and login share: the options a command passes down (config, credentials,
 * signal, warnings) and the clients for a registry's endpoints over one transport.
 */

import type { CredentialsProvider } from "./auth.js";
import { RegistryClient } from "./client.js";
import { getCredentials } from "./credentials.js";
import { ImageNotFoundError, ManifestDigestMismatchError, RegistryError } from "./errors.js";
import type { RegistryEndpoint, RegistryHostsConfig } from "./hosts.js";
import type { RetryPolicy } from "./retry.js";
import { HttpTransport } from "./transport.js";

export interface RegistryOptions {
  /** config.toml's `[registry."host"]` tables. */
  hosts?: RegistryHostsConfig;
  /** config.toml's path, for messages that say which key to set. */
  configPath?: string;
  /** Where `DOCKER_CONFIG`/`HOME` are read (for credentials) and helpers run. */
  env?: NodeJS.ProcessEnv;
  /** Overrides docker's config.json as the source of credentials. */
  credentials?: CredentialsProvider;
  signal?: AbortSignal;
  retry?: RetryPolicy;
  /** One line each: a mirror that failed, a platform that does not match. */
  warn?: (message: string) => void;
  /** Shared by several operations; when absent one is made and closed per operation. */
  transport?: HttpTransport;
}

/** Clients for `endpoints` over one transport, closed together. */
export class RegistrySession {
  readonly clients: RegistryClient[];
  private readonly transport: HttpTransport;
  private readonly ownsTransport: boolean;

  constructor(endpoints: RegistryEndpoint[], options: RegistryOptions, signal?: AbortSignal) {
    this.ownsTransport = options.transport === undefined;
    this.transport = options.transport ?? new HttpTransport();
    const env = options.env ?? process.env;
    const credentials = options.credentials ?? ((host: string) => getCredentials(host, env));
    const effectiveSignal = signal ?? options.signal;
    this.clients = endpoints.map(
      (endpoint) =>
        new RegistryClient(endpoint, {
          transport: this.transport,
          credentials,
          ...(options.retry ? { retry: options.retry } : {}),
          ...(effectiveSignal ? { signal: effectiveSignal } : {}),
          ...(options.configPath ? { configPath: options.configPath } : {}),
        }),
    );
  }

  close(): void {
    if (this.ownsTransport) this.transport.close();
  }
}

/**
 * Runs `operation` against each client from `start` on until one succeeds: a mirror's failure
 * (missing, unreachable, refusing) moves on to the next endpoint, with a warning. A digest
 * mismatch never does: bad bytes are not retried into success elsewhere. The last endpoint's
 * error is the one reported.
 */
export async function firstThatWorks<T>(
  clients: RegistryClient[],
  start: number,
  operation: (client: RegistryClient) => Promise<T>,
  warn: ((message: string) => void) | undefined,
): Promise<{ value: T; index: number }> {
  for (let i = start; ; i++) {
    const client = clients[i]!;
    try {
      return { value: await operation(client), index: i };
    } catch (err) {
      const last = i === clients.length - 1;
      if (last || !client.endpoint.mirror || !(err instanceof RegistryError) || isMismatch(err)) throw err;
      if (!(err instanceof ImageNotFoundError)) {
        warn?.(`mirror ${client.endpoint.host} failed (${err.message}); trying ${clients[i + 1]!.name}`);
      }
    }
  }
}

function isMismatch(err: unknown): boolean {
  return (
    err instanceof ManifestDigestMismatchError || (err as { code?: string }).code === "E_DIGEST_MISMATCH"
  );
}
