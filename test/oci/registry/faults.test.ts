import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { openStore } from "../../../oci/store/index.js";
import { type FaultyProxy, startFaultyProxy } from "../../helpers/faulty-proxy.js";
import { type RunningRegistry, startRegistry } from "../../helpers/registry.js";
import { isolatedEnv, type MadeImage, makeImage, tbuildAsync } from "./fixtures.js";

let registry: RunningRegistry;
let proxy: FaultyProxy;
let image: MadeImage;
let name: string;

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await startFaultyProxy(registry);
  name = `${proxy.host}/faulty/app:1`;
  const env = isolatedEnv();
  image = await makeImage(await openStore(env.TBUILD_ROOT!), name, { layers: 3, layerBytes: 512 * 1024 });
  const push = await tbuildAsync(["push", name], { env });
  if (push.status !== 0) throw new Error(push.stderr);
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
});

beforeEach(() => {
  proxy.faults = {};
  proxy.requests.length = 0;
});

const isBlobGet = (r: { method: string; url: string }) =>
  r.method === "GET" && r.url.includes("/blobs/sha256:");

describe("a pull through a misbehaving registry", () => {
  it("survives a 503 on every first request and bodies cut mid-stream, resuming with Range", async () => {
    proxy.faults = { unavailableOnce: () => true, cutBlobBodies: 3 };
    const env = isolatedEnv();
    const pull = await tbuildAsync(["pull", name], { env });
    expect(pull.status, pull.stderr).toBe(0);
    expect(proxy.requests.filter((r) => r.status === 503).length).toBeGreaterThanOrEqual(5);
    // Each cut blob was resumed from where it broke, not fetched again whole.
    const resumed = proxy.requests.filter((r) => isBlobGet(r) && r.status === 206);
    expect(resumed.length).toBe(3);
    const store = await openStore(env.TBUILD_ROOT!);
    expect((await store.images.get(name))?.descriptor.digest).toBe(image.descriptor.digest);
    for (const layer of image.manifest.layers) {
      expect(await store.content.size(layer.digest)).toBe(layer.size);
    }
  });

  it("starts a blob over when the registry cannot resume it", async () => {
    proxy.faults = { cutBlobBodies: 2, ignoreRange: true };
    const env = isolatedEnv();
    const pull = await tbuildAsync(["pull", name], { env });
    expect(pull.status, pull.stderr).toBe(0);
    expect(proxy.requests.filter((r) => isBlobGet(r) && r.status === 206)).toEqual([]);
    const store = await openStore(env.TBUILD_ROOT!);
    expect((await store.images.get(name))?.descriptor.digest).toBe(image.descriptor.digest);
  });

  it("waits as long as a 429's Retry-After says", async () => {
    proxy.faults = { tooManyRequestsOnce: (r) => r.url.includes("/manifests/") };
    const started = Date.now();
    const pull = await tbuildAsync(["pull", name], { env: isolatedEnv() });
    expect(pull.status, pull.stderr).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(proxy.requests.filter((r) => r.status === 429)).toHaveLength(1);
  });

  it("refuses a corrupted blob, naming its digest, and leaves neither the blob nor the image", async () => {
    const layer = image.manifest.layers[1]!.digest;
    proxy.faults = { corruptBlob: layer };
    const env = isolatedEnv();
    const pull = await tbuildAsync(["pull", name], { env });
    expect(pull.status).toBe(1);
    expect(pull.stderr).toContain("digest mismatch");
    expect(pull.stderr).toContain(layer);
    expect(pull.stderr).not.toMatch(/\n\s+at /);
    // Never retried into success: the blob was asked for once.
    expect(proxy.requests.filter((r) => isBlobGet(r) && r.url.endsWith(layer))).toHaveLength(1);
    const store = await openStore(env.TBUILD_ROOT!);
    expect(await store.images.list()).toEqual([]);
    expect(existsSync(store.content.blobPath(layer))).toBe(false);
    const index = JSON.parse(readFileSync(path.join(store.root, "index.json"), "utf8"));
    expect(index.manifests).toEqual([]);

    // The next pull, from a registry that behaves, completes.
    proxy.faults = {};
    const again = await tbuildAsync(["pull", name], { env });
    expect(again.status, again.stderr).toBe(0);
  });
});
