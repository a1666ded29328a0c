/**
 * Real registries for tests: Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1 and a
 * free port, storing in a temp dir; plain, with htpasswd Basic auth, with TLS, or with token auth
 * served by a small token server of our own (RS256 JWTs carrying their certificate in `x5c`, which
 * the registry verifies against `auth.token.rootcertbundle`). Each start returns a `stop()`.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createPrivateKey, randomBytes, sign, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

export interface RunningRegistry {
  /** `127.0.0.1:PORT`, the registry name to use in references. */
  host: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

export interface TokenServerOptions {
  users: Record<string, string>;
  /** Anonymous token requests get `pull` on every repository (else no access at all). */
  anonymousPull?: boolean;
  /** Answer 404 to GET, as token servers that only speak the OAuth2 POST form do. */
  postOnly?: boolean;
}

export interface TokenRequest {
  method: string;
  grantType?: string;
  user?: string;
  scopes: string[];
}

export interface RunningTokenRegistry extends RunningRegistry {
  /** Every token request, in order. */
  tokenRequests: TokenRequest[];
}

export interface RegistryOptions {
  /** htpasswd users: Basic auth required for everything. */
  htpasswd?: Record<string, string>;
  /** Serve HTTPS with a generated certificate for 127.0.0.1; its CA file is `tls.ca`. */
  tls?: boolean;
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A self-signed certificate and key (PEM files) for `cn`, valid for 127.0.0.1. */
export function makeCertificate(dir: string, cn: string): { cert: string; key: string } {
  const cert = path.join(dir, `${cn}.crt`);
  const key = path.join(dir, `${cn}.key`);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      `/CN=${cn}`,
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ],
    { stdio: "ignore" },
  );
  return { cert, key };
}

function registryConfig(dir: string, port: number, auth: string, tls: string): string {
  return `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${path.join(dir, "data")}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
  secret: ${randomBytes(16).toString("hex")}
${tls}${auth}`;
}

async function launch(dir: string, port: number, config: string, scheme: "http" | "https", ca?: string) {
  const file = path.join(dir, "config.yml");
  writeFileSync(file, config);
  const child = spawn("docker-registry", ["serve", file], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  await waitUntilAnswering(child, port, scheme, ca, () => stderr);
  return child;
}

async function waitUntilAnswering(
  child: ChildProcess,
  port: number,
  scheme: "http" | "https",
  ca: string | undefined,
  stderr: () => string,
): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const get = scheme === "https" ? https.get : http.get;
      const req = get(
        {
          host: "127.0.0.1",
          port,
          path: "/v2/",
          ...(ca ? { ca: readFileSync(ca) } : {}),
        } as http.RequestOptions,
        (res) => {
          res.resume();
          resolve(true);
        },
      );
      req.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGKILL");
  throw new Error(`docker-registry did not answer on port ${port}: ${stderr()}`);
}

function stopper(child: ChildProcess, dir: string, extra?: () => Promise<void>): () => Promise<void> {
  return async () => {
    await extra?.();
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
}

/** A registry without auth (or with htpasswd users, or TLS). */
export async function startRegistry(
  options: RegistryOptions = {},
): Promise<RunningRegistry & { ca?: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), "tbuild-registry-"));
  const port = await freePort();
  let auth = "";
  if (options.htpasswd) {
    const lines = Object.entries(options.htpasswd).map(([user, password]) =>
      execFileSync("htpasswd", ["-Bbn", user, password], { encoding: "utf8" }).trim(),
    );
    const file = path.join(dir, "htpasswd");
    writeFileSync(file, `${lines.join("\n")}\n`);
    auth = `auth:\n  htpasswd:\n    realm: tbuild-test\n    path: ${file}\n`;
  }
  let tls = "";
  let ca: string | undefined;
  if (options.tls) {
    const { cert, key } = makeCertificate(dir, "registry");
    tls = `  tls:\n    certificate: ${cert}\n    key: ${key}\n`;
    ca = cert;
  }
  const child = await launch(
    dir,
    port,
    registryConfig(dir, port, auth, tls),
    options.tls ? "https" : "http",
    ca,
  );
  return { host: `127.0.0.1:${port}`, port, dir, stop: stopper(child, dir), ...(ca ? { ca } : {}) };
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

/** A registry that wants Bearer tokens from our token server. */
export async function startTokenRegistry(options: TokenServerOptions): Promise<RunningTokenRegistry> {
  const dir = mkdtempSync(path.join(tmpdir(), "tbuild-registry-"));
  const { cert, key } = makeCertificate(dir, "token-signer");
  const certDer = new X509Certificate(readFileSync(cert)).raw;
  const privateKey = createPrivateKey(readFileSync(key));
  const service = "tbuild-test-registry";
  const issuer = "tbuild-test-issuer";
  const tokenRequests: TokenRequest[] = [];
  const refreshTokens = new Map<string, string>();

  const issue = (user: string | undefined, scopes: string[]): string => {
    const access = scopes.flatMap((scope) => {
      const [type, name, actions] = scope.split(":");
      if (type !== "repository" || !name || !actions) return [];
      const granted = user !== undefined ? actions.split(",") : options.anonymousPull ? ["pull"] : [];
      const allowed = actions.split(",").filter((a) => granted.includes(a));
      return allowed.length > 0 ? [{ type, name, actions: allowed }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: "JWT", alg: "RS256", x5c: [certDer.toString("base64")] };
    const claims = {
      iss: issuer,
      sub: user ?? "",
      aud: service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString("hex"),
      access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign("sha256", Buffer.from(signingInput), privateKey);
    return `${signingInput}.${base64url(signature)}`;
  };

  const tokenServer = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://token");
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (url.pathname !== "/token") return reply(404, {});
    if (req.method === "GET") {
      const scopes = url.searchParams.getAll("scope");
      let user: string | undefined;
      const authorization = req.headers.authorization;
      if (authorization?.startsWith("Basic ")) {
        const [name, password] = Buffer.from(authorization.slice(6), "base64")
          .toString("utf8")
          .split(/:(.*)/s);
        user = name;
        tokenRequests.push({ method: "GET", user: name, scopes });
        if (options.postOnly) return reply(404, {});
        if (!name || options.users[name] !== password) return reply(401, { details: "bad credentials" });
      } else {
        tokenRequests.push({ method: "GET", scopes });
        if (options.postOnly) return reply(404, {});
      }
      return reply(200, { token: issue(user, scopes), expires_in: 300 });
    }
    if (req.method === "POST") {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (d: string) => {
        body += d;
      });
      req.on("end", () => {
        const form = new URLSearchParams(body);
        const scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
        const grantType = form.get("grant_type") ?? "";
        let user: string | undefined;
        if (grantType === "password") {
          user = form.get("username") ?? "";
          tokenRequests.push({ method: "POST", grantType, user, scopes });
          if (options.users[user] !== form.get("password")) return reply(401, { details: "bad credentials" });
        } else if (grantType === "refresh_token") {
          user = refreshTokens.get(form.get("refresh_token") ?? "");
          tokenRequests.push({ method: "POST", grantType, ...(user ? { user } : {}), scopes });
          if (user === undefined) return reply(401, { details: "bad refresh token" });
        } else {
          return reply(400, { error: "unsupported_grant_type" });
        }
        const refresh = randomBytes(12).toString("hex");
        refreshTokens.set(refresh, user);
        reply(200, { access_token: issue(user, scopes), expires_in: 300, refresh_token: refresh });
      });
      return;
    }
    reply(405, {});
  });
  await new Promise<void>((resolve) => tokenServer.listen(0, "127.0.0.1", resolve));
  const tokenPort = (tokenServer.address() as AddressInfo).port;

  const port = await freePort();
  const auth = `auth:
  token:
    realm: http://127.0.0.1:${tokenPort}/token
    service: ${service}
    issuer: ${issuer}
    rootcertbundle: ${cert}
`;
  const child = await launch(dir, port, registryConfig(dir, port, auth, ""), "http");
  const closeTokenServer = () =>
    new Promise<void>((resolve) => {
      tokenServer.closeAllConnections();
      tokenServer.close(() => resolve());
    });
  return {
    host: `127.0.0.1:${port}`,
    port,
    dir,
    tokenRequests,
    stop: stopper(child, dir, closeTokenServer),
  };
}
