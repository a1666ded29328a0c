import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../../build/config.js";
import { parseChallenges } from "../../../oci/registry/challenge.js";
import { isLoopbackHost, pullEndpoints, registryEndpoint } from "../../../oci/registry/index.js";
import { parseRetryAfter } from "../../../oci/registry/retry.js";
import { openStore } from "../../../oci/store/index.js";
import { type FaultyProxy, startFaultyProxy } from "../../helpers/faulty-proxy.js";
import { freePort, type RunningRegistry, startRegistry } from "../../helpers/registry.js";
import { isolatedEnv, makeImage, tbuildAsync } from "./fixtures.js";

describe("TLS registries", () => {
  let registry: RunningRegistry & { ca?: string };
  let name: string;
  beforeAll(async () => {
    registry = await startRegistry({ tls: true });
    name = `${registry.host}/secure/app:1`;
  });
  afterAll(async () => {
    await registry?.stop();
  });

  // 127.0.0.1 speaks plain HTTP by default; `http = false` insists on TLS, as for a remote registry.
  const tlsConfig = (host: string, extra = "") => `[registry."${host}"]\nhttp = false\n${extra}`;

  it("names the registry and the config.toml keys to set when the certificate is not trusted", async () => {
    const env = isolatedEnv(tlsConfig(registry.host));
    await makeImage(await openStore(env.TBUILD_ROOT!), name);
    const push = await tbuildAsync(["push", name], { env });
    expect(push.status).toBe(1);
    expect(push.stderr).toContain(`TLS connection to registry ${registry.host}`);
    expect(push.stderr).toContain(
      `in ${env.TBUILD_CONFIG}: [registry."${registry.host}"] ca = ["/path/to/ca.pem"]`,
    );
    expect(push.stderr).toContain("insecure = true");
    expect(push.stderr).not.toMatch(/\n\s+at /);
  });

  it("trusts the CAs config.toml names, and skips verification only where insecure = true", async () => {
    const env = isolatedEnv(tlsConfig(registry.host, `ca = ["${registry.ca}"]\n`));
    await makeImage(await openStore(env.TBUILD_ROOT!), name);
    const push = await tbuildAsync(["push", name], { env });
    expect(push.status, push.stderr).toBe(0);

    const insecure = isolatedEnv(tlsConfig(registry.host, "insecure = true\n"));
    const pull = await tbuildAsync(["pull", name], { env: insecure });
    expect(pull.status, pull.stderr).toBe(0);
  });

  it("says so when a registry marked http = true speaks TLS", async () => {
    const env = isolatedEnv(tlsConfig(`127.0.0.1:${registry.port}`).replace("http = false", "http = true"));
    const pull = await tbuildAsync(["pull", name], { env });
    expect(pull.status).toBe(1);
    expect(pull.stderr).toContain(`registry ${registry.host} answered 400`);
    expect(pull.stderr).toContain(`it speaks TLS: set [registry."${registry.host}"] http = false`);
  });
});

describe("mirrors", () => {
  let upstream: RunningRegistry;
  let empty: RunningRegistry;
  let registryProxy: FaultyProxy;
  let mirrorProxy: FaultyProxy;
  let emptyProxy: FaultyProxy;
  let name: string;

  beforeAll(async () => {
    [upstream, empty] = await Promise.all([startRegistry(), startRegistry()]);
    [registryProxy, mirrorProxy, emptyProxy] = await Promise.all([
      startFaultyProxy(upstream),
      startFaultyProxy(upstream),
      startFaultyProxy(empty),
    ]);
    name = `${registryProxy.host}/mirrored/app:1`;
    const env = isolatedEnv();
    await makeImage(await openStore(env.TBUILD_ROOT!), name);
    const push = await tbuildAsync(["push", name], { env });
    if (push.status !== 0) throw new Error(push.stderr);
  });
  afterAll(async () => {
    await Promise.all([registryProxy?.stop(), mirrorProxy?.stop(), emptyProxy?.stop()]);
    await Promise.all([upstream?.stop(), empty?.stop()]);
  });

  const reset = () => {
    for (const p of [registryProxy, mirrorProxy, emptyProxy]) p.requests.length = 0;
  };

  it("tries the mirrors in order, a dead one first, and does not ask the registry when a mirror has the image", async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const env = isolatedEnv(
      `[registry."${registryProxy.host}"]\nmirrors = ["${dead}", "${mirrorProxy.host}"]\n`,
    );
    reset();
    const pull = await tbuildAsync(["pull", name], { env });
    expect(pull.status, pull.stderr).toBe(0);
    expect(pull.stderr).toContain(`mirror ${dead} failed (connection refused by ${dead}`);
    expect(pull.stderr).toContain(`from ${mirrorProxy.host}`);
    expect(mirrorProxy.requests.some((r) => r.url.includes("/manifests/1"))).toBe(true);
    expect(registryProxy.requests).toEqual([]);
  });

  it("falls back to the registry itself when no mirror has the image", async () => {
    const env = isolatedEnv(`[registry."${registryProxy.host}"]\nmirrors = ["http://${emptyProxy.host}"]\n`);
    reset();
    const pull = await tbuildAsync(["pull", name], { env });
    expect(pull.status, pull.stderr).toBe(0);
    expect(emptyProxy.requests.some((r) => r.url.includes("/manifests/1") && r.status === 404)).toBe(true);
    expect(registryProxy.requests.some((r) => r.url.includes("/manifests/1") && r.status === 200)).toBe(true);
  });

  it("pushes to the registry itself, never to a mirror", async () => {
    const env = isolatedEnv(`[registry."${registryProxy.host}"]\nmirrors = ["${mirrorProxy.host}"]\n`);
    await makeImage(await openStore(env.TBUILD_ROOT!), `${registryProxy.host}/mirrored/app:2`);
    reset();
    const push = await tbuildAsync(["push", `${registryProxy.host}/mirrored/app:2`], { env });
    expect(push.status, push.stderr).toBe(0);
    expect(mirrorProxy.requests).toEqual([]);
  });
});

describe("config.toml", () => {
  it("reads registries into plain data, CA paths relative to the file, other tables kept", () => {
    const config = parseConfig(
      `[registry."docker.io"]\nmirrors = ["mirror.example:5000"]\n[registry."mirror.example:5000"]\nhttp = true\nca = ["certs/ca.pem"]\ninsecure = false\n[build]\njobs = 4\n`,
      "/etc/tbuild/config.toml",
    );
    expect(config.registries).toEqual({
      "docker.io": { mirrors: ["mirror.example:5000"] },
      "mirror.example:5000": { http: true, ca: ["/etc/tbuild/certs/ca.pem"], insecure: false },
    });
    expect(config.other).toEqual({ build: { jobs: 4 } });
  });

  it("names the file and the key that is wrong", () => {
    expect(() => parseConfig(`[registry."a:5000"]\nhttps = true\n`, "/c.toml")).toThrow(
      '/c.toml: unknown key registry."a:5000".https (known: mirrors, http, insecure, ca, timeout)',
    );
    expect(() => parseConfig(`[registry."a:5000"]\nmirrors = "b:5000"\n`, "/c.toml")).toThrow(
      '/c.toml: registry."a:5000".mirrors must be an array of non-empty strings',
    );
    expect(() => parseConfig(`[registry."a:5000"]\ninsecure = "yes"\n`, "/c.toml")).toThrow(
      '/c.toml: registry."a:5000".insecure must be true or false',
    );
    expect(() => parseConfig(`[registry\nx = 1\n`, "/c.toml")).toThrow(/^\/c\.toml: invalid TOML at line 1/);
  });

  it("is reported by a command, without a stack trace", async () => {
    const result = await tbuildAsync(["pull", "127.0.0.1:1/x:1"], {
      env: isolatedEnv("[registry]\nbad = 1\n"),
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('config.toml: registry."bad" must be a table');
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });
});

describe("endpoints, challenges and Retry-After", () => {
  it("speaks plain HTTP to loopback only, and reaches Docker Hub through registry-1.docker.io", () => {
    expect(
      ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"].map(isLoopbackHost),
    ).toEqual([true, true, true, true, true]);
    expect(["example.com:5000", "10.0.0.1:5000", "127.example.com"].map(isLoopbackHost)).toEqual([
      false,
      false,
      false,
    ]);
    expect(registryEndpoint("docker.io")).toMatchObject({ host: "registry-1.docker.io", scheme: "https" });
    expect(registryEndpoint("localhost:5000")).toMatchObject({ scheme: "http" });
    expect(registryEndpoint("reg.local", { "reg.local": { http: true } })).toMatchObject({ scheme: "http" });
    const endpoints = pullEndpoints("docker.io", {
      "docker.io": { mirrors: ["mirror.example:5000", "https://other.example"] },
      "mirror.example:5000": { http: true },
    });
    expect(endpoints.map((e) => `${e.scheme}://${e.host} ${e.mirror}`)).toEqual([
      "http://mirror.example:5000 true",
      "https://other.example true",
      "https://registry-1.docker.io false",
    ]);
  });

  it("parses WWW-Authenticate challenges with quoted, escaped and several parameters", () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push", Basic realm="say \\"hi\\""',
      ),
    ).toEqual([
      {
        scheme: "bearer",
        parameters: {
          realm: "https://auth.example/token",
          service: "registry.example",
          scope: "repository:a/b:pull,push",
        },
      },
      { scheme: "basic", parameters: { realm: 'say "hi"' } },
    ]);
    expect(parseChallenges('Bearer realm="r",error="insufficient_scope"')[0]?.parameters.error).toBe(
      "insufficient_scope",
    );
  });

  it("reads Retry-After as seconds or as a date", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6_000);
    expect(parseRetryAfter("soon")).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });
});
