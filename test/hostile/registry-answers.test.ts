/**
 * A registry's answers are input like any other: a manifest that is not one, a config that does not
 * match it, an index of indexes, a layer that is not what its media type and diff_id say. Each pull
 * of such an image fails with one line naming the image and what is wrong, stores no name, and
 * leaves the store as usable as before. The registry is a real server on a loopback socket that
 * answers whatever each case hands it.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostPlatform } from "../../oci/platform.js";
import { type DistributionServer, serveImage, startDistributionServer } from "./distribution-server.js";
import { hostileWorld, MODES } from "./harness.js";
import {
  busyboxLayer,
  type ImageParts,
  imageBlobs,
  type LayerFile,
  writeBytesBlob,
  writeLayer,
} from "./layer-images.js";
import { tbuildAsync } from "./run-async.js";

const world = hostileWorld();
let server: DistributionServer;
let dir = "";
let base: LayerFile;

beforeAll(async () => {
  server = await startDistributionServer();
  dir = world.dir("answers");
  base = await busyboxLayer(dir);
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const digestOf = (data: Buffer | string) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const platform = () => ({ os: "linux", architecture: hostPlatform().architecture });

let counter = 0;
/** Serves an image of `parts` (a manifest and config made from them) as `repository:1`. */
function serve(repository: string, parts: ImageParts, options: { text?: string; blobs?: LayerFile[] } = {}) {
  const made = imageBlobs(path.join(dir, `${repository}-${++counter}`), parts);
  serveImage(
    server,
    repository,
    "1",
    { ...made.manifest, ...(options.text !== undefined ? { text: options.text } : {}) },
    [made.config, ...(options.blobs ?? parts.layers)],
  );
  return made;
}

/** A gzip layer of a tar whose single header has a size field no tar reader can decode. */
function malformedHeaderLayer(file: string): LayerFile {
  const tar = Buffer.alloc(3 * 512);
  tar.write("file", 0);
  tar.write("0000644\0", 100);
  tar[124] = 0x81; // base-256 numbers start with 0x80 or 0xff
  tar.write("0", 156);
  const blob = writeBytesBlob(file, gzipSync(tar));
  return { ...blob, diffId: digestOf(tar), mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" };
}

interface AnswerCase {
  name: string;
  /** Serves the bad answer for `repository:1`. */
  serve(repository: string): Promise<void> | void;
  /** What the one line of the error must say (beside the image's name). */
  says: string;
  /**
   * Refused from the manifest, config or index alone, before any layer is fetched or unpacked:
   * parsing them is the same code as root and rootless, so the case runs as root only.
   */
  rootOnly?: true;
}

const cases: AnswerCase[] = [
  {
    name: "a manifest that is not JSON",
    serve: (repo) => void serve(repo, { layers: [base] }, { text: "<html>sign in first</html>" }),
    says: "sent an invalid image: its manifest is not JSON",
    rootOnly: true,
  },
  {
    name: "a manifest that is null",
    serve: (repo) => void serve(repo, { layers: [base] }, { text: "null" }),
    says: "sent an invalid image: its manifest is null, not a JSON object",
    rootOnly: true,
  },
  {
    name: "an empty manifest",
    serve: (repo) => void serve(repo, { layers: [base] }, { text: "" }),
    says: "sent an invalid image: its manifest is empty",
    rootOnly: true,
  },
  {
    name: "a manifest without layers",
    serve: (repo) =>
      void serve(repo, {
        layers: [base],
        manifestText: (m) => JSON.stringify({ ...m, layers: undefined }),
      }),
    says: "sent an invalid image: its manifest has no layers list",
    rootOnly: true,
  },
  {
    name: "a manifest whose layer has no digest",
    serve: (repo) =>
      void serve(repo, {
        layers: [base],
        manifestText: (m) => JSON.stringify({ ...m, layers: [{ mediaType: base.mediaType, size: 1 }] }),
      }),
    says: "sent an invalid image: its manifest's layer 1 has an invalid digest undefined",
    rootOnly: true,
  },
  {
    name: "more diff_ids than layers",
    serve: (repo) => void serve(repo, { layers: [base], diffIds: [base.diffId, base.diffId] }),
    says: "sent an invalid image: its manifest lists 1 layers but its config 2 diff_ids",
    rootOnly: true,
  },
  {
    name: "a config that is not JSON",
    serve: (repo) => void serve(repo, { layers: [base], configText: '{"os": "linux",' }),
    says: "sent an invalid image: its config is not JSON",
    rootOnly: true,
  },
  {
    name: "a config whose diff_ids are not a list",
    serve: (repo) =>
      void serve(repo, {
        layers: [base],
        configText: JSON.stringify({
          ...platform(),
          rootfs: { type: "layers", diff_ids: base.diffId },
        }),
      }),
    says: "sent an invalid image: its config has no rootfs.diff_ids list",
    rootOnly: true,
  },
  {
    name: "a config whose Env is not a list of strings",
    serve: (repo) =>
      void serve(repo, {
        layers: [base],
        configText: JSON.stringify({
          ...platform(),
          config: { Env: "PATH=/bin" },
          rootfs: { type: "layers", diff_ids: [base.diffId] },
        }),
      }),
    says: "sent an invalid image: its config's Env is not a list of strings",
    rootOnly: true,
  },
  {
    name: "an index whose only image for the platform is another index",
    serve: (repo) => {
      const image = serve(repo, { layers: [base] });
      const inner = JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          {
            mediaType: OCI_MANIFEST,
            digest: image.manifest.digest,
            size: image.manifest.size,
            platform: platform(),
          },
        ],
      });
      const outer = JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          { mediaType: OCI_INDEX, digest: digestOf(inner), size: inner.length, platform: platform() },
        ],
      });
      server.manifests.set(`${repo}:${digestOf(inner)}`, { body: inner, type: OCI_INDEX });
      server.manifests.set(`${repo}:1`, { body: outer, type: OCI_INDEX });
    },
    says: "its index lists another index",
    rootOnly: true,
  },
  {
    name: "an index whose image for the platform turns out to be an index",
    serve: (repo) => {
      const inner = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
      const outer = JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [
          { mediaType: OCI_MANIFEST, digest: digestOf(inner), size: inner.length, platform: platform() },
        ],
      });
      server.manifests.set(`${repo}:${digestOf(inner)}`, { body: inner, type: OCI_INDEX });
      server.manifests.set(`${repo}:1`, { body: outer, type: OCI_INDEX });
    },
    says: "is another index; an index inside an index is not supported yet",
    rootOnly: true,
  },
  {
    name: "an index that points back at itself",
    serve: (repo) => {
      const child = digestOf("whatever the registry was asked for");
      const outer = JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: [{ mediaType: OCI_MANIFEST, digest: child, size: 10, platform: platform() }],
      });
      // Whatever digest is asked for, the same index comes back: a cycle, were it believed.
      server.manifests.set(`${repo}:${child}`, { body: outer, type: OCI_INDEX });
      server.manifests.set(`${repo}:1`, { body: outer, type: OCI_INDEX });
    },
    says: "digest mismatch",
    rootOnly: true,
  },
  {
    name: "a layer typed gzip that is a plain tar",
    serve: async (repo) => {
      const plain = await writeLayer(path.join(dir, `${repo}-plain.tar`), [{ path: "a", content: "a\n" }], {
        gzip: false,
      });
      serve(repo, { layers: [base, { ...plain, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" }] });
    },
    says: "which is typed application/vnd.oci.image.layer.v1.tar+gzip but is not gzip data",
  },
  {
    name: "a layer whose gzip stream is cut short",
    serve: async (repo) => {
      const whole = await writeLayer(path.join(dir, `${repo}-whole.tar.gz`), [
        { path: "big", content: "x".repeat(300_000) },
      ]);
      const cut = writeBytesBlob(
        path.join(dir, `${repo}-cut.tar.gz`),
        readFileSync(whole.file).subarray(0, 200),
      );
      serve(repo, { layers: [base, { ...whole, ...cut }] });
    },
    says: "which ends in the middle of its gzip stream",
  },
  {
    name: "a layer whose tar header cannot be decoded",
    serve: (repo) =>
      void serve(repo, { layers: [base, malformedHeaderLayer(path.join(dir, `${repo}-bad.tar.gz`))] }),
    says: "which is not a valid tar archive: a header is malformed (invalid base256 encoding)",
  },
  {
    name: "a layer that does not uncompress to its diff_id",
    serve: (repo) => void serve(repo, { layers: [base], diffIds: [digestOf("another tar")] }),
    says: `which uncompresses to ${"sha256:"}`,
  },
  {
    name: "a blob whose bytes do not match its digest",
    serve: async (repo) => {
      const layer = await writeLayer(path.join(dir, `${repo}-layer.tar.gz`), [{ path: "a", content: "a\n" }]);
      const other = await writeLayer(path.join(dir, `${repo}-other.tar.gz`), [{ path: "b", content: "b\n" }]);
      serve(
        repo,
        { layers: [base, layer] },
        { blobs: [base, { ...layer, file: other.file, size: other.size }] },
      );
    },
    says: "digest mismatch",
  },
];

describe.each(MODES)("a registry's invalid answers (%s)", (mode) => {
  it.each(cases.filter((answer) => mode === "root" || !answer.rootOnly))(
    "$name: one line naming the image, nothing stored, the store usable",
    async (answer) => {
      const repository = `${mode}-${answer.name.replace(/[^a-z0-9]+/g, "-")}`.replace(/-+$/, "");
      await answer.serve(repository);
      const store = world.store(mode);
      const canary = world.canary(mode);
      const pull = await tbuildAsync(world, mode, store, ["pull", `${server.host}/${repository}:1`]);
      expect(pull.status, pull.stderr).toBe(1);
      expect(pull.stderr).toContain(answer.says);
      expect(pull.stderr).toContain(repository);
      expect(pull.stderr.trim().split("\n"), "more than one line").toHaveLength(1);
      const images = world.tbuild(mode, store, ["images"]);
      expect(images.status, images.stderr).toBe(0);
      expect(images.stdout).not.toContain(repository);
      canary.expectUntouched(pull.stdout, pull.stderr);
      world.expectStoreUsable(mode, store);
    },
    120_000,
  );

  it("a valid image from the same server pulls (the cases fail for what they serve, not for the server)", async () => {
    const repository = `${mode}-valid`;
    serve(repository, { layers: [base] });
    const store = world.store(mode);
    const pull = await tbuildAsync(world, mode, store, ["pull", `${server.host}/${repository}:1`]);
    expect(pull.status, pull.stderr).toBe(0);
    const ran = world.tbuild(mode, store, [
      "run",
      "--rm",
      `${server.host}/${repository}:1`,
      "echo",
      "pulled",
    ]);
    expect(ran.stdout, ran.stderr).toBe("pulled\n");
  }, 120_000);
});
