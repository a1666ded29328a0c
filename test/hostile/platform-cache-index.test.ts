/**
 * `--cache-from REF` for a build of several platforms reads an image index at REF as inline cache:
 * the image of each platform the build makes. A registry that answers with an index of thousands
 * of images claiming those platforms, or with an index of indexes, gets a build that fetches at
 * most one image per platform, follows no nesting, still runs, and leaves the store usable.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DistributionServer, startDistributionServer } from "./distribution-server.js";
import { hostileWorld, MODES, type Mode } from "./harness.js";
import { tbuildAsync } from "./run-async.js";

const world = hostileWorld();
let server: DistributionServer;

beforeAll(async () => {
  server = await startDistributionServer();
});
afterAll(async () => {
  await server?.stop();
});

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const digestOf = (data: Buffer | string) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const PLATFORMS = [
  { os: "linux", architecture: "amd64" },
  { os: "linux", architecture: "arm64" },
];

/** Serves an image of no layers and no cache under its digest in `repository`; its descriptor. */
function serveEmptyImage(repository: string, n: number) {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", n }));
  server.blobs.set(digestOf(config), config);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: digestOf(config),
      size: config.length,
    },
    layers: [],
  });
  server.manifests.set(`${repository}:${digestOf(manifest)}`, { body: manifest });
  return { mediaType: OCI_MANIFEST, digest: digestOf(manifest), size: manifest.length };
}

let counter = 0;
/** A two-platform build (no RUN: nothing to emulate) importing the cache at `repository:main`. */
async function buildImporting(mode: Mode, repository: string) {
  const store = world.store(mode);
  const canary = world.canary(mode);
  const ctx = world.context({ Dockerfile: "FROM scratch\nCOPY f /f\n", f: "data\n" });
  const seenBefore = server.seen.length;
  const built = await tbuildAsync(world, mode, store, [
    "build",
    "--progress=plain",
    "--platform",
    "linux/amd64,linux/arm64",
    "--cache-from",
    `${server.host}/${repository}:main`,
    ctx,
  ]);
  const manifestsFetched = server.seen
    .slice(seenBefore)
    .filter((p) => p.startsWith(`/v2/${repository}/manifests/`)).length;
  return { built, store, canary, manifestsFetched };
}

describe.each(MODES)("an image index as a cache for several platforms (%s)", (mode) => {
  it("an index of 4,000 images claiming the build's platforms costs one image fetch per platform", async () => {
    const repository = `hostile/platform-index-${mode}-${++counter}`;
    const manifests = [];
    for (let i = 0; i < 4000; i++)
      manifests.push({ ...serveEmptyImage(repository, i), platform: PLATFORMS[i % 2] });
    server.manifests.set(`${repository}:main`, {
      body: JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }),
      type: OCI_INDEX,
    });
    const { built, store, canary, manifestsFetched } = await buildImporting(mode, repository);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("2 step(s) ran");
    // The index, then the first image of each platform.
    expect(manifestsFetched).toBe(3);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  }, 120_000);

  it("an index whose platform entries are another index is left out with a warning, not followed, and the build runs", async () => {
    const repository = `hostile/platform-nested-${mode}-${++counter}`;
    const inner = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: PLATFORMS.map((platform, n) => ({ ...serveEmptyImage(repository, n), platform })),
    });
    server.manifests.set(`${repository}:${digestOf(inner)}`, { body: inner, type: OCI_INDEX });
    const outer = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: PLATFORMS.map((platform) => ({
        mediaType: OCI_INDEX,
        digest: digestOf(inner),
        size: inner.length,
        platform,
      })),
    });
    server.manifests.set(`${repository}:main`, { body: outer, type: OCI_INDEX });
    const { built, store, canary, manifestsFetched } = await buildImporting(mode, repository);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("the cache there is left out");
    expect(built.stderr).toContain("2 step(s) ran");
    // The outer index and the inner one once (both platforms name it), never the inner's images.
    expect(manifestsFetched).toBe(2);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  }, 120_000);
});
