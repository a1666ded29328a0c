/**
 * The image outputs, judged by the tools users judge them with: skopeo and umoci read the OCI
 * layout, podman loads and runs the docker archive, a real registry takes the push.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AssembledImage,
  assembleImage,
  exportImage,
  writeIidFile,
  writeMetadataFile,
} from "../../exporters/index.js";
import type { ImageConfig, Index, Manifest } from "../../oci/spec.js";
import type { FsResult } from "../../solver/worker.js";
import { schemaErrors } from "../helpers/oci-schema.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { busyboxStore, EPOCH, type Fixture, HELLO, helloBuild, run } from "./fixtures.js";

const tempDir = tempDirs();

function extract(archive: string): string {
  const dir = tempDir("extracted");
  run("tar", ["-xf", archive, "-C", dir]);
  return dir;
}

function layoutBlob(layout: string, digest: string): Buffer {
  return readFileSync(path.join(layout, "blobs", ...digest.split(":")));
}

/** Every JSON document of an image layout, checked against the image-spec schemas. */
function layoutSchemaErrors(layout: string): string[] {
  const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8")) as Index;
  const errors = [
    ...schemaErrors("index", index),
    ...schemaErrors("layout", readFileSync(path.join(layout, "oci-layout"))),
  ];
  for (const entry of index.manifests) {
    const manifest = JSON.parse(layoutBlob(layout, entry.digest).toString()) as Manifest;
    errors.push(
      ...schemaErrors("manifest", manifest),
      ...schemaErrors("config", layoutBlob(layout, manifest.config.digest)),
    );
  }
  return errors;
}

describe("image outputs", () => {
  let fixture: Fixture;
  let result: FsResult;
  let config: ImageConfig;
  let image: AssembledImage;
  let work: string;
  beforeAll(async () => {
    fixture = await busyboxStore(tempDir("archives-store"));
    ({ result, config } = await helloBuild(fixture));
    image = await assembleImage(fixture.store.content, { result, config }, { sourceDateEpoch: EPOCH });
    work = tempDir("archives-work");
  });

  it("type=image names the image in the local store under every name", async () => {
    const outcome = await exportImage(fixture.store, image, result, {
      type: "image",
      names: ["hello", "example.com/team/hello:v1"],
    });
    expect(outcome).toEqual({
      digest: image.manifestDescriptor.digest,
      configDigest: image.configDescriptor.digest,
      descriptor: image.manifestDescriptor,
      names: ["docker.io/library/hello:latest", "example.com/team/hello:v1"],
    });
    expect((await fixture.store.images.get("hello"))?.descriptor).toEqual(image.manifestDescriptor);
    expect((await fixture.store.images.get("example.com/team/hello:v1"))?.descriptor).toEqual(
      image.manifestDescriptor,
    );
    const inspected = JSON.parse(
      run("skopeo", ["inspect", `oci:${fixture.store.root}:docker.io/library/hello:latest`]),
    );
    expect(inspected.Digest).toBe(image.manifestDescriptor.digest);
    expect(inspected.Layers).toEqual(result.layers.map((l) => l.descriptor.digest));
  });

  it("type=oci writes an OCI archive that skopeo inspects and umoci unpacks, with whiteouts applied", async () => {
    const archive = path.join(work, "hello-oci.tar");
    const outcome = await exportImage(fixture.store, image, result, {
      type: "oci",
      dest: archive,
      names: ["hello:oci"],
    });
    expect(outcome.digest).toBe(image.manifestDescriptor.digest);
    const inspected = JSON.parse(run("skopeo", ["inspect", `oci-archive:${archive}`]));
    expect(inspected.Digest).toBe(outcome.digest);
    expect(inspected.Labels).toEqual({ "from.dockerfile": "yes" });
    expect(inspected.Layers).toHaveLength(3);

    const layout = extract(archive);
    expect(layoutSchemaErrors(layout)).toEqual([]);
    const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8")) as Index;
    expect(index.manifests.map((m) => m.annotations)).toEqual([
      {
        "org.opencontainers.image.ref.name": "oci",
        "io.containerd.image.name": "docker.io/library/hello:oci",
      },
    ]);
    const bundle = path.join(tempDir("umoci"), "bundle");
    run("umoci", ["unpack", "--rootless", "--image", `${layout}:oci`, bundle]);
    const rootfs = path.join(bundle, "rootfs");
    expect(readFileSync(path.join(rootfs, "hello"), "utf8")).toBe(HELLO);
    expect(readdirSync(path.join(rootfs, "etc")).sort()).toEqual(["passwd"]);
    expect(readdirSync(path.join(rootfs, "old"))).toEqual(["c"]);
  });

  it("type=oci,tar=false writes a layout directory, adding to one that holds other images", async () => {
    const layout = path.join(tempDir("layout"), "out");
    await exportImage(fixture.store, image, result, {
      type: "oci",
      dest: layout,
      tar: false,
      names: ["first:1"],
    });
    await exportImage(fixture.store, image, result, {
      type: "oci",
      dest: layout,
      tar: false,
      names: ["second:2"],
    });
    // The same name again replaces its entry rather than adding one.
    await exportImage(fixture.store, image, result, {
      type: "oci",
      dest: layout,
      tar: false,
      names: ["first:1"],
    });
    const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8")) as Index;
    expect(index.manifests.map((m) => m.annotations?.["io.containerd.image.name"]).sort()).toEqual([
      "docker.io/library/first:1",
      "docker.io/library/second:2",
    ]);
    expect(layoutSchemaErrors(layout)).toEqual([]);
    const inspected = JSON.parse(run("skopeo", ["inspect", `oci:${layout}:2`]));
    expect(inspected.Digest).toBe(image.manifestDescriptor.digest);
  });

  it("type=docker writes an archive that podman loads and runs", async () => {
    const archive = path.join(work, "hello-docker.tar");
    const outcome = await exportImage(fixture.store, image, result, {
      type: "docker",
      dest: archive,
      names: ["hello:docker"],
    });
    // Docker's media types by default: another manifest than the OCI one, the same config.
    expect(outcome.descriptor.mediaType).toBe("application/vnd.docker.distribution.manifest.v2+json");
    expect(outcome.digest).not.toBe(image.manifestDescriptor.digest);
    expect(outcome.configDigest).toBe(image.configDescriptor.digest);
    const manifest = JSON.parse(run("tar", ["-xOf", archive, "manifest.json"]));
    expect(manifest).toEqual([
      {
        Config: `${image.configDescriptor.digest.slice(7)}.json`,
        RepoTags: ["docker.io/library/hello:docker"],
        Layers: result.layers.map((l) => `${l.diffId.slice(7)}/layer.tar`),
      },
    ]);

    const podman = tempDir("podman");
    const flags = [
      "--root",
      path.join(podman, "root"),
      "--runroot",
      path.join(podman, "run"),
      "--storage-driver",
      "vfs",
    ];
    try {
      const loaded = spawnSync("podman", [...flags, "load", "-i", archive], { encoding: "utf8" });
      expect(loaded.stdout + loaded.stderr).toContain("Loaded image: docker.io/library/hello:docker");
      expect(loaded.status).toBe(0);
      const runFlags = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"];
      const ran = spawnSync(
        "podman",
        [
          ...flags,
          ...runFlags,
          "run",
          "--rm",
          "--network",
          "none",
          "--ulimit",
          "nofile=1024:1024",
          "--ulimit",
          "nproc=1024:1024",
          "docker.io/library/hello:docker",
        ],
        { encoding: "utf8" },
      );
      expect(ran.stderr).toBe("");
      expect(ran.stdout).toBe(HELLO);
      const listed = spawnSync(
        "podman",
        [
          ...flags,
          ...runFlags,
          "run",
          "--rm",
          "--network",
          "none",
          "--ulimit",
          "nofile=1024:1024",
          "--ulimit",
          "nproc=1024:1024",
          "docker.io/library/hello:docker",
          "sh",
          "-c",
          "test ! -e /etc/group && ls /old",
        ],
        { encoding: "utf8" },
      );
      expect(listed.stdout).toBe("c\n");
      expect(listed.status).toBe(0);
    } finally {
      spawnSync("podman", [...flags, "system", "reset", "--force"], { encoding: "utf8" });
    }
  });

  it("type=oci and type=docker write to standard output with dest=-", async () => {
    const stdout = new PassThrough();
    const chunks: Buffer[] = [];
    stdout.on("data", (c: Buffer) => chunks.push(c));
    await exportImage(fixture.store, image, result, { type: "oci", dest: "-" }, { stdout });
    const archive = path.join(work, "from-stdout.tar");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(archive, Buffer.concat(chunks));
    const inspected = JSON.parse(run("skopeo", ["inspect", `oci-archive:${archive}`]));
    expect(inspected.Digest).toBe(image.manifestDescriptor.digest);

    const terminal = Object.assign(new PassThrough(), { isTTY: true });
    await expect(
      exportImage(fixture.store, image, result, { type: "docker", dest: "-" }, { stdout: terminal }),
    ).rejects.toThrow("type=docker writes a tar archive: give dest=FILE, or redirect standard output");
  });

  describe("push", () => {
    let registry: RunningRegistry;
    beforeAll(async () => {
      registry = await startRegistry();
    });
    afterAll(async () => {
      await registry?.stop();
    });

    it("type=image,push=true stores the image, then pushes it: skopeo reads the same digest from the registry", async () => {
      const name = `${registry.host}/team/hello:pushed`;
      const outcome = await exportImage(fixture.store, image, result, {
        type: "image",
        names: [name],
        push: true,
      });
      expect(outcome.names).toEqual([name]);
      expect((await fixture.store.images.get(name))?.descriptor.digest).toBe(outcome.digest);
      const inspected = JSON.parse(run("skopeo", ["inspect", "--tls-verify=false", `docker://${name}`]));
      expect(inspected.Digest).toBe(outcome.digest);
      expect(inspected.Layers).toEqual(result.layers.map((l) => l.descriptor.digest));
      const raw = JSON.parse(
        run("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${name}`]),
      ) as Manifest;
      expect(schemaErrors("manifest", raw)).toEqual([]);
      const pulledConfig = JSON.parse(
        run("skopeo", ["inspect", "--config", "--raw", "--tls-verify=false", `docker://${name}`]),
      );
      expect(schemaErrors("config", pulledConfig)).toEqual([]);
      expect(pulledConfig.rootfs.diff_ids).toEqual(result.layers.map((l) => l.diffId));
    });

    it("push without a name is a usage error", async () => {
      await expect(exportImage(fixture.store, image, result, { type: "image", push: true })).rejects.toThrow(
        "push needs a name to push to",
      );
    });
  });

  it("writes --iidfile and --metadata-file as buildx does", async () => {
    const outcome = await exportImage(fixture.store, image, result, {
      type: "image",
      names: ["meta:1", "meta:2"],
    });
    const dir = tempDir("metadata");
    await writeIidFile(path.join(dir, "iid"), outcome);
    await writeMetadataFile(path.join(dir, "metadata.json"), outcome);
    expect(readFileSync(path.join(dir, "iid"), "utf8")).toBe(image.manifestDescriptor.digest);
    expect(JSON.parse(readFileSync(path.join(dir, "metadata.json"), "utf8"))).toEqual({
      "containerimage.config.digest": image.configDescriptor.digest,
      "containerimage.descriptor": image.manifestDescriptor,
      "containerimage.digest": image.manifestDescriptor.digest,
      "image.name": "docker.io/library/meta:1,docker.io/library/meta:2",
    });
    await expect(writeIidFile(path.join(dir, "missing", "iid"), outcome)).rejects.toThrow(
      /cannot write .*missing\/iid \(--iidfile\): ENOENT/,
    );
  });

  it("refuses layers the image was not assembled from", async () => {
    await expect(
      exportImage(fixture.store, image, { layers: result.layers.slice(1) }, { type: "image" }),
    ).rejects.toThrow(/was not assembled from these layers/);
  });
});
