/**
 * Registry credentials where docker, podman and skopeo keep them: `$DOCKER_CONFIG/config.json`
 * (default `~/.docker/config.json`) with `auths` (base64 `user:password` in `auth`, or an
 * `identitytoken`), `credsStore` (one helper for every registry) and `credHelpers` (a helper per
 * registry), the helpers being `docker-credential-<name>` programs speaking JSON on stdin/stdout.
 */

import { spawn } from "node:child_process";
import { mkdir, readFile, realpath } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { writeFileAtomic } from "../atomic-file.js";
import { CredentialsError } from "./errors.js";
import { DOCKER_HUB } from "./hosts.js";

export interface Credentials {
  username?: string;
  password?: string;
  /** An OAuth2 refresh token, exchanged at the token server (`grant_type=refresh_token`). */
  identityToken?: string;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
  [key: string]: unknown;
}

interface DockerConfigFile {
  auths?: Record<string, AuthEntry>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}

const HELPER_TIMEOUT_MS = 60_000;

/** The key docker uses for Docker Hub in config.json and with helpers. */
const DOCKER_HUB_SERVER = "https://index.docker.io/v1/";

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG || path.join(env.HOME || homedir(), ".docker");
  return path.join(dir, "config.json");
}

/** The server address written for a registry, as `docker login` writes it. */
export function serverAddress(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_SERVER : registry;
}

/** `https://host/v1/`, `http://host`, `host` → `host`, as docker's ConvertToHostname compares keys. */
function hostOf(key: string): string {
  const withoutScheme = key.replace(/^https?:\/\//, "");
  const host = withoutScheme.split("/")[0]!;
  return host === "index.docker.io" || host === "registry-1.docker.io" ? DOCKER_HUB : host;
}

async function readConfig(file: string): Promise<DockerConfigFile> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw new CredentialsError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`, {
      cause: err,
    });
  }
  if (text.trim() === "") return {};
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
      throw new Error("not an object");
    return parsed as DockerConfigFile;
  } catch (err) {
    throw new CredentialsError(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/** Writes the file atomically (temp + rename), private to the user, through a symlink if it is one. */
async function writeConfig(file: string, config: DockerConfigFile): Promise<void> {
  let target = file;
  try {
    target = await realpath(file);
  } catch {
    // A new file: written where asked.
  }
  await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
  try {
    await writeFileAtomic(target, `${JSON.stringify(config, null, "\t")}\n`, { mode: 0o600 });
  } catch (err) {
    throw new CredentialsError(`cannot write ${target}: ${(err as NodeJS.ErrnoException).code ?? err}`, {
      cause: err,
    });
  }
}

function helperFor(config: DockerConfigFile, registry: string): string | undefined {
  for (const [key, helper] of Object.entries(config.credHelpers ?? {})) {
    if (hostOf(key) === registry && helper) return helper;
  }
  return config.credsStore || undefined;
}

function findAuthKey(config: DockerConfigFile, registry: string): string | undefined {
  const keys = Object.keys(config.auths ?? {});
  return keys.find((k) => k === serverAddress(registry)) ?? keys.find((k) => hostOf(k) === registry);
}

function decodeEntry(entry: AuthEntry, file: string, key: string): Credentials | undefined {
  const credentials: Credentials = {};
  if (typeof entry.auth === "string" && entry.auth !== "") {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0)
      throw new CredentialsError(`${file}: auths."${key}".auth is not base64 of "user:password"`);
    credentials.username = decoded.slice(0, colon);
    credentials.password = decoded.slice(colon + 1);
  } else if (typeof entry.username === "string" && typeof entry.password === "string") {
    credentials.username = entry.username;
    credentials.password = entry.password;
  }
  if (typeof entry.identitytoken === "string" && entry.identitytoken !== "") {
    credentials.identityToken = entry.identitytoken;
  }
  return Object.keys(credentials).length > 0 ? credentials : undefined;
}

/** The credentials configured for `registry` (a name as in references: `docker.io`, `host:5000`), if any. */
export async function getCredentials(
  registry: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Credentials | undefined> {
  const file = dockerConfigPath(env);
  const config = await readConfig(file);
  const helper = helperFor(config, registry);
  if (helper) {
    const fromHelper = await helperGet(helper, serverAddress(registry), env);
    if (fromHelper) return fromHelper;
  }
  const key = findAuthKey(config, registry);
  return key === undefined ? undefined : decodeEntry(config.auths![key]!, file, key);
}

/**
 * Saves credentials as `docker login` does: into the registry's helper (`credHelpers`, else
 * `credsStore`) with an empty `auths` entry left as a marker, or base64 into `auths`.
 * Returns where they went, for the message.
 */
export async function storeCredentials(
  registry: string,
  credentials: Credentials,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string> {
  const file = dockerConfigPath(env);
  const config = await readConfig(file);
  const server = serverAddress(registry);
  const helper = helperFor(config, registry);
  const auths = { ...(config.auths ?? {}) };
  const oldKey = findAuthKey(config, registry);
  if (oldKey !== undefined) delete auths[oldKey];
  if (helper) {
    const username = credentials.identityToken ? "<token>" : (credentials.username ?? "");
    const secret = credentials.identityToken ?? credentials.password ?? "";
    await runHelper(
      helper,
      "store",
      JSON.stringify({ ServerURL: server, Username: username, Secret: secret }),
      env,
    );
    auths[server] = {};
    await writeConfig(file, { ...config, auths });
    return `the credential helper docker-credential-${helper}`;
  }
  const entry: AuthEntry = {};
  if (credentials.username !== undefined && credentials.password !== undefined) {
    entry.auth = Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64");
  }
  if (credentials.identityToken) entry.identitytoken = credentials.identityToken;
  auths[server] = entry;
  await writeConfig(file, { ...config, auths });
  return file;
}

/** Forgets a registry's credentials; false when there were none to forget. */
export async function eraseCredentials(
  registry: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<boolean> {
  const file = dockerConfigPath(env);
  const config = await readConfig(file);
  const helper = helperFor(config, registry);
  let erased = false;
  if (helper) erased = await helperErase(helper, serverAddress(registry), env);
  const key = findAuthKey(config, registry);
  if (key !== undefined) {
    const auths = { ...config.auths };
    delete auths[key];
    await writeConfig(file, { ...config, auths });
    erased = true;
  }
  return erased;
}

async function helperGet(
  helper: string,
  server: string,
  env: NodeJS.ProcessEnv,
): Promise<Credentials | undefined> {
  const result = await runHelper(helper, "get", server, env, true);
  if (result === undefined) return undefined;
  let parsed: { Username?: string; Secret?: string };
  try {
    parsed = JSON.parse(result) as { Username?: string; Secret?: string };
  } catch {
    throw new CredentialsError(`docker-credential-${helper} get printed something that is not JSON`);
  }
  if (!parsed.Secret) return undefined;
  // A helper holds an identity token under the user name "<token>", by docker's convention.
  if (parsed.Username === "<token>") return { identityToken: parsed.Secret };
  return { username: parsed.Username ?? "", password: parsed.Secret };
}

async function helperErase(helper: string, server: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  return (await runHelper(helper, "erase", server, env, true)) !== undefined;
}

/**
 * Runs `docker-credential-<helper> <action>` with `input` on stdin. With `notFoundIsUndefined`, the
 * helpers' "credentials not found" answer gives undefined instead of an error.
 */
function runHelper(
  helper: string,
  action: "get" | "store" | "erase",
  input: string,
  env: NodeJS.ProcessEnv,
  notFoundIsUndefined = false,
): Promise<string | undefined> {
  const program = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    const child = spawn(program, [action], { env, stdio: ["pipe", "pipe", "pipe"] });
    // A helper waiting on a locked keychain must not hang tbuild; unref'd so it never keeps tbuild alive.
    const timer = setTimeout(() => child.kill("SIGKILL"), HELPER_TIMEOUT_MS).unref();
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new CredentialsError(
          err.code === "ENOENT"
            ? `the credential helper ${program} named in ${dockerConfigPath(env)} is not installed (not found on PATH)`
            : `cannot run ${program}: ${err.message}`,
          { cause: err },
        ),
      );
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      if (code === 0) return resolve(stdout);
      const said = (stdout + stderr).trim();
      if (notFoundIsUndefined && /credentials not found/i.test(said)) return resolve(undefined);
      reject(new CredentialsError(`${program} ${action} failed (exit ${code})${said ? `: ${said}` : ""}`));
    });
    child.stdin.on("error", () => {
      // A helper that exits without reading stdin is reported by its exit status.
    });
    child.stdin.end(input);
  });
}

/**
 * The registry a user names on `login`/`logout`: `https://host:5000/v2/` → `host:5000`,
 * `index.docker.io` → `docker.io`; nothing means Docker Hub, as with docker.
 */
export function normalizeRegistryName(text: string | undefined): string {
  if (text === undefined || text.trim() === "") return DOCKER_HUB;
  return hostOf(text.trim());
}
