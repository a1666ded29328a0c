import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostPlatform } from "../../../oci/platform.js";
import { pullImage, pushImage } from "../../../oci/registry/index.js";
import { MediaType } from "../../../oci/spec.js";
import { openStore } from "../../../oci/store/index.js";
import { type FaultyProxy, startFaultyProxy } from "../../helpers/faulty-proxy.js";
import { freePort, type RunningRegistry, startRegistry } from "../../helpers/registry.js";
import { tempDirs } from "../../helpers/temp.js";
import { isolatedEnv, makeImage, makeIndex, skopeo, tbuildAsync, tempStore } from "./fixtures.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

let registry: RunningRegistry;
let second: RunningRegistry;
let proxy: FaultyProxy;

beforeAll(async () => {
  [registry, second] = await Promise.all([startRegistry(), startRegistry()]);
  proxy = await startFaultyProxy(registry);
});

afterAll(async () => {
  await proxy?.stop();
  await Promise.all([registry?.stop(), second?.stop()]);
});

async function storeOf(env: NodeJS.ProcessEnv) {
  return await openStore(env.TBUILD_ROOT!);
}

describe("tbuild push and tbuild pull against a real registry", () => {
  it("pushes a stored image, and pulls it into an empty store with the manifest bytes unchanged", async () => {
    const pushEnv = isolatedEnv();
    const made = await makeImage(await storeOf(pushEnv), `${registry.host}/app:1`, { layers: 3 });
    const push = await tbuildAsync(["push", `${registry.host}/app:1`], { env: pushEnv });
    expect(push.stderr).toBe(push.stderr.replace(/\n\s+at /, "")); // no stack traces
    expect(push.status).toBe(0);
    expect(push.stdout).toContain(`1: digest: ${made.descriptor.digest}`);
    expect(push.stderr).toContain("uploaded 4");

    const pullEnv = isolatedEnv();
    const pull = await tbuildAsync(["pull", `${registry.host}/app:1`], { env: pullEnv });
    expect(pull.status, pull.stderr).toBe(0);
    expect(pull.stdout).toContain(`Digest: ${made.descriptor.digest}`);
    expect(pull.stdout).toContain(`${registry.host}/app:1`);
    const store = await storeOf(pullEnv);
    const record = await store.images.get(`${registry.host}/app:1`);
    expect(record?.descriptor).toMatchObject({
      digest: made.descriptor.digest,
      mediaType: MediaType.ociManifest,
    });
    expect((await store.content.readBytes(made.descriptor.digest)).equals(made.bytes)).toBe(true);
    for (const layer of made.manifest.layers) expect(await store.content.has(layer.digest)).toBe(true);

    // Pulled again: everything is there, nothing is fetched.
    const again = await tbuildAsync(["pull", `${registry.host}/app:1`], { env: pullEnv });
    expect(again.status).toBe(0);
    expect(again.stderr).toContain("fetched 0 blobs");
    expect(again.stderr).toContain("4 already present");
  });

  it("two pulls of one image into one store at once both succeed, with one copy of each blob", async () => {
    const pushEnv = isolatedEnv();
    const made = await makeImage(await storeOf(pushEnv), `${registry.host}/twice:1`, { layers: 4 });
    expect((await tbuildAsync(["push", `${registry.host}/twice:1`], { env: pushEnv })).status).toBe(0);
    const env = isolatedEnv();
    const [a, b] = await Promise.all([
      tbuildAsync(["pull", `${registry.host}/twice:1`], { env }),
      tbuildAsync(["pull", `${registry.host}/twice:1`], { env }),
    ]);
    expect([a.status, b.status], a.stderr + b.stderr).toEqual([0, 0]);
    const store = await storeOf(env);
    expect((await store.images.list()).map((r) => r.descriptor.digest)).toEqual([made.descriptor.digest]);
    for (const layer of made.manifest.layers) expect(await store.content.size(layer.digest)).toBe(layer.size);
  });

  it("pulls by digest, and keeps a Docker schema2 manifest as it is", async () => {
    const pushEnv = isolatedEnv();
    const made = await makeImage(await storeOf(pushEnv), `${registry.host}/docker-style:v2`, {
      format: "docker",
    });
    expect((await tbuildAsync(["push", `${registry.host}/docker-style:v2`], { env: pushEnv })).status).toBe(
      0,
    );
    const pullEnv = isolatedEnv();
    const ref = `${registry.host}/docker-style@${made.descriptor.digest}`;
    const pull = await tbuildAsync(["pull", ref], { env: pullEnv });
    expect(pull.status, pull.stderr).toBe(0);
    const record = await (await storeOf(pullEnv)).images.get(ref);
    expect(record?.descriptor).toMatchObject({
      digest: made.descriptor.digest,
      mediaType: MediaType.dockerManifest,
    });
  });

  it("push of what was pulled keeps the manifest digest, byte for byte, on another registry", async () => {
    const pushEnv = isolatedEnv();
    const made = await makeImage(await storeOf(pushEnv), `${registry.host}/roundtrip:1`);
    expect((await tbuildAsync(["push", `${registry.host}/roundtrip:1`], { env: pushEnv })).status).toBe(0);
    const env = isolatedEnv();
    expect((await tbuildAsync(["pull", `${registry.host}/roundtrip:1`], { env })).status).toBe(0);
    const store = await storeOf(env);
    const pulled = (await store.images.get(`${registry.host}/roundtrip:1`))!;
    await store.images.put(`${second.host}/copied:1`, pulled.descriptor);
    const push = await tbuildAsync(["push", `${second.host}/copied:1`], { env });
    expect(push.status, push.stderr).toBe(0);
    const raw = skopeo(["inspect", "--raw", "--tls-verify=false", `docker://${second.host}/copied:1`]);
    expect(raw.status, raw.stderr).toBe(0);
    expect(sha256(Buffer.from(raw.stdout))).toBe(made.descriptor.digest);
    expect(Buffer.from(raw.stdout).equals(made.bytes)).toBe(true);
  });

  it("mounts blobs from another repository of the same registry instead of uploading them", async () => {
    const pushEnv = isolatedEnv();
    await makeImage(await storeOf(pushEnv), `${proxy.host}/base:1`, { layers: 2 });
    expect((await tbuildAsync(["push", `${proxy.host}/base:1`], { env: pushEnv })).status).toBe(0);
    const env = isolatedEnv();
    expect((await tbuildAsync(["pull", `${proxy.host}/base:1`], { env })).status).toBe(0);
    const store = await storeOf(env);
    const pulled = (await store.images.get(`${proxy.host}/base:1`))!;
    await store.images.put(`${proxy.host}/derived:1`, pulled.descriptor);
    proxy.requests.length = 0;
    const push = await tbuildAsync(["push", `${proxy.host}/derived:1`], { env });
    expect(push.status, push.stderr).toBe(0);
    expect(push.stderr).toContain("mounted 3");
    const mounts = proxy.requests.filter((r) => r.method === "POST" && r.url.includes("mount="));
    expect(mounts).toHaveLength(3);
    expect(mounts.every((r) => r.url.includes("from=base") && r.status === 201)).toBe(true);
    expect(
      proxy.requests.filter((r) => r.method === "PATCH" || (r.method === "PUT" && r.url.includes("/blobs/"))),
    ).toEqual([]);
  });

  it("uploads large blobs in PATCH chunks that the registry reassembles", async () => {
    const store = await tempStore();
    const made = await makeImage(store, `${proxy.host}/chunked:1`, { layers: 1, layerBytes: 300_000 });
    const layerSize = made.manifest.layers[0]!.size;
    proxy.requests.length = 0;
    const result = await pushImage(store, `${proxy.host}/chunked:1`, {
      monolithicLimit: 1000,
      chunkSize: 64 * 1024,
    });
    expect(result.uploaded).toBe(2);
    const patches = proxy.requests.filter((r) => r.method === "PATCH");
    // The layer in 64 KiB chunks; the config, under the limit, in one PUT.
    expect(patches.length).toBe(Math.ceil(layerSize / (64 * 1024)));
    const fresh = await tempStore();
    const pulled = await pullImage(fresh, `${proxy.host}/chunked:1`, { platform: hostPlatform() });
    expect(pulled.descriptor.digest).toBe(made.descriptor.digest);
    expect(await fresh.content.size(made.manifest.layers[0]!.digest)).toBe(layerSize);
  });

  it("picks the requested platform from an OCI index, and says which platforms there are when none fits", async () => {
    const pushEnv = isolatedEnv();
    const { children } = await makeIndex(await storeOf(pushEnv), `${registry.host}/multi:1`, [
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64", variant: "v8" },
    ]);
    const push = await tbuildAsync(["push", `${registry.host}/multi:1`], { env: pushEnv });
    expect(push.status, push.stderr).toBe(0);
    for (const [platform, child] of [
      ["linux/arm64", children[1]!],
      ["linux/amd64", children[0]!],
    ] as const) {
      const env = isolatedEnv();
      const pull = await tbuildAsync(["pull", "--platform", platform, `${registry.host}/multi:1`], { env });
      expect(pull.status, pull.stderr).toBe(0);
      const record = await (await storeOf(env)).images.get(`${registry.host}/multi:1`);
      expect(record?.descriptor.digest).toBe(child.descriptor.digest);
    }
    const none = await tbuildAsync(["pull", "--platform", "linux/s390x", `${registry.host}/multi:1`], {
      env: isolatedEnv(),
    });
    expect(none.status).toBe(1);
    expect(none.stderr).toContain("no image for platform linux/s390x");
    expect(none.stderr).toContain("linux/amd64, linux/arm64/v8");
  });

  it("names the repository and the tag when either is unknown, without a stack trace", async () => {
    const env = isolatedEnv();
    const noRepo = await tbuildAsync(["pull", `${registry.host}/does-not-exist:7`], { env });
    expect(noRepo.status).toBe(1);
    expect(noRepo.stderr).toMatch(/"does-not-exist"/);
    expect(noRepo.stderr).toMatch(/"7"/);
    expect(noRepo.stderr).not.toMatch(/\n\s+at /);
    const noTag = await tbuildAsync(["pull", `${registry.host}/app:missing-tag`], { env });
    expect(noTag.status).toBe(1);
    expect(noTag.stderr).toContain(
      `tag "missing-tag" not found in repository "app" on registry ${registry.host}`,
    );
  });

  it("names host and port when the connection is refused", async () => {
    const port = await freePort();
    const result = await tbuildAsync(["pull", `127.0.0.1:${port}/app:1`], { env: isolatedEnv() });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`connection refused by 127.0.0.1:${port}`);
  });

  it("says an image is not in the local store when pushing one that is not", async () => {
    const result = await tbuildAsync(["push", `${registry.host}/never-made:1`], { env: isolatedEnv() });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`${registry.host}/never-made:1`);
    expect(result.stderr).toContain("in the local store");
  });
});

describe("skopeo and tbuild read each other's pushes", () => {
  it("skopeo copies what tbuild pushed", async () => {
    const env = isolatedEnv();
    const made = await makeImage(await storeOf(env), `${registry.host}/by-tbuild:1`);
    expect((await tbuildAsync(["push", `${registry.host}/by-tbuild:1`], { env })).status).toBe(0);
    const dest = tempDir("skopeo");
    const copy = skopeo([
      "copy",
      "--src-tls-verify=false",
      `docker://${registry.host}/by-tbuild:1`,
      `oci:${dest}:copied`,
    ]);
    expect(copy.status, copy.stderr).toBe(0);
    const index = JSON.parse(readFileSync(path.join(dest, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    expect(index.manifests[0]?.digest).toBe(made.descriptor.digest);
  });

  it("tbuild pulls what skopeo pushed, an index with two platforms included", async () => {
    const source = await tempStore();
    const { children } = await makeIndex(source, "example.test/source:1", [
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64", variant: "v8" },
    ]);
    const copy = skopeo([
      "copy",
      "--all",
      "--dest-tls-verify=false",
      `oci:${source.root}:example.test/source:1`,
      `docker://${registry.host}/by-skopeo:1`,
    ]);
    expect(copy.status, copy.stderr).toBe(0);
    const env = isolatedEnv();
    const pull = await tbuildAsync(["pull", "--platform", "linux/arm64/v8", `${registry.host}/by-skopeo:1`], {
      env,
    });
    expect(pull.status, pull.stderr).toBe(0);
    const store = await storeOf(env);
    const record = await store.images.get(`${registry.host}/by-skopeo:1`);
    expect(record?.descriptor.digest).toBe(children[1]!.descriptor.digest);
    expect(existsSync(store.content.blobPath(children[1]!.manifest.layers[0]!.digest))).toBe(true);
    expect(existsSync(store.content.blobPath(children[0]!.manifest.layers[0]!.digest))).toBe(false);
  });
});
