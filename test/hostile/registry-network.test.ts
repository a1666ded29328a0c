/**
 * A registry that is slow on purpose, or spoken to in the wrong protocol. A server that trickles a
 * byte at a time never lets a socket go idle, so only a total deadline per request ends the pull:
 * `[registry."HOST"] timeout` in config.toml sets it, and the error names the registry and that
 * setting. TLS spoken to a plain-HTTP registry (and plain HTTP to a TLS one) says which `http =`
 * line to write.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { type DistributionServer, serveImage, startDistributionServer } from "./distribution-server.js";
import { hostileWorld, MODES } from "./harness.js";
import { busyboxLayer, imageBlobs, type LayerFile } from "./layer-images.js";
import { tbuildAsync } from "./run-async.js";

const world = hostileWorld();
let server: DistributionServer;
let tlsRegistry: RunningRegistry;
let dir = "";
let base: LayerFile;

beforeAll(async () => {
  [server, tlsRegistry] = await Promise.all([startDistributionServer(), startRegistry({ tls: true })]);
  dir = world.dir("network");
  base = await busyboxLayer(dir);
}, 120_000);

afterAll(async () => {
  await Promise.all([server?.stop(), tlsRegistry?.stop()]);
});

/** A config.toml readable by every user, holding `text`. */
function configFile(text: string): string {
  const file = path.join(world.dir("config"), "config.toml");
  writeFileSync(file, text, { mode: 0o644 });
  return file;
}

/** A route that sends its headers, then one byte of `body` every 50 ms until the client gives up. */
function trickle(body: Buffer, type: string) {
  return (_req: unknown, res: import("node:http").ServerResponse) => {
    res.writeHead(200, { "content-type": type, "content-length": body.length });
    let sent = 0;
    const timer = setInterval(() => {
      if (sent < body.length) res.write(body.subarray(sent, ++sent));
    }, 50);
    res.once("close", () => clearInterval(timer));
  };
}

describe.each(MODES)("a registry that trickles (%s)", (mode) => {
  it.each(["blob", "manifest"] as const)(
    "a %s sent a byte at a time fails at the configured deadline, naming the registry and the setting",
    async (what) => {
      const repository = `trickle-${what}-${mode}`;
      const made = imageBlobs(path.join(dir, repository), { layers: [base] });
      serveImage(server, repository, "1", made.manifest, [made.config, base]);
      if (what === "blob") {
        const blob = Buffer.alloc(base.size);
        server.routes.set(
          `/v2/${repository}/blobs/${base.digest}`,
          trickle(blob, "application/octet-stream"),
        );
      } else {
        const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [] }).padEnd(100_000));
        server.routes.set(
          `/v2/${repository}/manifests/1`,
          trickle(manifest, "application/vnd.oci.image.manifest.v1+json"),
        );
      }
      const config = configFile(`[registry."${server.host}"]\ntimeout = "2s"\n`);
      const store = world.store(mode);
      const pull = await tbuildAsync(world, mode, store, ["pull", `${server.host}/${repository}:1`], {
        env: { TBUILD_CONFIG: config },
      });
      expect(pull.status, pull.stderr).toBe(1);
      expect(pull.stderr).toContain(`registry ${server.host} is too slow: GET /v2/${repository}/`);
      expect(pull.stderr).toContain("did not finish within 2s");
      expect(pull.stderr).toContain(
        `raise the deadline in ${config}: [registry."${server.host}"] timeout = "1h"`,
      );
      expect(pull.stderr.trim().split("\n")).toHaveLength(1);
      const images = world.tbuild(mode, store, ["images"]);
      expect(images.stdout).not.toContain(repository);
      world.expectStoreUsable(mode, store);
    },
    120_000,
  );
});

describe("config.toml's timeout", () => {
  it("must be a duration", async () => {
    const config = configFile(`[registry."${server.host}"]\ntimeout = 30\n`);
    const pull = await tbuildAsync(world, "root", world.store("root"), ["pull", `${server.host}/x:1`], {
      env: { TBUILD_CONFIG: config },
    });
    expect(pull.status).toBe(1);
    expect(pull.stderr).toContain(`registry."${server.host}".timeout must be a duration such as "30s"`);
  });
});

describe("the wrong protocol", () => {
  it("TLS spoken to a plain-HTTP registry says to set http = true, with the exact line", async () => {
    const config = configFile(`[registry."${server.host}"]\nhttp = false\n`);
    const pull = await tbuildAsync(world, "root", world.store("root"), ["pull", `${server.host}/any:1`], {
      env: { TBUILD_CONFIG: config },
    });
    expect(pull.status).toBe(1);
    expect(pull.stderr).toContain(`registry ${server.host} answered the TLS handshake in plain HTTP`);
    expect(pull.stderr).toContain(`set in ${config}: [registry."${server.host}"] http = true`);
    expect(pull.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("plain HTTP spoken to a TLS registry says to set http = false", async () => {
    // Loopback registries are spoken to in plain HTTP unless config.toml says otherwise.
    const pull = await tbuildAsync(world, "root", world.store("root"), ["pull", `${tlsRegistry.host}/any:1`]);
    expect(pull.status).toBe(1);
    expect(pull.stderr).toContain(`it speaks TLS: set [registry."${tlsRegistry.host}"] http = false`);
    expect(pull.stderr.trim().split("\n")).toHaveLength(1);
  });
});
