import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type ImageConfig, type Index, type Manifest, MediaType } from "../../oci/spec.js";
import { openStore } from "../../oci/store/index.js";
import { tbuildBin, tbuildInStore, tbuildInStoreOk } from "../helpers/cli.js";
import { busyboxRootfs, FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

const run = (root: string, args: string[]) => tbuildInStore(root, args, FIXED_EPOCH);

const ok = (root: string, args: string[]) => tbuildInStoreOk(root, args, FIXED_EPOCH);

interface Summary {
  name: string;
  repository: string;
  tag: string;
  digest: string;
  id: string;
  size: number;
  created?: string;
  platforms: string[];
}

function images(root: string): Summary[] {
  return JSON.parse(ok(root, ["images", "--format", "json"]));
}

describe("tbuild images, tag, inspect, rmi", () => {
  let root: string;
  let digest: string;
  beforeAll(async () => {
    root = tempDir("image-commands");
    await importBusybox(root, "busybox");
    digest = images(root)[0]!.digest;
  });

  it("lists images as a table and as JSON", () => {
    const [busybox] = images(root);
    expect(busybox).toMatchObject({
      name: "docker.io/library/busybox:latest",
      repository: "busybox",
      tag: "latest",
      id: digest.slice(7, 19),
      created: "2000-01-01T00:00:00Z",
      platforms: [expect.stringMatching(/^linux\//)],
    });
    expect(busybox!.size).toBeGreaterThan(500_000);
    const table = ok(root, ["images"]).split("\n");
    expect(table[0]).toMatch(/^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE\s+PLATFORMS$/);
    expect(table[1]).toMatch(
      new RegExp(
        `^busybox\\s+latest\\s+${digest.slice(7, 19)}\\s+\\d+ years ago\\s+[0-9.]+MB\\s+linux/amd64$`,
      ),
    );
  });

  it("tags by name or by image ID, and inspect shows descriptor, manifest and config", () => {
    ok(root, ["tag", "busybox", "registry.example:5000/tools/bb:v1"]);
    ok(root, ["tag", digest.slice(7, 15), "by-id"]);
    expect(images(root).map((i) => i.name)).toEqual([
      "docker.io/library/busybox:latest",
      "docker.io/library/by-id:latest",
      "registry.example:5000/tools/bb:v1",
    ]);
    const shown = JSON.parse(ok(root, ["inspect", "registry.example:5000/tools/bb:v1"])) as {
      name: string;
      descriptor: { digest: string; mediaType: string };
      manifest: Manifest;
      config: ImageConfig;
    };
    expect(shown.name).toBe("registry.example:5000/tools/bb:v1");
    expect(shown.descriptor.digest).toBe(digest);
    expect(shown.manifest.layers).toHaveLength(1);
    expect(shown.config.config.Cmd).toEqual(["sh"]);
    expect(JSON.parse(ok(root, ["inspect", `busybox@${digest}`])).descriptor.digest).toBe(digest);
  });

  it("says which image is unknown and how to find one; refuses invalid names", () => {
    const unknown = run(root, ["inspect", "alpine:3"]);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toBe(
      "ERROR: image docker.io/library/alpine:3 is not in the local store: run 'tbuild images' to list the images there, or 'tbuild pull docker.io/library/alpine:3' to fetch it\n",
    );
    const invalid = run(root, ["tag", "busybox", "UPPERCASE"]);
    expect(invalid.status).toBe(1);
    expect(invalid.stderr).toMatch(/^ERROR: invalid image reference "UPPERCASE": .*lowercase/);
    expect(run(root, ["rmi", "nope"]).stderr).toMatch(
      /image docker\.io\/library\/nope:latest is not in the local store/,
    );
    expect(run(root, ["tag", "busybox"]).status).toBe(2);
  });

  it("removes names, then the blobs no image needs; an ID with several names needs --force", () => {
    const local = tempDir("rmi");
    ok(local, ["import", "--change", "CMD sh", busyboxRootfsSync(), "one"]);
    ok(local, ["tag", "one", "two"]);
    const id = images(local)[0]!.id;
    const blobs = () => readdirSync(path.join(local, "blobs/sha256")).length;
    expect(blobs()).toBe(3);
    const refused = run(local, ["rmi", id]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(
      `image ${id} has several names (docker.io/library/one:latest, docker.io/library/two:latest): remove them by name, or all of them with --force`,
    );
    expect(ok(local, ["rmi", "two"])).toBe("Untagged: docker.io/library/two:latest\n");
    expect(blobs()).toBe(3);
    expect(ok(local, ["rmi", id])).toMatch(
      /^Untagged: docker\.io\/library\/one:latest\nDeleted: 3 blobs, [0-9.]+MB freed\n$/,
    );
    expect(blobs()).toBe(0);
    expect(images(local)).toEqual([]);
  });

  it("reads a store it cannot write, and says so when asked to change it", () => {
    // A read-only bind mount of the store, in a private mount namespace that ends with the shell.
    const script = `
      mount --bind -o ro "$TBUILD_ROOT" "$TBUILD_ROOT" || exit 99
      "$TBUILD" images --format json | tr -d ' \\n'; echo
      "$TBUILD" tag busybox elsewhere; echo "tag=$?"
    `;
    const result = spawnSync("unshare", ["-m", "sh", "-c", script], {
      env: { ...process.env, TBUILD_ROOT: root, TBUILD: tbuildBin },
      encoding: "utf8",
    });
    expect(result.stdout).toContain('"name":"docker.io/library/busybox:latest"');
    expect(result.stdout).toContain("tag=1");
    expect(result.stderr).toContain(
      `cannot change the image store ${root} (EROFS); set TBUILD_ROOT to a store you can write`,
    );
  });

  it("shows and saves a multi-platform index by platform", async () => {
    const local = tempDir("multi");
    const rootfs = await busyboxRootfs();
    ok(local, ["import", rootfs, "amd", "--platform", "linux/amd64"]);
    ok(local, ["import", rootfs, "arm", "--platform", "linux/arm64/v8"]);
    const store = await openStore(local);
    const amd = (await store.images.get("amd"))!.descriptor;
    const arm = (await store.images.get("arm"))!.descriptor;
    const index: Index = {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [
        { ...amd, platform: { os: "linux", architecture: "amd64" } },
        { ...arm, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
      ],
    };
    const written = await store.content.writeBytes(Buffer.from(JSON.stringify(index)));
    await store.images.put("multi", { mediaType: MediaType.ociIndex, ...written });
    ok(local, ["rmi", "amd", "arm"]);

    const summary = images(local).find((i) => i.name === "docker.io/library/multi:latest")!;
    // Import normalizes linux/arm64/v8 to linux/arm64, as containerd does.
    expect(summary.platforms).toEqual(["linux/amd64", "linux/arm64"]);
    const shown = JSON.parse(ok(local, ["inspect", "--platform", "linux/arm64", "multi"]));
    expect(shown.index.manifests).toHaveLength(2);
    expect(shown.platformDescriptor.digest).toBe(arm.digest);
    expect(shown.config.architecture).toBe("arm64");
    expect(run(local, ["inspect", "--platform", "linux/s390x", "multi"]).stderr).toMatch(
      /docker\.io\/library\/multi:latest has no image for linux\/s390x \(platforms: linux\/amd64, linux\/arm64(\/v8)?\); pick one with --platform/,
    );

    const archive = path.join(tempDir("multi-archives"), "multi.tar");
    ok(local, ["save", "multi", "-o", archive]);
    const other = tempDir("multi-load");
    ok(other, ["load", "-i", archive]);
    expect(images(other)[0]!.digest).toBe(summary.digest);
    const dockerArchive = `${archive}.docker`;
    ok(local, ["save", "--format", "docker", "--platform", "linux/arm64", "multi", "-o", dockerArchive]);
    const fromDocker = tempDir("multi-docker");
    ok(fromDocker, ["load", "-i", dockerArchive]);
    expect(JSON.parse(ok(fromDocker, ["inspect", "multi"])).config.architecture).toBe("arm64");
  });
});

/** The rootfs path, once `beforeAll` has built it. */
let rootfsPath = "";
beforeAll(async () => {
  rootfsPath = await busyboxRootfs();
});
function busyboxRootfsSync(): string {
  return rootfsPath;
}
