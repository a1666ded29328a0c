/**
 * Where a registry name leads: the scheme, the TLS settings and the mirrors, from config.toml's
 * `[registry."host"]` tables, with Docker's defaults (plain HTTP on loopback, `docker.io` served
 * by `registry-1.docker.io`).
 */

/** One `[registry."host"]` table of config.toml. */
export interface RegistryHostConfig {
  /** Hosts (`host:port`, optionally `http://` or `https://` first) tried in order before the registry itself, for pulls. */
  mirrors?: string[];
  /** Speak plain HTTP (true), or insist on TLS even on loopback (false). */
  http?: boolean;
  /** Skip TLS certificate verification for this host alone. */
  insecure?: boolean;
  /** Extra certificate authorities (PEM files) trusted for this host, beside the system's. */
  ca?: string[];
  /** Milliseconds one request may take, from sending it to the last byte of its answer. */
  timeout?: number;
}

/**
 * A request's total deadline when config.toml sets none: long enough for a layer of 10 GB at
 * 6 MB/s, short enough that a registry trickling a byte a second fails a CI job rather than hangs it.
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30 * 60 * 1000;

/** config.toml's registries, keyed by the name the user writes (`docker.io`, `localhost:5000`). */
export type RegistryHostsConfig = Record<string, RegistryHostConfig>;

/** One place to send distribution API requests to. */
export interface RegistryEndpoint {
  /** The registry as named in references and messages: `docker.io`, `127.0.0.1:5000`. */
  registry: string;
  /** `host[:port]` actually connected to: `registry-1.docker.io`, a mirror's address. */
  host: string;
  scheme: "http" | "https";
  /** Verification of the server's certificate is off (configured `insecure = true`). */
  insecure: boolean;
  /** PEM files of extra CAs. */
  ca: string[];
  /** A mirror of `registry` rather than the registry itself. */
  mirror: boolean;
  /** The config.toml key whose settings apply (for messages). */
  configKey: string;
  /** The total deadline of one request (ms): `timeout` of that key, else the default. */
  timeoutMs: number;
}

export const DOCKER_HUB = "docker.io";
const DOCKER_HUB_API_HOST = "registry-1.docker.io";

/** The endpoint of the registry itself (pushes, logins). */
export function registryEndpoint(registry: string, hosts: RegistryHostsConfig = {}): RegistryEndpoint {
  const apiHost = registry === DOCKER_HUB ? DOCKER_HUB_API_HOST : registry;
  return endpointFor(registry, apiHost, undefined, hosts[registry] ?? {}, false, registry);
}

/** Where a pull of `registry` is tried, in order: its configured mirrors, then the registry itself. */
export function pullEndpoints(registry: string, hosts: RegistryHostsConfig = {}): RegistryEndpoint[] {
  const mirrors = (hosts[registry]?.mirrors ?? []).map((mirror) => {
    const match = /^(https?):\/\/([^/]+)\/?$/.exec(mirror);
    const host = match ? match[2]! : mirror.replace(/\/+$/, "");
    const scheme = match ? (match[1] as "http" | "https") : undefined;
    return endpointFor(registry, host, scheme, hosts[host] ?? {}, true, host);
  });
  return [...mirrors, registryEndpoint(registry, hosts)];
}

function endpointFor(
  registry: string,
  host: string,
  scheme: "http" | "https" | undefined,
  config: RegistryHostConfig,
  mirror: boolean,
  configKey: string,
): RegistryEndpoint {
  const plain = config.http ?? isLoopbackHost(host);
  return {
    registry,
    host,
    scheme: scheme ?? (plain ? "http" : "https"),
    insecure: config.insecure === true,
    ca: config.ca ?? [],
    mirror,
    configKey,
    timeoutMs: config.timeout ?? DEFAULT_REQUEST_TIMEOUT_MS,
  };
}

/** `localhost` and `127.0.0.0/8` (and `[::1]`), with or without a port: plain HTTP by default, as Docker does. */
export function isLoopbackHost(hostPort: string): boolean {
  const host = hostPort.startsWith("[")
    ? hostPort.slice(0, hostPort.indexOf("]") + 1)
    : hostPort.split(":")[0]!;
  return host === "localhost" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** The base URL of an endpoint's API. */
export function endpointUrl(endpoint: RegistryEndpoint, path: string): URL {
  return new URL(path, `${endpoint.scheme}://${endpoint.host}`);
}
