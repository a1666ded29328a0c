/**
 * Layer compression on export (BuildKit's rules, judged by the gzip and zstd tools), conversions
 * remembered so a layer is never compressed twice, and reproducible archives under SOURCE_DATE_EPOCH.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { assembleImage, exportImage } from "../../exporters/index.js";
import type { ImageConfig, Manifest } from "../../oci/spec.js";
import type { FsResult, LayerRef } from "../../solver/worker.js";
import { schemaErrors } from "../helpers/oci-schema.js";
import { tempDirs } from "../helpers/temp.js";
import { busyboxStore, EPOCH, type Fixture, HELLO, helloBuild, run, runBytes } from "./fixtures.js";

const tempDir = tempDirs();

const sha256 = (bytes: Buffer) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

describe("layer compression on export", () => {
  let fixture: Fixture;
  let gzipBuild: { result: FsResult; config: ImageConfig };
  let plainBuild: { result: FsResult; config: ImageConfig };
  beforeAll(async () => {
    fixture = await busyboxStore(tempDir("compression-store"));
    gzipBuild = await helloBuild(fixture, "gzip");
    plainBuild = await helloBuild(fixture, "uncompressed");
  });

  const blob = (digest: string) => readFileSync(fixture.store.content.blobPath(digest));
  const manifestOf = async (digest: string) =>
    JSON.parse((await fixture.store.content.readBytes(digest)).toString()) as Manifest;

  /** Each layer blob of a manifest, decompressed by the real tool its media type names, hashes to its diff_id. */
  const checkLayersWithTools = (manifest: Manifest, diffIds: string[]) => {
    manifest.layers.forEach((layer, i) => {
      const bytes = blob(layer.digest);
      const tar = layer.mediaType.endsWith("+zstd")
        ? runBytes("zstd", ["-d", "-c"], bytes)
        : layer.mediaType.endsWith("+gzip")
          ? runBytes("gzip", ["-d", "-c"], bytes)
          : bytes;
      expect(sha256(tar)).toBe(diffIds[i]);
      expect(sha256(bytes)).toBe(layer.digest);
      expect(bytes.length).toBe(layer.size);
    });
  };

  it("compresses uncompressed layers with gzip by default, and keeps layers already compressed", async () => {
    const mixed: FsResult = { layers: [gzipBuild.result.layers[0]!, ...plainBuild.result.layers.slice(1)] };
    const image = await assembleImage(
      fixture.store.content,
      { result: mixed, config: plainBuild.config },
      { sourceDateEpoch: EPOCH },
    );
    const outcome = await exportImage(fixture.store, image, mixed, {
      type: "image",
      names: ["gzip-default"],
    });
    const manifest = await manifestOf(outcome.digest);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(
      Array(3).fill("application/vnd.oci.image.layer.v1.tar+gzip"),
    );
    expect(manifest.layers[0]).toEqual(gzipBuild.result.layers[0]!.descriptor);
    expect(manifest.config).toEqual(image.configDescriptor);
    expect(schemaErrors("manifest", manifest)).toEqual([]);
    checkLayersWithTools(manifest, image.config.rootfs.diff_ids);
  });

  it("compression=zstd leaves gzip layers alone without force-compression, and converts them with it", async () => {
    const image = await assembleImage(fixture.store.content, gzipBuild, { sourceDateEpoch: EPOCH });
    const kept = await exportImage(fixture.store, image, gzipBuild.result, {
      type: "image",
      compression: "zstd",
    });
    expect(kept.digest).toBe(image.manifestDescriptor.digest);

    const archive = path.join(tempDir("zstd"), "zstd.tar");
    const forced = await exportImage(fixture.store, image, gzipBuild.result, {
      type: "oci",
      dest: archive,
      compression: "zstd",
      forceCompression: true,
    });
    const manifest = await manifestOf(forced.digest);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(
      Array(3).fill("application/vnd.oci.image.layer.v1.tar+zstd"),
    );
    expect(forced.configDigest).toBe(image.configDescriptor.digest);
    checkLayersWithTools(manifest, image.config.rootfs.diff_ids);
    const inspected = JSON.parse(run("skopeo", ["inspect", `oci-archive:${archive}`]));
    expect(inspected.Digest).toBe(forced.digest);
    const raw = JSON.parse(run("skopeo", ["inspect", "--raw", `oci-archive:${archive}`])) as Manifest;
    expect(raw).toEqual(manifest);
    // zstd layers read back through the whole stack: type=tar applies them.
    const fsTar = path.join(tempDir("zstd-fs"), "fs.tar");
    const zstdResult: FsResult = {
      layers: manifest.layers.map((descriptor, i) => ({
        descriptor,
        diffId: image.config.rootfs.diff_ids[i]!,
      })),
    };
    await exportImage(fixture.store, image, zstdResult, { type: "tar", dest: fsTar });
    expect(run("tar", ["-xOf", fsTar, "hello"])).toBe(HELLO);
  });

  it("compression=uncompressed with force-compression writes plain tars, whose digest is their diff_id", async () => {
    const image = await assembleImage(fixture.store.content, gzipBuild, { sourceDateEpoch: EPOCH });
    const outcome = await exportImage(fixture.store, image, gzipBuild.result, {
      type: "image",
      compression: "uncompressed",
      forceCompression: true,
    });
    const manifest = await manifestOf(outcome.digest);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(
      Array(3).fill("application/vnd.oci.image.layer.v1.tar"),
    );
    expect(manifest.layers.map((l) => l.digest)).toEqual(image.config.rootfs.diff_ids);
    checkLayersWithTools(manifest, image.config.rootfs.diff_ids);
  });

  it("a layer already exported is not compressed again; another algorithm or level is a new conversion", async () => {
    const image = await assembleImage(fixture.store.content, plainBuild, { sourceDateEpoch: EPOCH });
    const request = { type: "image", compression: "zstd", compressionLevel: 5 } as const;
    const first = await exportImage(fixture.store, image, plainBuild.result, request);
    const write = vi.spyOn(fixture.store.content, "write");
    try {
      const second = await exportImage(fixture.store, image, plainBuild.result, request);
      expect(second.digest).toBe(first.digest);
      expect(write).not.toHaveBeenCalled();
      const otherLevel = await exportImage(fixture.store, image, plainBuild.result, {
        ...request,
        compressionLevel: 19,
      });
      // The uncompressed layers (2 of 3; busybox's is gzip and stays) are compressed at the new level.
      expect(write).toHaveBeenCalledTimes(2);
      expect(otherLevel.digest).not.toBe(first.digest);
      checkLayersWithTools(await manifestOf(otherLevel.digest), image.config.rootfs.diff_ids);
    } finally {
      write.mockRestore();
    }
  });

  it("Docker media types cannot name zstd layers: the manifest is OCI, with a warning", async () => {
    const image = await assembleImage(fixture.store.content, gzipBuild, { sourceDateEpoch: EPOCH });
    const warnings: string[] = [];
    const outcome = await exportImage(
      fixture.store,
      image,
      gzipBuild.result,
      { type: "image", compression: "zstd", forceCompression: true, ociMediaTypes: false },
      { warn: (m) => warnings.push(m) },
    );
    expect(outcome.descriptor.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(warnings).toEqual(["zstd layers need OCI media types: the image is written with OCI media types"]);
    const docker = await exportImage(fixture.store, image, gzipBuild.result, {
      type: "image",
      ociMediaTypes: false,
    });
    const manifest = await manifestOf(docker.digest);
    expect(manifest.mediaType).toBe("application/vnd.docker.distribution.manifest.v2+json");
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(
      Array(3).fill("application/vnd.docker.image.rootfs.diff.tar.gzip"),
    );
  });
});

describe("SOURCE_DATE_EPOCH", () => {
  it("makes two empty stores give the same manifest digest and the same archive bytes", async () => {
    const exportIn = async (name: string) => {
      const fixture = await busyboxStore(tempDir(`repro-${name}`));
      const build = await helloBuild(fixture, "uncompressed");
      const image = await assembleImage(
        fixture.store.content,
        { ...build, labels: { built: "twice" } },
        { sourceDateEpoch: EPOCH },
      );
      const archive = path.join(tempDir(`repro-out-${name}`), "image.tar");
      const outcome = await exportImage(fixture.store, image, build.result, {
        type: "oci",
        dest: archive,
        names: ["repro:1"],
        compression: "gzip",
      });
      return { outcome, bytes: readFileSync(archive) };
    };
    const a = await exportIn("a");
    const b = await exportIn("b");
    expect(a.outcome).toEqual(b.outcome);
    expect(a.bytes.equals(b.bytes)).toBe(true);
  });
});

describe("a damaged layer", () => {
  it("is refused when it does not uncompress to its diff_id, naming both", async () => {
    const fixture = await busyboxStore(tempDir("damaged-store"));
    const build = await helloBuild(fixture, "gzip");
    const [base, hello, removal] = build.result.layers as [LayerRef, LayerRef, LayerRef];
    // The hello layer's blob under the removal layer's diff_id: what a damaged store would give.
    const wrong: FsResult = {
      layers: [base, { descriptor: hello.descriptor, diffId: removal.diffId }, removal],
    };
    const config = { ...build.config, rootfs: { type: "layers" as const, diff_ids: [] } };
    const image = await assembleImage(
      fixture.store.content,
      { result: wrong, config },
      { sourceDateEpoch: EPOCH },
    );
    await expect(
      exportImage(fixture.store, image, wrong, {
        type: "image",
        compression: "zstd",
        forceCompression: true,
      }),
    ).rejects.toThrow(
      `layer ${hello.descriptor.digest} uncompresses to ${hello.diffId}, not to its diff_id ${removal.diffId}`,
    );
  });
});
