/**
 * A repository's tags as the registry lists them (`GET /v2/<name>/tags/list`): what a shared
 * cache's importer reads to find writers an index lost. A real registry, every page of its answer.
 */
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistrySession, registryEndpoint } from "../../../oci/registry/index.js";
import { MediaType } from "../../../oci/spec.js";
import { type RunningRegistry, startRegistry } from "../../helpers/registry.js";

let registry: RunningRegistry;
beforeAll(async () => {
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
});

describe("listing a repository's tags", () => {
  it("gives every tag pushed, and none for a repository the registry does not know", async () => {
    const session = new RegistrySession([registryEndpoint(registry.host)], { env: {} });
    const client = session.clients[0]!;
    try {
      const config = Buffer.from("{}");
      const digest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
      await client.uploadMonolithic("tags/app", await client.startUpload("tags/app"), digest, 2, () =>
        Readable.from([config]),
      );
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.ociManifest,
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest, size: 2 },
          layers: [],
        }),
      );
      const pushed = ["main", "main--tbuild-cache-0123456789abcdef", "v1.0", "_under"];
      for (const tag of pushed) await client.putManifest("tags/app", tag, manifest, MediaType.ociManifest);
      expect((await client.listTags("tags/app")).sort()).toEqual([...pushed].sort());
      expect(await client.listTags("tags/none")).toEqual([]);
    } finally {
      session.close();
    }
  });
});
