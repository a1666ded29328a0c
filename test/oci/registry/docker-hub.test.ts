/**
 * A pull of a docker.io image (`busybox`) when Docker Hub cannot be reached says how to pull it
 * through a mirror. Docker Hub is made unreachable here by a real refusing socket: the transport
 * sends what is meant for registry-1.docker.io to a loopback port nothing listens on, so the test
 * does not depend on this machine's own lack of a route.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostPlatform } from "../../../oci/platform.js";
import type { RegistryEndpoint } from "../../../oci/registry/hosts.js";
import { pullImage } from "../../../oci/registry/index.js";
import { type HttpRequest, type HttpResponse, HttpTransport } from "../../../oci/registry/transport.js";
import { openStore, type Store } from "../../../oci/store/index.js";
import { freePort } from "../../helpers/registry.js";

/** Sends Docker Hub's requests to `hostPort` over plain HTTP: a refused connection there. */
class DockerHubAt extends HttpTransport {
  private readonly hostPort: string;

  constructor(hostPort: string) {
    super();
    this.hostPort = hostPort;
  }

  override send(endpoint: RegistryEndpoint | undefined, request: HttpRequest): Promise<HttpResponse> {
    if (request.url.host !== "registry-1.docker.io") return super.send(endpoint, request);
    const url = new URL(request.url);
    url.protocol = "http:";
    url.host = this.hostPort;
    return super.send(endpoint && { ...endpoint, scheme: "http", host: this.hostPort }, { ...request, url });
  }
}

describe("a pull from an unreachable docker.io", () => {
  let dir: string;
  let store: Store;
  let hub: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "tbuild-hub-"));
    store = await openStore(path.join(dir, "store"));
    hub = `127.0.0.1:${await freePort()}`;
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const pull = async (hosts: Record<string, { mirrors: string[] }>, warn?: (m: string) => void) => {
    const transport = new DockerHubAt(hub);
    try {
      await pullImage(store, "busybox", {
        platform: hostPlatform(),
        hosts,
        configPath: "/home/u/.config/tbuild/config.toml",
        transport,
        ...(warn ? { warn } : {}),
      });
    } catch (err) {
      return err as Error & { code: string };
    } finally {
      transport.close();
    }
    throw new Error("the pull succeeded");
  };

  it("says how to set a docker.io mirror in config.toml, after the network's own failure", async () => {
    const err = await pull({});
    expect(err.code).toBe("E_CONNECTION_REFUSED");
    // Named as the user knows it: the transport's detour stays out of sight.
    expect(err.message).toMatch(/^connection refused by registry-1\.docker\.io \(registry docker\.io\)/);
    expect(err.message).toContain(
      'docker.io cannot be reached from here: to pull its images (busybox, library/...) through a mirror, set in /home/u/.config/tbuild/config.toml: [registry."docker.io"] mirrors = ["mirror.example:5000"]',
    );
    expect(err.message).not.toContain("\n");
  });

  it("says the configured mirrors failed too when they did", async () => {
    const mirror = `127.0.0.1:${await freePort()}`;
    const warnings: string[] = [];
    const err = await pull({ "docker.io": { mirrors: [mirror] } }, (m) => warnings.push(m));
    expect(warnings.join("\n")).toContain(`mirror ${mirror} failed (connection refused by ${mirror}`);
    expect(err.message).toContain(
      `docker.io cannot be reached from here, and its mirrors (${mirror}) failed too (see the warnings above): check [registry."docker.io"] mirrors in /home/u/.config/tbuild/config.toml`,
    );
  });
});
