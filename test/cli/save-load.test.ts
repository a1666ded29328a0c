import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { ImageConfig, Index, Manifest } from "../../oci/spec.js";
import { tbuildBin, tbuildInStore, tbuildInStoreOk } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { schemaErrors } from "../helpers/oci-schema.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

const run = (root: string, args: string[]) => tbuildInStore(root, args, FIXED_EPOCH);

const ok = (root: string, args: string[]) => tbuildInStoreOk(root, args, FIXED_EPOCH);

function inspect(
  root: string,
  name: string,
): { descriptor: { digest: string }; manifest: Manifest; config: ImageConfig } {
  return JSON.parse(ok(root, ["inspect", name]));
}

function extract(archive: string): string {
  const dir = tempDir("extracted");
  execFileSync("tar", ["-xf", archive, "-C", dir]);
  return dir;
}

describe("tbuild save and load", () => {
  let store: string;
  let work: string;
  beforeAll(async () => {
    store = tempDir("save-store");
    work = tempDir("save-work");
    await importBusybox(store, "busybox");
    ok(store, ["tag", "busybox", "localhost:5000/team/bb:1.0"]);
  });

  it("writes an OCI archive that skopeo and oci-image-tool accept, valid against the schemas", () => {
    const archive = path.join(work, "oci.tar");
    expect(ok(store, ["save", "busybox", "-o", archive])).toBe("");
    const image = inspect(store, "busybox");
    const skopeo = JSON.parse(
      execFileSync("skopeo", ["inspect", `oci-archive:${archive}`], { encoding: "utf8" }),
    );
    expect(skopeo.Digest).toBe(image.descriptor.digest);
    expect(skopeo.Layers).toEqual(image.manifest.layers.map((l) => l.digest));

    // This oci-image-tool (1.0.0-rc1) fails on every tar, skopeo's own included ("find failed: unable to
    // walk: end of walk"), and has no `--type imageLayout`: `--type image` on the layout the archive
    // holds, extracted as it is, is how it judges one.
    const layout = extract(archive);
    const validated = spawnSync("oci-image-tool", ["validate", "--type", "image", layout], {
      encoding: "utf8",
    });
    expect(validated.stdout + validated.stderr).toContain("Validation succeeded");
    expect(validated.status).toBe(0);
    const named = spawnSync(
      "oci-image-tool",
      ["validate", "--type", "image", "--ref", "name=latest", layout],
      { encoding: "utf8" },
    );
    expect(named.status).toBe(0);

    const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8")) as Index;
    expect(schemaErrors("index", index)).toEqual([]);
    expect(schemaErrors("layout", readFileSync(path.join(layout, "oci-layout")))).toEqual([]);
    expect(index.manifests).toEqual([
      {
        ...image.descriptor,
        annotations: {
          "org.opencontainers.image.ref.name": "latest",
          "io.containerd.image.name": "docker.io/library/busybox:latest",
        },
      },
    ]);
    const blob = (digest: string) => readFileSync(path.join(layout, "blobs", digest.replace(":", "/")));
    expect(schemaErrors("manifest", blob(image.descriptor.digest))).toEqual([]);
    expect(schemaErrors("config", blob(image.manifest.config.digest))).toEqual([]);
  });

  it("writes the same bytes each time, and several images share their blobs", () => {
    const a = path.join(work, "a.tar");
    const b = path.join(work, "b.tar");
    ok(store, ["save", "busybox", "-o", a]);
    ok(store, ["save", "busybox", "-o", b]);
    expect(readFileSync(a).equals(readFileSync(b))).toBe(true);

    const both = path.join(work, "both.tar");
    ok(store, ["save", "busybox", "localhost:5000/team/bb:1.0", "-o", both]);
    const listing = execFileSync("tar", ["-tf", both], { encoding: "utf8" }).split("\n").filter(Boolean);
    expect(listing.filter((p) => p.startsWith("blobs/sha256/") && p.length > 14)).toHaveLength(3);
    const index = JSON.parse(
      execFileSync("tar", ["-xOf", both, "index.json"], { encoding: "utf8" }),
    ) as Index;
    // As BuildKit and containerd write them: the full name for containerd, the tag as the OCI ref name.
    expect(index.manifests.map((m) => m.annotations?.["io.containerd.image.name"])).toEqual([
      "docker.io/library/busybox:latest",
      "localhost:5000/team/bb:1.0",
    ]);
    expect(index.manifests.map((m) => m.annotations?.["org.opencontainers.image.ref.name"])).toEqual([
      "latest",
      "1.0",
    ]);
  });

  it("writes a docker archive that podman load accepts", () => {
    const archive = path.join(work, "docker.tar");
    ok(store, ["save", "--format", "docker", "busybox", "-o", archive]);
    const manifest = JSON.parse(
      execFileSync("tar", ["-xOf", archive, "manifest.json"], { encoding: "utf8" }),
    );
    const image = inspect(store, "busybox");
    expect(manifest).toEqual([
      {
        Config: `${image.manifest.config.digest.slice(7)}.json`,
        RepoTags: ["docker.io/library/busybox:latest"],
        Layers: [`${image.config.rootfs.diff_ids[0]!.slice(7)}/layer.tar`],
      },
    ]);
    const repositories = JSON.parse(
      execFileSync("tar", ["-xOf", archive, "repositories"], { encoding: "utf8" }),
    );
    expect(repositories).toEqual({
      "docker.io/library/busybox": { latest: image.config.rootfs.diff_ids[0]!.slice(7) },
    });

    // Podman with its own throwaway storage (vfs: no mounts left behind).
    const podman = tempDir("podman");
    const flags = [
      "--root",
      path.join(podman, "root"),
      "--runroot",
      path.join(podman, "run"),
      "--storage-driver",
      "vfs",
    ];
    const loaded = spawnSync("podman", [...flags, "load", "-i", archive], { encoding: "utf8" });
    expect(loaded.stderr + loaded.stdout).toContain("Loaded image: docker.io/library/busybox:latest");
    expect(loaded.status).toBe(0);
    const images = JSON.parse(
      execFileSync("podman", [...flags, "images", "--format", "json"], { encoding: "utf8" }),
    );
    expect(images[0].Id).toBe(image.manifest.config.digest.slice(7));
    spawnSync("podman", [...flags, "system", "reset", "--force"], { encoding: "utf8" });
  });

  it("loads both formats back: the OCI archive keeps the manifest digest, the docker one the config", () => {
    const oci = path.join(work, "round.tar");
    const docker = path.join(work, "round-docker.tar");
    ok(store, ["save", "busybox", "-o", oci]);
    ok(store, ["save", "--format", "docker", "busybox", "-o", docker]);
    const original = inspect(store, "busybox");

    const fromOci = tempDir("load-oci");
    expect(ok(fromOci, ["load", "-i", oci])).toBe("Loaded image: docker.io/library/busybox:latest\n");
    expect(inspect(fromOci, "busybox").descriptor.digest).toBe(original.descriptor.digest);

    const fromDocker = tempDir("load-docker");
    const input = readFileSync(docker);
    const viaStdin = spawnSync(tbuildBin, ["load"], {
      env: { ...process.env, TBUILD_ROOT: fromDocker },
      input,
    });
    expect(viaStdin.stdout.toString()).toBe("Loaded image: docker.io/library/busybox:latest\n");
    const loaded = inspect(fromDocker, "busybox");
    expect(loaded.manifest.config.digest).toBe(original.manifest.config.digest);
    expect(loaded.manifest.layers[0]!.mediaType).toBe("application/vnd.oci.image.layer.v1.tar");
    expect(loaded.manifest.layers[0]!.digest).toBe(original.config.rootfs.diff_ids[0]);
    expect(schemaErrors("manifest", loaded.manifest)).toEqual([]);
    // And what was loaded saves and loads again.
    const again = path.join(work, "again.tar");
    ok(fromDocker, ["save", "busybox", "-o", again]);
    const third = tempDir("load-again");
    ok(third, ["load", "-i", again]);
    expect(inspect(third, "busybox").descriptor.digest).toBe(loaded.descriptor.digest);
  });

  it("loads archives skopeo wrote, naming unnamed ones with --name", () => {
    const skopeoOci = path.join(work, "skopeo-oci.tar");
    const skopeoDocker = path.join(work, "skopeo-docker.tar");
    const layoutRef = `oci:${store}:docker.io/library/busybox:latest`;
    execFileSync("skopeo", ["copy", layoutRef, `oci-archive:${skopeoOci}`], { stdio: "pipe" });
    execFileSync("skopeo", ["copy", layoutRef, `docker-archive:${skopeoDocker}:example.com/x/y:2`], {
      stdio: "pipe",
    });
    const root = tempDir("load-skopeo");
    const unnamed = run(root, ["load", "-i", skopeoOci]);
    expect(unnamed.status).toBe(1);
    expect(unnamed.stderr).toMatch(
      /holds sha256:[0-9a-f]{64} without a name, which the store cannot keep: load it again with --name NAME/,
    );
    expect(ok(root, ["load", "-i", skopeoOci, "--name", "from-skopeo"])).toBe(
      "Loaded image: docker.io/library/from-skopeo:latest\n",
    );
    expect(ok(root, ["load", "-i", skopeoDocker])).toBe("Loaded image: example.com/x/y:2\n");
    expect(inspect(root, "from-skopeo").descriptor.digest).toBe(inspect(store, "busybox").descriptor.digest);
  });

  it("refuses a damaged archive, naming the digest, and names nothing", () => {
    const archive = path.join(work, "damaged.tar");
    ok(store, ["save", "busybox", "-o", archive]);
    const layout = extract(archive);
    const layer = inspect(store, "busybox").manifest.layers[0]!.digest;
    const layerFile = path.join(layout, "blobs", layer.replace(":", "/"));
    const bytes = readFileSync(layerFile);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
    writeFileSync(layerFile, bytes);
    const damaged = path.join(work, "damaged2.tar");
    execFileSync("tar", ["-cf", damaged, "-C", layout, "oci-layout", "blobs", "index.json"]);

    const root = tempDir("load-damaged");
    const result = run(root, ["load", "-i", damaged]);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`digest mismatch: expected ${layer}`);
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(JSON.parse(ok(root, ["images", "--format", "json"]))).toEqual([]);
    expect(readdirSync(path.join(root, "blobs/sha256"))).not.toContain(layer.slice(7));
  });

  it("says what is wrong with what it cannot save or load, leaving no partial file", () => {
    const notTar = path.join(work, "not.tar");
    writeFileSync(notTar, "plain text, not an archive\n".repeat(40));
    const cases: [string[], number, RegExp][] = [
      [
        ["save", "nothing-here", "-o", path.join(work, "x.tar")],
        1,
        /image docker\.io\/library\/nothing-here:latest is not in the local store: run 'tbuild images'/,
      ],
      [
        ["save", "busybox", "--format", "zip", "-o", path.join(work, "x.tar")],
        2,
        /--format must be oci or docker/,
      ],
      [
        ["save", "busybox", "-o", path.join(work, "no/such/dir/x.tar")],
        1,
        /cannot write .*x\.tar \(tbuild save\): ENOENT/,
      ],
      [["load", "-i", path.join(work, "missing.tar")], 1, /cannot read .*missing\.tar \(ENOENT\)/],
      [["load", "-i", notTar], 1, /not\.tar is not a valid tar archive/],
    ];
    for (const [args, status, message] of cases) {
      const result = run(store, args);
      expect(result.status, args.join(" ")).toBe(status);
      expect(result.stderr).toMatch(message);
    }
    expect(readdirSync(work).filter((f) => f.startsWith("x.tar") || f.startsWith(".x.tar"))).toEqual([]);

    const emptyTar = path.join(work, "empty-dir.tar");
    const emptyDir = path.join(work, "empty-dir");
    mkdirSync(emptyDir);
    execFileSync("tar", ["-cf", emptyTar, "-C", emptyDir, "."]);
    expect(run(store, ["load", "-i", emptyTar]).stderr).toMatch(
      /is neither an OCI archive \(oci-layout and index\.json\) nor a docker archive \(manifest\.json\)/,
    );
  });
});
