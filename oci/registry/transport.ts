/**
 * HTTP(S) to registries with Node's own http/https: keep-alive agents per endpoint (so the TLS
 * settings of one registry never leak to another), streamed request and response bodies, an idle
 * timeout, and a classification of socket failures into what a caller retries and what it reports.
 */
import { readFileSync } from "node:fs";
import type * as HttpModule from "node:http";
import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import type * as HttpsModule from "node:https";
import { createRequire } from "node:module";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { rootCertificates } from "node:tls";
import { TbuildError } from "../../errors/index.js";
import { DEFAULT_REQUEST_TIMEOUT_MS, type RegistryEndpoint } from "./hosts.js";

// Loaded through require: an ESM import of node:http builds its facade, whose lazy getters
// (fetch's WebSocket and friends) load all of undici, a fifth of tbuild's start-up.
const require = createRequire(import.meta.url);
const http = require("node:http") as typeof HttpModule;
const https = require("node:https") as typeof HttpsModule;

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A Buffer, or a stream sent as it comes (give `content-length` in headers to avoid chunked encoding). */
  body?: Uint8Array | NodeJS.ReadableStream | AsyncIterable<Uint8Array>;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Must be consumed or destroyed by the caller so that the socket returns to the pool. */
  body: IncomingMessage;
  url: URL;
  method: string;
}

/** How a socket-level failure should be treated. */
export type NetworkFailure = "refused" | "tls" | "retryable" | "fatal";

/** A socket went quiet for longer than the idle timeout. */
export class IdleTimeoutError extends Error {
  readonly code = "ETIMEDOUT";
}

/**
 * A request (its answer's body included) outlasted its endpoint's total deadline: a registry that
 * trickles never goes idle, so only this ends it. Not retried: a retry would trickle as slowly.
 */
export class RequestDeadlineError extends Error {
  readonly code = "E_REQUEST_DEADLINE";
  readonly timeoutMs: number;
  readonly what: string;

  constructor(what: string, timeoutMs: number) {
    super(`${what} did not finish within ${formatDuration(timeoutMs)}`);
    this.what = what;
    this.timeoutMs = timeoutMs;
  }
}

/** `90s`, `30m`, `1.5h`: as config.toml's durations are written. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

const RETRYABLE_CODES = new Set([
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ECONNABORTED",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
  "ERR_STREAM_PREMATURE_CLOSE",
  "UND_ERR_SOCKET",
]);

const TLS_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REVOKED",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "EPROTO",
]);

export function classifyNetworkError(err: unknown): NetworkFailure {
  if (err instanceof RequestDeadlineError) return "fatal";
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? "";
  if (code === "ECONNREFUSED") return "refused";
  if (TLS_CODES.has(code) || code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_")) return "tls";
  if (RETRYABLE_CODES.has(code) || err instanceof IdleTimeoutError) return "retryable";
  // A response cut short surfaces as "aborted" without a code on some paths.
  if ((err as Error | undefined)?.message === "aborted") return "retryable";
  return "fatal";
}

/** A readable reason for a socket failure: the code and Node's message. */
export function describeNetworkError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code && !e.message.includes(e.code) ? `${e.code}: ${e.message}` : e.message;
}

export interface TransportOptions {
  /** A socket idle this long fails with a retryable error; registries that stall must not hang a pull. */
  idleTimeoutMs?: number;
  userAgent?: string;
}

export class HttpTransport {
  private readonly httpAgent: HttpModule.Agent;
  private readonly httpsAgents = new Map<string, HttpsModule.Agent>();
  private readonly idleTimeoutMs: number;
  private readonly userAgent: string;

  constructor(options: TransportOptions = {}) {
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.userAgent = options.userAgent ?? "tbuild";
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  /** Sends a request and resolves once the response headers arrive. */
  async send(endpoint: RegistryEndpoint | undefined, request: HttpRequest): Promise<HttpResponse> {
    const { url } = request;
    const isHttps = url.protocol === "https:";
    const agent = isHttps ? this.httpsAgentFor(endpoint, url.host) : this.httpAgent;
    const headers: Record<string, string> = { "user-agent": this.userAgent, ...request.headers };
    const body = request.body;
    const module = isHttps ? https : http;
    return await new Promise<HttpResponse>((resolve, reject) => {
      const req = module.request(url, {
        method: request.method,
        headers,
        agent,
        ...(request.signal ? { signal: request.signal } : {}),
      });
      req.setTimeout(this.idleTimeoutMs, () => {
        req.destroy(new IdleTimeoutError(`no answer from ${url.host} for ${this.idleTimeoutMs / 1000} s`));
      });
      // The total deadline covers the answer's body too, however slowly it is read.
      let response: IncomingMessage | undefined;
      const deadlineMs = endpoint?.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
      const deadline = setTimeout(() => {
        const err = new RequestDeadlineError(`${request.method} ${url.pathname}`, deadlineMs);
        req.destroy(err);
        response?.destroy(err);
      }, deadlineMs);
      deadline.unref();
      const finished = () => clearTimeout(deadline);
      req.once("error", (err) => {
        finished();
        reject(err);
      });
      req.once("response", (res) => {
        response = res;
        res.once("close", finished);
        // The idle timeout keeps covering the body: a stalled stream fails instead of hanging.
        res.socket?.setTimeout(this.idleTimeoutMs);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: res,
          url,
          method: request.method,
        });
      });
      if (body === undefined) {
        req.end();
      } else if (body instanceof Uint8Array) {
        req.end(body);
      } else {
        const source = isAsyncIterable(body) ? Readable.from(body) : (body as NodeJS.ReadableStream);
        pipeline(source, req).catch((err: unknown) => req.destroy(err as Error));
      }
    });
  }

  private httpsAgentFor(endpoint: RegistryEndpoint | undefined, host: string): HttpsModule.Agent {
    // Only the endpoint's own host gets its TLS settings; redirects elsewhere use the defaults.
    const own = endpoint !== undefined && endpoint.host === host;
    const key = own ? `${host}|${endpoint.insecure}|${endpoint.ca.join(",")}` : "default";
    let agent = this.httpsAgents.get(key);
    if (!agent) {
      const options: HttpsModule.AgentOptions = { keepAlive: true, maxSockets: 16 };
      if (own && endpoint.ca.length > 0) options.ca = [...rootCertificates, ...endpoint.ca.map(readCa)];
      if (own && endpoint.insecure) options.rejectUnauthorized = false;
      agent = new https.Agent(options);
      this.httpsAgents.set(key, agent);
    }
    return agent;
  }

  /** Closes pooled sockets so the process can exit. */
  close(): void {
    this.httpAgent.destroy();
    for (const agent of this.httpsAgents.values()) agent.destroy();
    this.httpsAgents.clear();
  }
}

function readCa(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new TbuildError(
      "E_CONFIG",
      `cannot read the CA file ${file} named in config.toml: ${(err as NodeJS.ErrnoException).code ?? err}`,
    );
  }
}

function isAsyncIterable(value: unknown): value is AsyncIterable<Uint8Array> {
  return (
    typeof value === "object" &&
    value !== null &&
    Symbol.asyncIterator in value &&
    typeof (value as { pipe?: unknown }).pipe !== "function"
  );
}

/** Reads a (small) response body whole, up to `limit` bytes; the rest is discarded. */
export async function readBody(res: HttpResponse, limit = 4 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    if (size < limit) chunks.push(chunk);
    size += chunk.length;
  }
  return Buffer.concat(chunks).subarray(0, limit);
}

/**
 * Drops a response body we do not need. A small one (and an empty one: HEAD, 201, 202) is read to
 * its end, which is what returns the socket to the pool, even when Node already holds it all; a
 * large or unsized one is cut (cheaper than reading a whole blob to reuse a connection).
 */
export function discard(res: HttpResponse): void {
  const length = Number(res.headers["content-length"] ?? Number.NaN);
  const small = Number.isFinite(length) && length <= 64 * 1024;
  if (res.method === "HEAD" || res.body.complete || small || res.status === 204 || res.status === 304) {
    res.body.resume();
  } else {
    res.body.destroy();
  }
}
