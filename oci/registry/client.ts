/**
 * A session with one registry endpoint (the registry itself or one of its mirrors): the
 * distribution API's manifest and blob operations over the authorizing, retrying request loop.
 * Bodies are streams; nothing here holds a whole blob in memory.
 */
import { createHash } from "node:crypto";
import { TbuildError } from "../../errors/index.js";
import { releaseSpentBuffers } from "../memory.js";
import type { DistributionErrors } from "../spec.js";
import { MediaType } from "../spec.js";
import { Authorizer, type CredentialsProvider } from "./auth.js";
import {
  BlobNotFoundError,
  ConnectionRefusedError,
  ImageNotFoundError,
  ManifestDigestMismatchError,
  RegistryNetworkError,
  RegistryResponseError,
  RegistryTimeoutError,
  RegistryTlsError,
  UnauthorizedError,
} from "./errors.js";
import { endpointUrl, type RegistryEndpoint } from "./hosts.js";
import { backoffDelay, defaultRetryPolicy, isRetryableStatus, type RetryPolicy, wait } from "./retry.js";
import {
  classifyNetworkError,
  describeNetworkError,
  discard,
  formatDuration,
  type HttpRequest,
  type HttpResponse,
  type HttpTransport,
  RequestDeadlineError,
  readBody,
} from "./transport.js";

/** Every manifest kind tbuild reads, so that the registry never down-converts. */
export const MANIFEST_ACCEPT = [
  MediaType.ociIndex,
  MediaType.ociManifest,
  MediaType.dockerManifestList,
  MediaType.dockerManifest,
].join(", ");

/** Manifests are small; a bigger answer is refused rather than buffered. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_REDIRECTS = 5;
/** Bounds on a tag list: pages followed, and bytes in one page (100,000 tags of 128 characters). */
const MAX_TAG_PAGES = 100;
const MAX_TAG_PAGE_BYTES = 16 * 1024 * 1024;

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface ClientOptions {
  transport: HttpTransport;
  credentials: CredentialsProvider;
  retry?: RetryPolicy;
  signal?: AbortSignal;
  /** config.toml's path, named in TLS error messages. */
  configPath?: string;
}

interface RequestSpec {
  method: string;
  /** A path on the endpoint, or an absolute URL (upload locations). */
  target: string | URL;
  scopes: string[];
  headers?: Record<string, string>;
  /** Made afresh for each attempt; a stream body makes the request single-attempt. */
  body?: () => HttpRequest["body"];
  /** Retry transient failures (true for requests without a stream body). */
  retry?: boolean;
  /** For messages: "GET manifest busybox:latest". */
  what: string;
}

/** Raised while streaming a blob when a resumed request got the whole blob again: start over. */
export class BlobRestartError extends Error {}

export class RegistryClient {
  readonly endpoint: RegistryEndpoint;
  private readonly transport: HttpTransport;
  private readonly authorizer: Authorizer;
  private readonly retry: RetryPolicy;
  private readonly signal: AbortSignal | undefined;
  private readonly configPath: string | undefined;

  constructor(endpoint: RegistryEndpoint, options: ClientOptions) {
    this.endpoint = endpoint;
    this.transport = options.transport;
    this.retry = options.retry ?? defaultRetryPolicy;
    this.signal = options.signal;
    this.configPath = options.configPath;
    this.authorizer = new Authorizer(endpoint, options.transport, options.credentials, options.signal);
  }

  /** The name used in messages: the registry, or the mirror's own host. */
  get name(): string {
    return this.endpoint.mirror ? this.endpoint.host : this.endpoint.registry;
  }

  /** Checks the endpoint's credentials as `docker login` does; throws UnauthorizedError if refused. */
  async verifyCredentials(): Promise<void> {
    try {
      await this.authorizer.verify((url, authorization) =>
        this.sendRetrying(url, authorization ? { authorization } : {}),
      );
    } catch (err) {
      throw this.networkError(err);
    }
  }

  /** GET a manifest or index by tag or digest, bytes kept as sent; a digest reference is verified. */
  async getManifest(repository: string, reference: string): Promise<FetchedManifest> {
    const scopes = [pullScope(repository)];
    const res = await this.request({
      method: "GET",
      target: `/v2/${repository}/manifests/${reference}`,
      scopes,
      headers: { accept: MANIFEST_ACCEPT },
      what: `GET manifest ${repository}:${reference}`,
    });
    if (res.status === 404) throw await this.notFound(res, repository, reference);
    if (res.status !== 200) throw await this.unexpected(res, `GET manifest ${repository}:${reference}`);
    const declared = Number(res.headers["content-length"] ?? 0);
    if (declared > MAX_MANIFEST_BYTES) {
      res.body.destroy();
      throw new RegistryResponseError(
        this.name,
        `GET manifest ${repository}:${reference} (too large)`,
        200,
        undefined,
      );
    }
    const bytes = await readBody(res, MAX_MANIFEST_BYTES + 1).catch((err: unknown) => {
      throw this.networkError(err);
    });
    if (bytes.length > MAX_MANIFEST_BYTES) {
      throw new RegistryResponseError(
        this.name,
        `GET manifest ${repository}:${reference} (too large)`,
        200,
        undefined,
      );
    }
    const computed = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    let digest = computed;
    if (reference.includes(":")) {
      digest = reference;
      if (reference.startsWith("sha256:") && computed !== reference) {
        throw new ManifestDigestMismatchError(this.name, reference, computed, repository);
      }
      if (!reference.startsWith("sha256:")) {
        const algorithm = reference.slice(0, reference.indexOf(":"));
        const actual = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
        if (actual !== reference)
          throw new ManifestDigestMismatchError(this.name, reference, actual, repository);
      }
    }
    const contentType = String(res.headers["content-type"] ?? "")
      .split(";")[0]!
      .trim();
    const mediaType = mediaTypeOf(bytes) ?? contentType;
    return { bytes, mediaType, digest };
  }

  /** Whether the repository already has the blob (HEAD). */
  async hasBlob(repository: string, digest: string, scopes = [pullScope(repository)]): Promise<boolean> {
    const res = await this.request({
      method: "HEAD",
      target: `/v2/${repository}/blobs/${digest}`,
      scopes,
      what: `HEAD blob ${digest}`,
    });
    discard(res);
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw await this.unexpected(res, `HEAD blob ${digest} in ${repository}`);
  }

  /**
   * The blob's bytes from `offset` on, as a stream that survives cut connections: each failure
   * mid-body resumes with `Range: bytes=N-`. A registry that ignores Range (200 instead of 206)
   * raises BlobRestartError, so that the caller starts the blob over with a fresh hash.
   */
  async *blobChunks(repository: string, digest: string): AsyncGenerator<Uint8Array> {
    let offset = 0;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      const res = await this.request({
        method: "GET",
        target: `/v2/${repository}/blobs/${digest}`,
        scopes: [pullScope(repository)],
        headers,
        what: `GET blob ${digest}`,
      });
      if (res.status === 404) {
        discard(res);
        throw new BlobNotFoundError(this.name, repository, digest);
      }
      if (offset > 0 && res.status === 200) {
        discard(res);
        throw new BlobRestartError(`registry ${this.name} ignored a Range request for ${digest}`);
      }
      if (offset > 0 && res.status === 206) {
        const start = /^bytes (\d+)-/.exec(String(res.headers["content-range"] ?? ""))?.[1];
        if (Number(start) !== offset) {
          discard(res);
          throw new BlobRestartError(`registry ${this.name} resumed ${digest} at the wrong offset`);
        }
      } else if (res.status !== 200) {
        throw await this.unexpected(res, `GET blob ${digest} from ${repository}`);
      }
      try {
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          offset += chunk.length;
          yield chunk;
          releaseSpentBuffers(chunk.length);
        }
        return;
      } catch (err) {
        if (classifyNetworkError(err) !== "retryable" || attempt + 1 >= this.retry.attempts) {
          throw this.networkError(err);
        }
        await wait(backoffDelay(this.retry, attempt), this.signal);
      }
    }
  }

  /**
   * Asks the registry to link a blob from another of its repositories. True when mounted; false
   * when it declined (it may have opened an upload instead, which is cancelled).
   */
  async mountBlob(repository: string, digest: string, from: string): Promise<boolean> {
    const target = `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`;
    const res = await this.request({
      method: "POST",
      target,
      scopes: [pushScope(repository), pullScope(from)],
      headers: { "content-length": "0" },
      what: `mount blob ${digest} from ${from}`,
    });
    discard(res);
    if (res.status === 201) return true;
    if (res.status === 202) {
      await this.cancelUpload(res, repository);
      return false;
    }
    if (res.status === 404) return false;
    throw await this.unexpected(res, `mount blob ${digest} from ${from} into ${repository}`);
  }

  /** Opens an upload session; its URL. */
  async startUpload(repository: string): Promise<URL> {
    const res = await this.request({
      method: "POST",
      target: `/v2/${repository}/blobs/uploads/`,
      scopes: [pushScope(repository)],
      headers: { "content-length": "0" },
      what: `start upload to ${repository}`,
    });
    discard(res);
    if (res.status !== 202) throw await this.unexpected(res, `POST blob upload to ${repository}`);
    return this.location(res, "POST blob upload");
  }

  /** Uploads a whole blob in one PUT. */
  async uploadMonolithic(
    repository: string,
    location: URL,
    digest: string,
    size: number,
    body: () => NodeJS.ReadableStream,
  ): Promise<void> {
    await this.closeUpload(repository, location, digest, {
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      body,
    });
  }

  /** Ends an upload at `location` with PUT `?digest=`: the blob's last bytes (`body`), or none. */
  private async closeUpload(
    repository: string,
    location: URL,
    digest: string,
    last: { headers: Record<string, string>; body?: () => NodeJS.ReadableStream },
  ): Promise<void> {
    const url = new URL(location);
    url.searchParams.set("digest", digest);
    const res = await this.request({
      method: "PUT",
      target: url,
      scopes: [pushScope(repository)],
      headers: last.headers,
      ...(last.body ? { body: last.body, retry: false } : {}),
      what: `PUT blob ${digest}`,
    });
    discard(res);
    if (res.status !== 201) throw await this.unexpected(res, `PUT blob ${digest} to ${repository}`);
  }

  /**
   * Uploads a blob in PATCH chunks of `chunkSize`, each at the offset the registry's `Range`
   * answer says it holds, following each new `Location`, then closes it with PUT `?digest=`.
   */
  async uploadChunked(
    repository: string,
    start: URL,
    digest: string,
    size: number,
    chunkSize: number,
    chunk: (offset: number, length: number) => NodeJS.ReadableStream,
  ): Promise<void> {
    let location = start;
    let offset = 0;
    while (offset < size) {
      const length = Math.min(chunkSize, size - offset);
      const res = await this.request({
        method: "PATCH",
        target: location,
        scopes: [pushScope(repository)],
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(length),
          "content-range": `${offset}-${offset + length - 1}`,
        },
        body: () => chunk(offset, length),
        retry: false,
        what: `PATCH blob ${digest}`,
      });
      discard(res);
      if (res.status !== 202) throw await this.unexpected(res, `PATCH blob ${digest} to ${repository}`);
      location = this.location(res, "PATCH blob");
      // Range is inclusive: "0-1023" means 1024 bytes held. Trust it over our own count.
      const held = /^(?:bytes=)?0-(\d+)$/.exec(String(res.headers.range ?? ""));
      offset = held ? Number(held[1]) + 1 : offset + length;
    }
    await this.closeUpload(repository, location, digest, { headers: { "content-length": "0" } });
  }

  /** Stores a manifest under a tag or digest; the bytes go as given. */
  async putManifest(
    repository: string,
    reference: string,
    bytes: Uint8Array,
    mediaType: string,
  ): Promise<void> {
    const res = await this.request({
      method: "PUT",
      target: `/v2/${repository}/manifests/${reference}`,
      scopes: [pushScope(repository)],
      headers: { "content-type": mediaType, "content-length": String(bytes.length) },
      body: () => bytes,
      what: `PUT manifest ${repository}:${reference}`,
    });
    discard(res);
    if (res.status !== 201 && res.status !== 200) {
      throw await this.unexpected(res, `PUT manifest ${repository}:${reference}`);
    }
  }

  /**
   * The repository's tags (`GET /v2/<name>/tags/list`), following the registry's `Link: <…>;
   * rel="next"` pages on this endpoint, at most `limit` of them; a repository the registry does
   * not know has none.
   */
  async listTags(repository: string, limit = 100_000): Promise<string[]> {
    const what = `GET tags of ${repository}`;
    const tags: string[] = [];
    let target: string | URL = `/v2/${repository}/tags/list`;
    for (let page = 0; page < MAX_TAG_PAGES; page++) {
      const res = await this.request({
        method: "GET",
        target,
        scopes: [pullScope(repository)],
        headers: { accept: "application/json" },
        what,
      });
      if (res.status === 404) {
        discard(res);
        return tags;
      }
      if (res.status !== 200) throw await this.unexpected(res, what);
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          size += chunk.length;
          if (size > MAX_TAG_PAGE_BYTES) {
            res.body.destroy();
            throw new RegistryResponseError(this.name, `${what} (too large)`, 200, undefined);
          }
          chunks.push(chunk);
        }
      } catch (err) {
        throw this.networkError(err);
      }
      let listed: unknown;
      try {
        listed = (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { tags?: unknown })?.tags;
      } catch {
        throw new RegistryResponseError(this.name, `${what} (not JSON)`, 200, undefined);
      }
      // `null` is how distribution lists a repository whose tags were all deleted.
      for (const tag of Array.isArray(listed) ? listed : []) {
        if (typeof tag === "string") tags.push(tag);
        if (tags.length >= limit) return tags;
      }
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(String(res.headers.link ?? ""))?.[1];
      if (next === undefined) return tags;
      target = new URL(next, target instanceof URL ? target : endpointUrl(this.endpoint, target));
      // Credentials and trust stay with this endpoint: a page elsewhere is not followed.
      if (target.host !== this.endpoint.host) return tags;
    }
    return tags;
  }

  private async cancelUpload(res: HttpResponse, repository: string): Promise<void> {
    const location = res.headers.location;
    if (!location) return;
    try {
      const cancel = await this.request({
        method: "DELETE",
        target: new URL(location, endpointUrl(this.endpoint, "/")),
        scopes: [pushScope(repository)],
        what: "cancel upload",
      });
      discard(cancel);
    } catch {
      // An abandoned upload session expires on the registry by itself.
    }
  }

  private location(res: HttpResponse, what: string): URL {
    const location = res.headers.location;
    if (!location)
      throw new RegistryResponseError(this.name, `${what} (no Location header)`, res.status, undefined);
    return new URL(location, res.url);
  }

  /**
   * Sends a request with authorization, following redirects for GET/HEAD, retrying transient
   * failures (when the body can be made again) and asking for a new token on 401 once.
   */
  private async request(spec: RequestSpec): Promise<HttpResponse> {
    const retryable = spec.retry ?? true;
    let scopes = spec.scopes;
    let reauthorized = false;
    for (let attempt = 0; ; attempt++) {
      let res: HttpResponse;
      try {
        await this.authorizer.ping((url) => this.sendRetrying(url));
        const authorization = await this.authorizer.authorization(scopes);
        res = await this.sendFollowingRedirects(spec, authorization);
      } catch (err) {
        const kind = classifyNetworkError(err);
        if (kind === "retryable" && retryable && attempt + 1 < this.retry.attempts) {
          await wait(backoffDelay(this.retry, attempt), this.signal);
          continue;
        }
        throw this.networkError(err);
      }
      if (res.status === 401) {
        const next = this.authorizer.unauthorized(res, scopes);
        discard(res);
        if (!reauthorized && next.retry) {
          reauthorized = true;
          scopes = next.scopes;
          attempt--;
          continue;
        }
        throw new UnauthorizedError(
          this.name,
          next.detail || `${spec.what} needs credentials`,
          await this.authorizer.refusedLogin(),
        );
      }
      if (res.status === 403) {
        const body = await readErrors(res);
        const detail = body?.errors?.map((e) => e.message ?? e.code).join("; ") || "access denied";
        throw new UnauthorizedError(this.name, `${spec.what}: ${detail}`);
      }
      if (isRetryableStatus(res.status) && retryable && attempt + 1 < this.retry.attempts) {
        const retryAfter = res.headers["retry-after"];
        discard(res);
        await wait(backoffDelay(this.retry, attempt, retryAfter), this.signal);
        continue;
      }
      return res;
    }
  }

  private async sendFollowingRedirects(
    spec: RequestSpec,
    authorization: string | undefined,
  ): Promise<HttpResponse> {
    let url = spec.target instanceof URL ? spec.target : endpointUrl(this.endpoint, spec.target);
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { ...spec.headers };
      // Credentials go only to the endpoint itself, never to where it redirects (a CDN, a bucket).
      if (authorization && url.host === this.endpoint.host) headers.authorization = authorization;
      const body = spec.body?.();
      const res = await this.sendOnce({
        method: spec.method,
        url,
        headers,
        ...(body === undefined ? {} : { body }),
      });
      const redirect = res.status >= 300 && res.status < 400 && res.status !== 304 && res.headers.location;
      if (!redirect || (spec.method !== "GET" && spec.method !== "HEAD") || hop >= MAX_REDIRECTS) return res;
      discard(res);
      url = new URL(redirect, url);
    }
  }

  /** A GET without a body, retried on transient failures (the ping, the login check). */
  private async sendRetrying(url: URL, headers: Record<string, string> = {}): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.sendOnce({ method: "GET", url, headers });
        if (!isRetryableStatus(res.status) || attempt + 1 >= this.retry.attempts) return res;
        const retryAfter = res.headers["retry-after"];
        discard(res);
        await wait(backoffDelay(this.retry, attempt, retryAfter), this.signal);
      } catch (err) {
        if (classifyNetworkError(err) !== "retryable" || attempt + 1 >= this.retry.attempts) throw err;
        await wait(backoffDelay(this.retry, attempt), this.signal);
      }
    }
  }

  private sendOnce(request: Omit<HttpRequest, "signal">): Promise<HttpResponse> {
    return this.transport.send(this.endpoint, {
      ...request,
      ...(this.signal ? { signal: this.signal } : {}),
    });
  }

  private networkError(err: unknown): Error {
    if (err instanceof RequestDeadlineError) {
      return new RegistryTimeoutError(
        this.name,
        err.what,
        formatDuration(err.timeoutMs),
        this.endpoint.configKey,
        this.configPath,
        err,
      );
    }
    if (err instanceof TbuildError) return err;
    if ((err as Error | undefined)?.name === "AbortError") return err as Error;
    const kind = classifyNetworkError(err);
    const reason = describeNetworkError(err);
    if (kind === "refused") {
      return new ConnectionRefusedError(
        this.name,
        this.endpoint.host,
        err,
        this.endpoint.configKey,
        this.configPath,
      );
    }
    if (kind === "tls") {
      return new RegistryTlsError(this.endpoint.configKey, this.endpoint.host, reason, this.configPath, err);
    }
    if (kind === "retryable" || (err as NodeJS.ErrnoException | undefined)?.code) {
      return new RegistryNetworkError(this.name, this.endpoint.host, reason, err);
    }
    return err as Error;
  }

  private async notFound(res: HttpResponse, repository: string, reference: string): Promise<Error> {
    const body = await readErrors(res);
    const codes = (body?.errors ?? []).map((e) => e.code);
    return new ImageNotFoundError(
      this.name,
      repository,
      reference,
      codes.includes("NAME_UNKNOWN") ? "repository" : "manifest",
    );
  }

  private async unexpected(res: HttpResponse, what: string): Promise<Error> {
    return new RegistryResponseError(this.name, what, res.status, await readErrors(res));
  }
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}

async function readErrors(res: HttpResponse): Promise<DistributionErrors | undefined> {
  try {
    const body = await readBody(res, 64 * 1024);
    const parsed = JSON.parse(body.toString("utf8")) as DistributionErrors;
    return typeof parsed === "object" && parsed !== null ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** The `mediaType` a manifest declares in its own JSON, if any. */
function mediaTypeOf(bytes: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(bytes.toString("utf8")) as { mediaType?: unknown };
    return typeof parsed.mediaType === "string" ? parsed.mediaType : undefined;
  } catch {
    return undefined;
  }
}
