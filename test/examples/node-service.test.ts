/**
 * examples/node-service, built as its README says: a Node.js service on Debian's nodejs, its npm
 * dependency installed by `npm ci` in a build stage, run as a non-root user. The base image is
 * made here (no Docker Hub); `npm ci` reaches the npm registry.
 *
 * Its cache mounts travel with its build cache (`mounts=true`) through a real registry: in an empty
 * store, a `--no-cache` build seeded from that cache runs `npm ci` from the imported npm cache,
 * without fetching anything (npm's own log, kept in the mount, says what it fetched).
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot, tbuild, tbuildBin } from "../helpers/cli.js";
import { makeDockerDebianSlim } from "../helpers/debian-image.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const example = `${projectRoot}examples/node-service`;
/**
 * The host's CA bundle, given as the secret the Dockerfile documents for TLS-inspecting proxies:
 * where the npm registry is reached through one, the image's own bundle does not trust it.
 */
const HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

describe("examples/node-service", () => {
  const store = tempDir("example-node-store");
  /** Fixed times: the two builds' npm steps make the same bytes. */
  const env = { SOURCE_DATE_EPOCH: "1700000000" };
  const inStore = (args: string[], root = store) => tbuild(args, { env: { ...env, TBUILD_ROOT: root } });
  const secret = existsSync(HOST_CA_BUNDLE) ? ["--secret", `id=ca-certificates,src=${HOST_CA_BUNDLE}`] : [];
  let build: ReturnType<typeof tbuild>;
  let registry: RunningRegistry;
  let cacheRef: string;

  beforeAll(async () => {
    registry = await startRegistry();
    cacheRef = `type=registry,ref=${registry.host}/node-service:buildcache`;
    await makeDockerDebianSlim(store, "debian:bookworm-slim", tempDir("example-node-base"));
    build = inStore([
      "build",
      "--progress=plain",
      ...secret,
      "--cache-to",
      `${cacheRef},mode=max,mounts=true`,
      "-t",
      "node-service",
      example,
    ]);
    if (build.status !== 0) throw new Error(`the example did not build: ${build.stderr}`);
  }, 900_000);

  afterAll(async () => {
    await registry?.stop();
  });

  it("seeds an empty store's cache mounts from the registry: npm ci fetches nothing, and makes the same /app", async () => {
    const fresh = tempDir("example-node-fresh");
    await makeDockerDebianSlim(fresh, "debian:bookworm-slim", tempDir("example-node-fresh-base"));
    const rebuilt = inStore(
      [
        "build",
        "--progress=plain",
        ...secret,
        "--no-cache",
        "--cache-from",
        `${cacheRef},mounts=true`,
        "-t",
        "node-service",
        example,
      ],
      fresh,
    );
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    expect(rebuilt.stderr).toMatch(/added 1 package/);
    // npm's debug log of each run is kept in the npm cache mount: the first build fetched ms from
    // the registry, the rebuild read it from the imported cache without a single request.
    const exported = tempDir("example-node-npm-cache");
    const exportedRun = inStore(["cache", "export", "--id", "/root/.npm", "-o", exported], fresh);
    expect(exportedRun.status, exportedRun.stderr).toBe(0);
    const [key] = readdirSync(exported).filter((name) => /^[0-9a-f]{32}$/.test(name));
    const logs = readdirSync(path.join(exported, key!, "_logs")).sort();
    expect(logs).toHaveLength(2);
    const [first, second] = logs.map((log) => readFileSync(path.join(exported, key!, "_logs", log), "utf8"));
    expect(first).toMatch(
      /http fetch GET 200 https:\/\/registry\.npmjs\.org\/ms\/-\/ms-2\.1\.3\.tgz .*\(cache miss\)/,
    );
    expect(second).toContain("ADD node_modules/ms");
    expect(second).not.toContain("http fetch");
    // What npm made, and what the image holds in /app, is what the first build made.
    const listing = (root: string) =>
      inStore(
        [
          "run",
          "--rm",
          "-u",
          "root",
          "node-service",
          "sh",
          "-c",
          "cd /app && find . -type f | sort | xargs sha256sum",
        ],
        root,
      );
    const before = listing(store);
    const after = listing(fresh);
    expect(after.status, after.stderr).toBe(0);
    expect(after.stdout).toContain("./node_modules/ms/index.js");
    expect(after.stdout).toBe(before.stdout);
  }, 900_000);

  it("installs the dependency with npm ci in the build stage, and leaves npm out of the image", () => {
    expect(build.stderr).toMatch(/added 1 package/);
    const result = inStore([
      "run",
      "--rm",
      "-u",
      "root",
      "node-service",
      "sh",
      "-c",
      "ls node_modules; command -v npm || echo 'no npm'; find /var/cache/apt -name '*.deb' | wc -l",
    ]);
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("ms\nno npm\n0\n");
  });

  it("runs as the unprivileged user node", () => {
    const result = inStore([
      "run",
      "--rm",
      "node-service",
      "node",
      "-e",
      "const u = require('os').userInfo(); console.log(u.username, u.uid)",
    ]);
    expect(result.status).toBe(0);
    const [name, uid] = result.stdout.trim().split(" ");
    expect(name).toBe("node");
    expect(Number(uid)).toBeGreaterThan(0);
  });

  it("says in its config which port it serves and how it starts", () => {
    const result = inStore(["inspect", "node-service"]);
    expect(result.status).toBe(0);
    const { config } = JSON.parse(result.stdout).config;
    expect(config.ExposedPorts).toEqual({ "8080/tcp": {} });
    expect(config.Cmd).toEqual(["node", "server.js"]);
    expect(config.User).toBe("node");
    expect(config.WorkingDir).toBe("/app");
  });

  it("serves HTTP on the port in $PORT, and stops cleanly on SIGTERM", async () => {
    const port = await freeLoopbackPort();
    const service = spawn(tbuildBin, ["run", "--rm", "-e", `PORT=${port}`, "node-service"], {
      env: { ...process.env, TBUILD_ROOT: store },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    service.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    service.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => service.once("close", resolve));
    try {
      const body = await fetchWhenUp(`http://127.0.0.1:${port}/format/10800000`, () => output);
      expect(body).toEqual({ milliseconds: 10_800_000, short: "3h", long: "3 hours", servedBy: "node" });
      const missing = await fetch(`http://127.0.0.1:${port}/nowhere`);
      expect(missing.status).toBe(404);
    } finally {
      service.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
    expect(output).toContain(`node-service listening on port ${port}`);
  }, 60_000);
});

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** GETs `url` as JSON once the service answers; its output is shown if it never does. */
async function fetchWhenUp(url: string, output: () => string): Promise<unknown> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const response = await fetch(url);
      return await response.json();
    } catch (error) {
      if (Date.now() > deadline)
        throw new Error(`${url} never answered (${error}); the service said: ${output()}`);
      await sleep(200);
    }
  }
}
