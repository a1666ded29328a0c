/**
 * A damaged entry in the local image store (a manifest blob that is `null`, a name whose manifest
 * is gone, a config that is not JSON: written by an older tbuild, another tool, or a disk) must not
 * take the rest down: `tbuild images` lists the others and names the bad one on stderr, and
 * `tbuild rmi` removes it.
 */
import { createHash } from "node:crypto";
import { chownSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { userIds } from "../helpers/judges.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "./harness.js";

const world = hostileWorld();

/** Writes `bytes` as a blob of the store (owned as the store is), returns its digest. */
function writeBlob(mode: Mode, store: string, bytes: string): string {
  const hex = createHash("sha256").update(bytes).digest("hex");
  const file = path.join(store, "blobs", "sha256", hex);
  writeFileSync(file, bytes);
  if (mode === "rootless") {
    const { uid, gid } = userIds(ROOTLESS_USER);
    chownSync(file, uid, gid);
  }
  return `sha256:${hex}`;
}

/** Names `digest` in the store's index.json behind tbuild's back. */
function addEntry(store: string, name: string, digest: string, size: number): void {
  const file = path.join(store, "index.json");
  const index = JSON.parse(readFileSync(file, "utf8")) as { manifests: unknown[] };
  index.manifests.push({
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    digest,
    size,
    annotations: { "org.opencontainers.image.ref.name": name },
  });
  writeFileSync(file, JSON.stringify(index));
}

describe.each(MODES)("damaged entries of the local store (%s)", (mode) => {
  it("images lists the good ones and names each bad one; rmi removes them; the store stays usable", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const nullManifest = writeBlob(mode, store, "null");
    addEntry(store, "docker.io/library/bad:null", nullManifest, 4);
    addEntry(store, "docker.io/library/bad:gone", `sha256:${"0".repeat(64)}`, 100);
    const config = writeBlob(mode, store, '{"os": ');
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 7 },
      layers: [],
    });
    addEntry(store, "docker.io/library/bad:config", writeBlob(mode, store, manifest), manifest.length);

    const images = world.tbuild(mode, store, ["images"]);
    expect(images.status, images.stderr).toBe(0);
    expect(images.stdout).toContain("busybox");
    expect(images.stdout).not.toContain("bad");
    const warnings = images.stderr.trim().split("\n");
    expect(warnings).toHaveLength(3);
    for (const tag of ["null", "gone", "config"]) {
      expect(
        warnings.find((line) => line.includes(`docker.io/library/bad:${tag} is not listed`)),
      ).toBeDefined();
    }
    expect(images.stderr).toContain("its manifest is null, not a JSON object");
    expect(images.stderr).toContain("its config is not JSON");

    const json = world.tbuild(mode, store, ["images", "--format", "json"]);
    expect(json.status, json.stderr).toBe(0);
    expect((JSON.parse(json.stdout) as { name: string }[]).map((i) => i.name)).toEqual([
      "docker.io/library/busybox:latest",
    ]);

    const rmi = world.tbuild(mode, store, ["rmi", "bad:null", "bad:gone", "bad:config"]);
    expect(rmi.status, rmi.stderr).toBe(0);
    const after = world.tbuild(mode, store, ["images"]);
    expect(after.stderr).toBe("");
    canary.expectUntouched(images.stdout, images.stderr);
    world.expectStoreUsable(mode, store);
  }, 120_000);
});
