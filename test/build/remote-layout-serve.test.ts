/**
 * The client's half of a remote build's `oci-layout://` context (build/remote-layout.ts), called as
 * a worker calls it, on a real layout directory: a two-platform index that a build of several
 * platforms on two workers reads at once. The blobs the client may serve are found by reading the
 * layout's index and manifests; two workers asking at the same time must each find theirs.
 */
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { layoutHandlers, readClientLayout } from "../../build/remote-layout.js";
import type { IncomingCall } from "../../worker/remote/protocol.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** A layout whose index.json names an index of one manifest per platform; the manifests' digests. */
function twoPlatformLayout(): { dir: string; manifests: string[] } {
  const dir = tempDir("remote-layout-serve");
  const blobs = path.join(dir, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const blob = (text: string) => {
    const digest = `sha256:${createHash("sha256").update(text).digest("hex")}`;
    writeFileSync(path.join(blobs, digest.slice(7)), text);
    return { digest, size: Buffer.byteLength(text) };
  };
  const manifests = ["amd64", "arm64"].map((architecture) => {
    const config = blob(
      JSON.stringify({ architecture, os: "linux", rootfs: { type: "layers", diff_ids: [] } }),
    );
    const manifest = blob(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: [],
      }),
    );
    return {
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      ...manifest,
      platform: { architecture, os: "linux" },
    };
  });
  const index = blob(
    JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }),
  );
  writeFileSync(path.join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    path.join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: "application/vnd.oci.image.index.v1+json", ...index }],
    }),
  );
  return { dir, manifests: manifests.map((m) => m.digest) };
}

describe("a layout served to workers", () => {
  it("two workers asking at once which manifest the layout holds each find theirs", async () => {
    const { dir, manifests } = twoPlatformLayout();
    const layout = await readClientLayout("tools", dir, "/");
    const has = layoutHandlers([layout])["layout-has"]!;
    const ask = (digest: string) =>
      has({ context: "tools", digests: [digest] }, {} as IncomingCall) as Promise<{ held: string[] }>;
    const answers = await Promise.all(manifests.map(ask));
    expect(answers).toEqual(manifests.map((digest) => ({ held: [digest] })));
  });
});
