import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStore } from "../../../oci/store/index.js";
import {
  type RunningRegistry,
  type RunningTokenRegistry,
  startRegistry,
  startTokenRegistry,
} from "../../helpers/registry.js";
import { tempDirs } from "../../helpers/temp.js";
import { isolatedEnv, makeImage, skopeo, tbuildAsync } from "./fixtures.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

const readJson = (file: string) => JSON.parse(readFileSync(file, "utf8"));
const dockerConfig = (env: NodeJS.ProcessEnv) => path.join(env.DOCKER_CONFIG!, "config.json");

describe("Basic auth (htpasswd)", () => {
  let registry: RunningRegistry;
  beforeAll(async () => {
    registry = await startRegistry({ htpasswd: { alice: "wonderland" } });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it("refuses anonymous access with a message naming the registry and tbuild login", async () => {
    const result = await tbuildAsync(["pull", `${registry.host}/private:1`], { env: isolatedEnv() });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`registry ${registry.host} refused access`);
    expect(result.stderr).toContain(`tbuild login ${registry.host}`);
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it("login checks the password, writes docker's config.json that skopeo reads, and logout forgets it", async () => {
    const env = isolatedEnv();
    const wrong = await tbuildAsync(["login", "-u", "alice", "--password-stdin", registry.host], {
      env,
      input: "guess\n",
    });
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toContain(`login to ${registry.host} failed`);
    expect(existsSync(dockerConfig(env))).toBe(false);

    const login = await tbuildAsync(
      ["login", "-u", "alice", "--password-stdin", `https://${registry.host}`],
      {
        env,
        input: "wonderland\n",
      },
    );
    expect(login.status, login.stderr).toBe(0);
    expect(login.stdout).toContain("Login Succeeded");
    const written = readJson(dockerConfig(env));
    expect(written.auths[registry.host].auth).toBe(Buffer.from("alice:wonderland").toString("base64"));

    await makeImage(await openStore(env.TBUILD_ROOT!), `${registry.host}/private:1`);
    const push = await tbuildAsync(["push", `${registry.host}/private:1`], { env });
    expect(push.status, push.stderr).toBe(0);
    const pull = await tbuildAsync(["pull", `${registry.host}/private:1`], {
      env: { ...isolatedEnv(), DOCKER_CONFIG: env.DOCKER_CONFIG },
    });
    expect(pull.status, pull.stderr).toBe(0);

    const inspect = skopeo([
      "inspect",
      "--tls-verify=false",
      "--authfile",
      dockerConfig(env),
      `docker://${registry.host}/private:1`,
    ]);
    expect(inspect.status, inspect.stderr).toBe(0);

    const logout = await tbuildAsync(["logout", registry.host], { env });
    expect(logout.stdout).toContain(`Removed login credentials for ${registry.host}`);
    expect(readJson(dockerConfig(env)).auths[registry.host]).toBeUndefined();
    const again = await tbuildAsync(["logout", registry.host], { env });
    expect(again.stdout).toContain(`Not logged in to ${registry.host}`);
    const refused = await tbuildAsync(["pull", `${registry.host}/private:1`], {
      env: { ...env, TBUILD_ROOT: isolatedEnv().TBUILD_ROOT },
    });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("tbuild login");
  });

  it("keeps other keys of config.json and uses a credsStore helper when one is configured", async () => {
    const env = isolatedEnv();
    const helperDir = tempDir("helper");
    const secrets = path.join(helperDir, "secrets");
    mkdirSync(secrets);
    // A credential helper speaking docker's protocol, keeping each server's JSON in a file.
    const helper = path.join(helperDir, "docker-credential-testing");
    writeFileSync(
      helper,
      `#!/bin/sh
set -e
dir=${secrets}
case "$1" in
  store) input=$(cat); server=$(printf '%s' "$input" | sed 's/.*"ServerURL":"\\([^"]*\\)".*/\\1/'); printf '%s' "$input" > "$dir/$(printf '%s' "$server" | tr '/:' '__')" ;;
  get) read -r server || true; f="$dir/$(printf '%s' "$server" | tr '/:' '__')"; if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) read -r server || true; f="$dir/$(printf '%s' "$server" | tr '/:' '__')"; if [ -f "$f" ]; then rm "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
`,
    );
    chmodSync(helper, 0o755);
    mkdirSync(env.DOCKER_CONFIG!, { recursive: true });
    writeFileSync(dockerConfig(env), JSON.stringify({ credsStore: "testing", psFormat: "table {{.ID}}" }));
    const helperEnv = { ...env, PATH: `${helperDir}:${process.env.PATH}` };

    const login = await tbuildAsync(["login", "-u", "alice", "--password-stdin", registry.host], {
      env: helperEnv,
      input: "wonderland",
    });
    expect(login.status, login.stderr).toBe(0);
    const written = readJson(dockerConfig(env));
    expect(written.psFormat).toBe("table {{.ID}}");
    expect(written.auths[registry.host]).toEqual({});
    const kept = readJson(path.join(secrets, registry.host.replace(":", "_")));
    expect(kept).toEqual({ ServerURL: registry.host, Username: "alice", Secret: "wonderland" });

    await makeImage(await openStore(env.TBUILD_ROOT!), `${registry.host}/helped:1`);
    const push = await tbuildAsync(["push", `${registry.host}/helped:1`], { env: helperEnv });
    expect(push.status, push.stderr).toBe(0);

    const logout = await tbuildAsync(["logout", registry.host], { env: helperEnv });
    expect(logout.status).toBe(0);
    expect(existsSync(path.join(secrets, registry.host.replace(":", "_")))).toBe(false);
  });

  it("reads credHelpers for one registry, and says when its helper is missing", async () => {
    const env = isolatedEnv();
    mkdirSync(env.DOCKER_CONFIG!, { recursive: true });
    writeFileSync(dockerConfig(env), JSON.stringify({ credHelpers: { [registry.host]: "absent" } }));
    const result = await tbuildAsync(["pull", `${registry.host}/private:1`], { env });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("docker-credential-absent");
    expect(result.stderr).toContain("not installed");
  });
});

describe("Bearer token auth", () => {
  let registry: RunningTokenRegistry;
  beforeAll(async () => {
    registry = await startTokenRegistry({ users: { bob: "builder" } });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it("refuses anonymous pulls, and with credentials pushes and pulls reusing one token per scope", async () => {
    const anonymous = await tbuildAsync(["pull", `${registry.host}/team/app:1`], { env: isolatedEnv() });
    expect(anonymous.status).toBe(1);
    expect(anonymous.stderr).toContain(`registry ${registry.host} refused access`);
    expect(anonymous.stderr).toContain(`tbuild login ${registry.host}`);

    const env = isolatedEnv();
    const login = await tbuildAsync(["login", "-u", "bob", "--password-stdin", registry.host], {
      env,
      input: "builder\n",
    });
    expect(login.status, login.stderr).toBe(0);
    expect(registry.tokenRequests.at(-1)).toMatchObject({ method: "GET", user: "bob", scopes: [] });

    await makeImage(await openStore(env.TBUILD_ROOT!), `${registry.host}/team/app:1`, { layers: 4 });
    registry.tokenRequests.length = 0;
    const push = await tbuildAsync(["push", `${registry.host}/team/app:1`], { env });
    expect(push.status, push.stderr).toBe(0);
    expect(registry.tokenRequests).toEqual([
      { method: "GET", user: "bob", scopes: ["repository:team/app:pull,push"] },
    ]);

    registry.tokenRequests.length = 0;
    const pull = await tbuildAsync(["pull", `${registry.host}/team/app:1`], {
      env: { ...isolatedEnv(), DOCKER_CONFIG: env.DOCKER_CONFIG },
    });
    expect(pull.status, pull.stderr).toBe(0);
    // Six requests (manifest, config, four layers), one token.
    expect(registry.tokenRequests).toEqual([
      { method: "GET", user: "bob", scopes: ["repository:team/app:pull"] },
    ]);
  });

  it("rejects a wrong password at login and stores nothing", async () => {
    const env = isolatedEnv();
    const login = await tbuildAsync(["login", "-u", "bob", "--password-stdin", registry.host], {
      env,
      input: "wrong\n",
    });
    expect(login.status).toBe(1);
    expect(login.stderr).toContain(`login to ${registry.host} failed`);
    expect(existsSync(dockerConfig(env))).toBe(false);
  });
});

describe("Bearer tokens from an OAuth2-only token server, and anonymous pulls where allowed", () => {
  let registry: RunningTokenRegistry;
  beforeAll(async () => {
    registry = await startTokenRegistry({ users: { carol: "s3cret" }, anonymousPull: true, postOnly: true });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it("falls back to the OAuth2 POST form when the token server refuses GET", async () => {
    const env = isolatedEnv();
    const login = await tbuildAsync(["login", "-u", "carol", "--password-stdin", registry.host], {
      env,
      input: "s3cret",
    });
    expect(login.status, login.stderr).toBe(0);
    await makeImage(await openStore(env.TBUILD_ROOT!), `${registry.host}/public/tool:2`);
    registry.tokenRequests.length = 0;
    const push = await tbuildAsync(["push", `${registry.host}/public/tool:2`], { env });
    expect(push.status, push.stderr).toBe(0);
    expect(registry.tokenRequests.map((r) => `${r.method} ${r.grantType ?? ""}`.trim())).toEqual([
      "GET",
      "POST password",
    ]);

    // Anonymous pull: the GET is refused, and anonymous has no password to POST.
    const anonymous = await tbuildAsync(["pull", `${registry.host}/public/tool:2`], { env: isolatedEnv() });
    expect(anonymous.status).toBe(1);
    expect(anonymous.stderr).toContain(`registry ${registry.host} answered 404 to the token request`);
  });
});

describe("Bearer tokens, anonymous pulls allowed", () => {
  let registry: RunningTokenRegistry;
  beforeAll(async () => {
    registry = await startTokenRegistry({ users: { dave: "pw" }, anonymousPull: true });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it("pulls anonymously, and refuses an anonymous push naming the registry", async () => {
    const env = isolatedEnv();
    mkdirSync(env.DOCKER_CONFIG!, { recursive: true });
    writeFileSync(
      dockerConfig(env),
      JSON.stringify({
        auths: { [`http://${registry.host}/v1/`]: { auth: Buffer.from("dave:pw").toString("base64") } },
      }),
    );
    await makeImage(await openStore(env.TBUILD_ROOT!), `${registry.host}/open/app:1`);
    const push = await tbuildAsync(["push", `${registry.host}/open/app:1`], { env });
    expect(push.status, push.stderr).toBe(0);

    const pull = await tbuildAsync(["pull", `${registry.host}/open/app:1`], { env: isolatedEnv() });
    expect(pull.status, pull.stderr).toBe(0);

    const anonymousEnv = isolatedEnv();
    await makeImage(await openStore(anonymousEnv.TBUILD_ROOT!), `${registry.host}/open/app:2`);
    const refused = await tbuildAsync(["push", `${registry.host}/open/app:2`], { env: anonymousEnv });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`registry ${registry.host} refused access`);
    expect(refused.stderr).toContain(`tbuild login ${registry.host}`);
  });
});
