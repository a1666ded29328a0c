import { beforeAll, describe, expect, it } from "vitest";
import { assembleImage } from "../../exporters/index.js";
import type { ImageConfig, Manifest } from "../../oci/spec.js";
import { schemaErrors } from "../helpers/oci-schema.js";
import { tempDirs } from "../helpers/temp.js";
import { busyboxStore, EPOCH, type Fixture, helloBuild } from "./fixtures.js";

const tempDir = tempDirs();

describe("assembleImage", () => {
  let fixture: Fixture;
  let build: Awaited<ReturnType<typeof helloBuild>>;
  beforeAll(async () => {
    fixture = await busyboxStore(tempDir("assemble"));
    build = await helloBuild(fixture);
  });

  it("lists every layer's diff_id and keeps the history's non-empty entries aligned with the layers", async () => {
    const image = await assembleImage(fixture.store.content, build, { sourceDateEpoch: EPOCH });
    expect(image.config.rootfs).toEqual({
      type: "layers",
      diff_ids: build.result.layers.map((l) => l.diffId),
    });
    const nonEmpty = image.config.history!.filter((h) => !h.empty_layer);
    expect(nonEmpty).toHaveLength(build.result.layers.length);
    expect(image.config.history!.map((h) => h.created_by)).toEqual(
      build.config.history!.map((h) => h.created_by),
    );
    expect(image.manifest.layers.map((l) => l.digest)).toEqual(
      build.result.layers.map((l) => l.descriptor.digest),
    );
    expect(image.config.config.Cmd).toEqual(["cat", "/hello"]);
  });

  it("writes config and manifest blobs that the image-spec schemas accept and that hash to their descriptors", async () => {
    const image = await assembleImage(fixture.store.content, build, {});
    const content = fixture.store.content;
    const manifestBytes = await content.readBytes(image.manifestDescriptor.digest);
    const configBytes = await content.readBytes(image.configDescriptor.digest);
    expect(schemaErrors("manifest", manifestBytes)).toEqual([]);
    expect(schemaErrors("config", configBytes)).toEqual([]);
    expect(JSON.parse(manifestBytes.toString()) as Manifest).toEqual(image.manifest);
    expect(JSON.parse(configBytes.toString()) as ImageConfig).toEqual(image.config);
    expect(image.manifestDescriptor).toEqual({
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: image.manifestDescriptor.digest,
      size: manifestBytes.length,
    });
    expect(image.configDescriptor.mediaType).toBe("application/vnd.oci.image.config.v1+json");
  });

  it("dates the config and this build's history entries SOURCE_DATE_EPOCH, clamping later ones, keeping earlier ones", async () => {
    const base = build.config.history!;
    const config: ImageConfig = {
      ...build.config,
      history: [
        { ...base[0]!, created: "1999-01-01T00:00:00Z" },
        { ...base[1]!, created: "2030-01-01T00:00:00Z" },
        ...base.slice(2),
      ],
    };
    const image = await assembleImage(
      fixture.store.content,
      { ...build, config },
      { sourceDateEpoch: EPOCH },
    );
    expect(image.config.created).toBe("2001-09-09T01:46:40Z");
    expect(image.config.history!.map((h) => h.created)).toEqual([
      "1999-01-01T00:00:00Z",
      "2001-09-09T01:46:40Z",
      ...base.slice(2).map(() => "2001-09-09T01:46:40Z"),
    ]);
  });

  it("dates the image now without SOURCE_DATE_EPOCH, and gives the same digests for the same inputs with it", async () => {
    const now = new Date("2024-05-06T07:08:09.123Z");
    const dated = await assembleImage(fixture.store.content, build, { now });
    expect(dated.config.created).toBe("2024-05-06T07:08:09Z");
    expect(dated.config.history!.at(-1)!.created).toBe("2024-05-06T07:08:09Z");
    const a = await assembleImage(fixture.store.content, build, { sourceDateEpoch: EPOCH });
    const b = await assembleImage(fixture.store.content, build, { sourceDateEpoch: EPOCH });
    expect(a.manifestDescriptor.digest).toBe(b.manifestDescriptor.digest);
  });

  it("merges --label over the config's labels", async () => {
    const image = await assembleImage(
      fixture.store.content,
      { ...build, labels: { "org.example.team": "builders", "from.dockerfile": "overridden" } },
      { sourceDateEpoch: EPOCH },
    );
    expect(image.config.config.Labels).toEqual({
      "from.dockerfile": "overridden",
      "org.example.team": "builders",
    });
  });

  it("writes the config's maps with their keys in byte order, as BuildKit's Go encoder does", async () => {
    const config = {
      ...build.config,
      config: {
        ...build.config.config,
        Labels: { zeta: "1", Alpha: "2", é: "3", beta: "4" },
        ExposedPorts: { "8080/tcp": {}, "53/udp": {}, "443/tcp": {} },
        Volumes: { "/var/lib": {}, "/data": {} },
      },
    };
    const image = await assembleImage(
      fixture.store.content,
      { ...build, config },
      { sourceDateEpoch: EPOCH },
    );
    const written = JSON.parse(String(await fixture.store.content.readBytes(image.manifest.config.digest)));
    expect(Object.keys(written.config.Labels)).toEqual(["Alpha", "beta", "zeta", "é"]);
    expect(Object.keys(written.config.ExposedPorts)).toEqual(["443/tcp", "53/udp", "8080/tcp"]);
    expect(Object.keys(written.config.Volumes)).toEqual(["/data", "/var/lib"]);
  });

  it("writes Docker schema2 media types when asked", async () => {
    const image = await assembleImage(fixture.store.content, build, {
      mediaTypes: "docker",
      sourceDateEpoch: EPOCH,
    });
    expect(image.manifestDescriptor.mediaType).toBe("application/vnd.docker.distribution.manifest.v2+json");
    expect(image.manifest.config.mediaType).toBe("application/vnd.docker.container.image.v1+json");
    expect(new Set(image.manifest.layers.map((l) => l.mediaType))).toEqual(
      new Set(["application/vnd.docker.image.rootfs.diff.tar.gzip"]),
    );
  });

  it("repairs a history that names more layers than the build made, and says so", async () => {
    const warnings: string[] = [];
    const config: ImageConfig = {
      ...build.config,
      history: [...build.config.history!, { created_by: "RUN extra", comment: "buildkit.dockerfile.v0" }],
    };
    const image = await assembleImage(
      fixture.store.content,
      { ...build, config },
      { sourceDateEpoch: EPOCH, warn: (m) => warnings.push(m) },
    );
    expect(image.config.history!.at(-1)).toMatchObject({ created_by: "RUN extra", empty_layer: true });
    expect(image.config.history!.filter((h) => !h.empty_layer)).toHaveLength(build.result.layers.length);
    expect(warnings).toEqual([expect.stringMatching(/names 4 layers but the build made 3/)]);
  });

  it("adds history entries for layers the history does not name, and says so", async () => {
    const warnings: string[] = [];
    const config: ImageConfig = { ...build.config, history: build.config.history!.slice(0, 2) };
    const image = await assembleImage(
      fixture.store.content,
      { ...build, config },
      { sourceDateEpoch: EPOCH, warn: (m) => warnings.push(m) },
    );
    expect(image.config.history!.filter((h) => !h.empty_layer)).toHaveLength(build.result.layers.length);
    expect(image.config.history!.at(-1)).toEqual({
      created: "2001-09-09T01:46:40Z",
      comment: "tbuild.exporter.image.v0",
    });
    expect(warnings).toEqual([expect.stringMatching(/made 3 layers but the image history names 2/)]);
  });

  it("assembles an empty filesystem (FROM scratch with nothing added) as an image without layers", async () => {
    const config: ImageConfig = {
      architecture: "amd64",
      os: "linux",
      config: {},
      rootfs: { type: "layers", diff_ids: [] },
      history: [],
    };
    const image = await assembleImage(
      fixture.store.content,
      { result: { layers: [] }, config },
      { sourceDateEpoch: EPOCH },
    );
    expect(image.manifest.layers).toEqual([]);
    expect(image.config.rootfs.diff_ids).toEqual([]);
    expect(schemaErrors("config", image.config)).toEqual([]);
    // The spec's text says layers SHOULD have one entry, its schema says minItems 1; BuildKit writes
    // none for an empty filesystem, and so does tbuild: that is the one complaint.
    expect(schemaErrors("manifest", image.manifest)).toEqual([
      "manifest/layers must NOT have fewer than 1 items",
    ]);
  });
});
