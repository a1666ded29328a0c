/**
 * Authorization for one registry endpoint, as Docker's token specification and distribution's
 * clients do it: ping `/v2/` to learn the challenge; for `Basic`, send the credentials; for
 * `Bearer`, exchange credentials (or nothing, anonymously) at the realm for a token covering the
 * scopes asked for, reuse it per scope set until it expires, and ask again when the registry
 * answers 401. Token exchange: GET with Basic credentials (every token server supports it); an
 * identity token (OAuth2 refresh token) is POSTed as a form first, falling back to GET on 404, and
 * a token server that refuses GET (404/405) is asked with the OAuth2 password form.
 */
import { type Challenge, parseChallenges } from "./challenge.js";
import type { Credentials } from "./credentials.js";
import { type RefusedLogin, RegistryResponseError, UnauthorizedError } from "./errors.js";
import { endpointUrl, isLoopbackHost, type RegistryEndpoint } from "./hosts.js";
import { discard, type HttpResponse, type HttpTransport, readBody } from "./transport.js";

/** Finds credentials for a registry or mirror host; undefined for anonymous access. */
export type CredentialsProvider = (host: string) => Promise<Credentials | undefined>;

interface CachedToken {
  token: string;
  expiresAt: number;
}

interface TokenResponse {
  token?: string;
  access_token?: string;
  expires_in?: number;
  refresh_token?: string;
}

/** Tokens a little early, so a token never expires in flight. */
const EXPIRY_MARGIN_MS = 5_000;
/** The token spec's default lifetime when the server gives none. */
const DEFAULT_TOKEN_SECONDS = 60;
const CLIENT_ID = "tbuild";

export class Authorizer {
  private challenge: Challenge | null | undefined;
  private pinging: Promise<void> | undefined;
  private credentials: Promise<Credentials | undefined> | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();
  /** A refresh token the token server handed back (OAuth2 `access_type=offline`), used from then on. */
  private refreshToken: string | undefined;

  private readonly endpoint: RegistryEndpoint;
  private readonly transport: HttpTransport;
  private readonly provider: CredentialsProvider;
  private readonly signal: AbortSignal | undefined;

  constructor(
    endpoint: RegistryEndpoint,
    transport: HttpTransport,
    provider: CredentialsProvider,
    signal?: AbortSignal,
  ) {
    this.endpoint = endpoint;
    this.transport = transport;
    this.provider = provider;
    this.signal = signal;
  }

  /** The name to show in messages: the registry, or the mirror's host. */
  private get shownName(): string {
    return this.endpoint.mirror ? this.endpoint.host : this.endpoint.registry;
  }

  private loadCredentials(): Promise<Credentials | undefined> {
    this.credentials ??= this.provider(this.endpoint.mirror ? this.endpoint.host : this.endpoint.registry);
    return this.credentials;
  }

  /** Learns the registry's challenge once (`GET /v2/`). */
  async ping(send: (url: URL) => Promise<HttpResponse>): Promise<void> {
    if (this.challenge !== undefined) return;
    this.pinging ??= (async () => {
      const res = await send(endpointUrl(this.endpoint, "/v2/"));
      if (res.status === 401 || (res.status >= 200 && res.status < 300)) discard(res);
      if (res.status === 401) {
        this.challenge = pickChallenge(parseChallenges(res.headers["www-authenticate"])) ?? null;
      } else if (res.status >= 200 && res.status < 300) {
        this.challenge = null;
      } else {
        const said = (await readBody(res, 4096)).toString("utf8");
        // Go's TLS servers (docker-registry) and nginx answer plain HTTP with a 400 that says so.
        if (
          res.status === 400 &&
          /HTTP request to an HTTPS server|plain HTTP request was sent to HTTPS/i.test(said)
        ) {
          throw new RegistryResponseError(
            this.shownName,
            `GET /v2/ in plain HTTP (it speaks TLS: set [registry."${this.endpoint.configKey}"] http = false in config.toml, or remove http = true there)`,
            res.status,
            undefined,
          );
        }
        throw new RegistryResponseError(
          this.shownName,
          "GET /v2/ (is it a registry?)",
          res.status,
          undefined,
        );
      }
    })().finally(() => {
      this.pinging = undefined;
    });
    await this.pinging;
  }

  /** The `Authorization` header value for requests needing `scopes`, or undefined for none. */
  async authorization(scopes: string[]): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === "basic") {
      const credentials = await this.loadCredentials();
      if (!credentials?.username) return undefined;
      return basicHeader(credentials.username, credentials.password ?? "");
    }
    if (challenge.scheme !== "bearer") return undefined;
    const key = [...new Set(scopes)].sort().join(" ");
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    let fetching = this.pending.get(key);
    if (!fetching) {
      fetching = this.fetchToken(challenge, scopes).finally(() => this.pending.delete(key));
      this.pending.set(key, fetching);
    }
    return `Bearer ${await fetching}`;
  }

  /**
   * A 401 arrived for a request that carried `scopes`: takes the new challenge (it may name a
   * wider scope), drops the token used, and says whether asking again can help.
   */
  unauthorized(res: HttpResponse, scopes: string[]): { retry: boolean; scopes: string[]; detail: string } {
    const challenge = pickChallenge(parseChallenges(res.headers["www-authenticate"]));
    const hadAuth = this.challenge !== null && this.challenge !== undefined;
    if (challenge) this.challenge = challenge;
    this.tokens.delete([...new Set(scopes)].sort().join(" "));
    const wanted = challenge?.parameters.scope;
    const more = wanted !== undefined && !scopes.includes(wanted) ? [wanted, ...scopes] : scopes;
    const detail = challenge?.parameters.error_description ?? challenge?.parameters.error ?? "";
    return { retry: !hadAuth || more !== scopes || challenge?.scheme === "bearer", scopes: more, detail };
  }

  /** After a final 401: was no login saved, or (Basic) was the saved one refused? */
  async refusedLogin(): Promise<RefusedLogin | undefined> {
    const credentials = await this.loadCredentials();
    if (!credentials?.username && !credentials?.identityToken) return { saved: false };
    // A Bearer registry's 401 after the token server accepted the login means missing rights.
    return this.challenge?.scheme === "basic"
      ? { saved: true, username: credentials.username ?? "" }
      : undefined;
  }

  /**
   * Checks credentials the way `docker login` does: a token for the service with no scope, or
   * `/v2/` with Basic; throws UnauthorizedError when refused.
   */
  async verify(send: (url: URL, authorization: string | undefined) => Promise<HttpResponse>): Promise<void> {
    await this.ping((url) => send(url, undefined));
    const header = await this.authorization([]);
    const res = await send(endpointUrl(this.endpoint, "/v2/"), header);
    discard(res);
    if (res.status === 401 || res.status === 403) {
      const detail = pickChallenge(parseChallenges(res.headers["www-authenticate"]))?.parameters.error ?? "";
      throw new UnauthorizedError(this.shownName, detail || "credentials refused");
    }
    if (res.status < 200 || res.status >= 300) {
      throw new RegistryResponseError(this.shownName, "GET /v2/", res.status, undefined);
    }
  }

  private async fetchToken(challenge: Challenge, scopes: string[]): Promise<string> {
    const realm = this.realmUrl(challenge);
    const service = challenge.parameters.service;
    const credentials = await this.loadCredentials();
    const identityToken = this.refreshToken ?? credentials?.identityToken;
    let res: HttpResponse;
    if (identityToken) {
      res = await this.postForm(realm, service, scopes, {
        grant_type: "refresh_token",
        refresh_token: identityToken,
      });
      if (res.status === 404) {
        discard(res);
        res = await this.getToken(realm, service, scopes, undefined);
      }
    } else {
      res = await this.getToken(realm, service, scopes, credentials);
      if ((res.status === 404 || res.status === 405) && credentials?.username) {
        discard(res);
        res = await this.postForm(realm, service, scopes, {
          grant_type: "password",
          username: credentials.username,
          password: credentials.password ?? "",
          access_type: "offline",
        });
      }
    }
    const body = await readBody(res, 1024 * 1024);
    if (res.status === 401 || res.status === 403) {
      const why = credentials
        ? "the token server refused the credentials"
        : "no credentials, and anonymous access is refused";
      const login = credentials?.username
        ? { saved: true as const, username: credentials.username }
        : credentials
          ? undefined
          : { saved: false as const };
      throw new UnauthorizedError(this.shownName, why, login);
    }
    if (res.status !== 200) {
      throw new RegistryResponseError(
        this.shownName,
        `the token request to ${realm.origin}`,
        res.status,
        undefined,
      );
    }
    let parsed: TokenResponse;
    try {
      parsed = JSON.parse(body.toString("utf8")) as TokenResponse;
    } catch {
      throw new RegistryResponseError(
        this.shownName,
        `the token request (not JSON) to ${realm.origin}`,
        200,
        undefined,
      );
    }
    const token = parsed.token || parsed.access_token;
    if (!token) {
      throw new RegistryResponseError(
        this.shownName,
        `the token request (no token) to ${realm.origin}`,
        200,
        undefined,
      );
    }
    if (parsed.refresh_token) this.refreshToken = parsed.refresh_token;
    const seconds = parsed.expires_in && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TOKEN_SECONDS;
    const key = [...new Set(scopes)].sort().join(" ");
    this.tokens.set(key, { token, expiresAt: Date.now() + seconds * 1000 - EXPIRY_MARGIN_MS });
    return token;
  }

  private realmUrl(challenge: Challenge): URL {
    const realm = challenge.parameters.realm;
    let url: URL;
    try {
      url = new URL(realm ?? "");
    } catch {
      throw new RegistryResponseError(
        this.shownName,
        `the challenge (realm ${JSON.stringify(realm)} is not a URL)`,
        401,
        undefined,
      );
    }
    // Credentials never travel in clear to a token server of a TLS registry, unless it is this machine.
    const plainAllowed = this.endpoint.scheme === "http" || isLoopbackHost(url.host);
    if (url.protocol !== "https:" && !(url.protocol === "http:" && plainAllowed)) {
      throw new RegistryResponseError(
        this.shownName,
        `the challenge (realm ${realm} must be https)`,
        401,
        undefined,
      );
    }
    return url;
  }

  private async getToken(
    realm: URL,
    service: string | undefined,
    scopes: string[],
    credentials: Credentials | undefined,
  ): Promise<HttpResponse> {
    const url = new URL(realm);
    if (service) url.searchParams.set("service", service);
    for (const scope of scopes) url.searchParams.append("scope", scope);
    const headers: Record<string, string> = {};
    if (credentials?.username)
      headers.authorization = basicHeader(credentials.username, credentials.password ?? "");
    return await this.transport.send(this.endpoint, { method: "GET", url, headers, ...this.signalOption() });
  }

  private async postForm(
    realm: URL,
    service: string | undefined,
    scopes: string[],
    grant: Record<string, string>,
  ): Promise<HttpResponse> {
    const form = new URLSearchParams({ ...grant, client_id: CLIENT_ID });
    if (service) form.set("service", service);
    if (scopes.length > 0) form.set("scope", scopes.join(" "));
    const body = Buffer.from(form.toString());
    return await this.transport.send(this.endpoint, {
      method: "POST",
      url: realm,
      headers: { "content-type": "application/x-www-form-urlencoded", "content-length": String(body.length) },
      body,
      ...this.signalOption(),
    });
  }

  private signalOption(): { signal?: AbortSignal } {
    return this.signal ? { signal: this.signal } : {};
  }
}

/** Bearer before Basic when a registry offers both, as Docker prefers. */
function pickChallenge(challenges: Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === "bearer") ?? challenges.find((c) => c.scheme === "basic");
}

function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
}
