/**
 * The `image` op: a base image's filesystem is its layers as stored, pulled by digest from a real
 * registry when the store lacks them, and nothing is copied or unpacked for it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushImage } from "../../../oci/registry/index.js";
import { runImage } from "../../../worker/ops/image.js";
import { type RunningRegistry, startRegistry } from "../../helpers/registry.js";
import { dir, file, layerTar, storeImage, tempStore } from "../layers.js";
import { type OpsFixture, opsFixture } from "./helpers.js";

let registry: RunningRegistry;
let fixture: OpsFixture;

beforeAll(async () => {
  registry = await startRegistry();
  fixture = await opsFixture();
});

afterAll(async () => {
  await fixture?.cleanup();
  await registry?.stop();
});

describe("the image op", () => {
  it("pulls a missing image by digest, and gives its layers with their diff_ids", async () => {
    const source = await tempStore();
    try {
      const image = await storeImage(source.store, [
        await layerTar([dir("etc"), file("etc/os-release", "ID=test\n")]),
        await layerTar([dir("app"), file("app/run", "run\n")]),
      ]);
      const name = `${registry.host}/ops/base:1`;
      await source.store.images.put(name, image.descriptor);
      await pushImage(source.store, name);
      const op = {
        kind: "image" as const,
        ref: name,
        digest: image.descriptor.digest,
        platform: { os: "linux", architecture: "amd64" },
      };
      const expected = image.layers.map((l) => ({ descriptor: l.descriptor, diffId: l.diffId }));

      const pulled = await runImage(op, [], fixture.ctx);
      expect(pulled.layers).toEqual(expected);
      for (const layer of expected)
        expect(await fixture.ctx.store.content.has(layer.descriptor.digest)).toBe(true);

      // Present now: no registry is needed any more.
      await registry.stop();
      expect(await runImage(op, [], fixture.ctx)).toEqual(pulled);
    } finally {
      await source.cleanup();
    }
  });
});
