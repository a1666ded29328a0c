/**
 * A hostile OCI layout on the client, given to a build on a worker (`--build-context
 * NAME=oci-layout://DIR --worker cmd://…`, the client and the worker as the same user: root, or
 * the rootless test user). The client serves the layout's blobs to the worker by need; an attacker
 * who shapes the layout (a downloaded artifact) wants it to send other files of the client's
 * machine: through symbolic links (a blob, the blobs directory, index.json), through a blob whose
 * content is not its name, or to hang it on a FIFO. The strongest such attacker is assumed: one
 * who knows the digest of the file it is after. And a hostile worker asks for blobs the build's
 * image does not name.
 *
 * Every byte the client sends the worker is copied to a file (`tee`): no secret may be in it.
 * Each refusal is one line naming the layout; the canary is untouched, both stores stay usable.
 */

import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tbuildBin } from "../helpers/cli.js";
import { type Canary, hostileWorld, MODES, type Mode } from "./harness.js";
import { type BlobFile, imageBlobs, type LayerFile, writeBytesBlob, writeLayer } from "./layer-images.js";

const world = hostileWorld();
const ROOT = path.resolve(path.dirname(tbuildBin), "..");

const sha256 = (bytes: Buffer | string) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/**
 * A layout of one image (a layer holding /hello), named `good:1`, in a new directory readable by
 * every user, as `tbuild save` and skopeo write one; `shape` may rewrite the image's manifest first
 * (`layers`: the descriptors it lists) and add files before the layout is made readable.
 */
async function layout(
  mode: Mode,
  shape: {
    layers?: (layer: LayerFile) => Array<{ mediaType: string; digest: string; size: number }>;
    diffIds?: string[];
    files?: (dir: string, blobs: string, layer: LayerFile) => void;
  } = {},
): Promise<{ dir: string; blobs: string; layer: LayerFile; manifest: BlobFile; config: BlobFile }> {
  const dir = world.dir("layout", mode);
  const parts = world.dir("parts", mode);
  const blobs = path.join(dir, "blobs", "sha256");
  mkdirSync(blobs, { recursive: true });
  const layer = await writeLayer(path.join(parts, "layer.tar.gz"), [{ path: "hello", content: "hello\n" }]);
  const { config, manifest } = imageBlobs(path.join(parts, "json"), {
    layers: [layer],
    ...(shape.diffIds ? { diffIds: shape.diffIds } : {}),
    ...(shape.layers ? { manifestText: (m) => JSON.stringify({ ...m, layers: shape.layers!(layer) }) } : {}),
  });
  for (const blob of [config, manifest, layer])
    copyFileSync(blob.file, path.join(blobs, blob.digest.slice(7)));
  writeFileSync(path.join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    path.join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: manifest.digest,
          size: manifest.size,
          annotations: { "org.opencontainers.image.ref.name": "good:1" },
        },
      ],
    }),
  );
  shape.files?.(dir, blobs, layer);
  execFileSync("chmod", ["-R", "a+rX", dir]);
  return { dir, blobs, layer, manifest, config };
}

/** A directory elsewhere on the client's machine, holding a secret file of its own (not the canary's). */
function elsewhere(mode: Mode): { dir: string; secret: string } {
  const dir = world.dir("elsewhere", mode);
  const secret = `elsewhere-secret-${randomBytes(12).toString("hex")}\n`;
  writeFileSync(path.join(dir, "secret"), secret, { mode: 0o600 });
  if (mode === "rootless") execFileSync("chown", ["-R", "tbuild-test:", dir]);
  return { dir, secret };
}

/** A build on a `cmd://` worker using `layoutDir` as `evil`; every byte sent to the worker is kept. */
function remoteBuild(mode: Mode, layoutDir: string, worker = "") {
  const client = world.store(mode);
  const workerStore = world.store(mode);
  const wire = path.join(world.dir("wire", mode), "sent");
  const ctx = world.context({ Dockerfile: "FROM busybox\nCOPY --from=evil / /evil/\nRUN cat /evil/hello\n" });
  const command = worker || `TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`;
  const built = world.tbuild(
    mode,
    client,
    [
      "build",
      "--progress=plain",
      "--worker",
      `cmd://tee -a ${wire} | ${command}`,
      "--build-context",
      `evil=oci-layout://${layoutDir}`,
      "-t",
      "evil:out",
      ctx,
    ],
    { timeoutMs: 120_000 },
  );
  const sent = (() => {
    try {
      return readFileSync(wire);
    } catch {
      return Buffer.alloc(0);
    }
  })();
  return { built, sent, client, workerStore };
}

/** The build failed with one line, naming the layout, matching `pattern`; nothing else was said wrong. */
function expectRefused(built: { status: number | null; stderr: string }, dir: string, pattern: RegExp) {
  expect(built.status, built.stderr).toBe(1);
  const errors = built.stderr.split("\n").filter((line) => line.startsWith("ERROR:"));
  expect(errors, built.stderr).toHaveLength(1);
  expect(errors[0]).toContain(`--build-context evil: the OCI layout ${dir}`);
  expect(errors[0]).toMatch(pattern);
}

function expectAfter(mode: Mode, canary: Canary, runs: ReturnType<typeof remoteBuild>[]) {
  canary.expectUntouched(...runs.flatMap(({ built, sent }) => [built.stdout, built.stderr, sent]));
  const last = runs.at(-1)!;
  world.expectStoreUsable(mode, last.workerStore);
  world.expectStoreUsable(mode, last.client);
}

describe.each(MODES)("a hostile OCI layout served to a remote worker (%s)", (mode) => {
  it("links in the layout never lead the client to send another file of its machine, even one whose digest the layout names", async () => {
    const canary = world.canary(mode);
    const secret = readFileSync(path.join(canary.dir, "secret"));
    const other = elsewhere(mode);
    // The layer's blob is a link to the canary's secret, which the manifest names by its digest.
    const linkedBlob = await layout(mode, {
      layers: () => [
        {
          mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
          digest: sha256(secret),
          size: secret.length,
        },
      ],
      files: (_dir, blobs) =>
        symlinkSync(
          path.relative(blobs, path.join(canary.dir, "secret")),
          path.join(blobs, sha256(secret).slice(7)),
        ),
    });
    // The whole blobs directory is a link elsewhere, where the image's blobs are, the secret among them.
    const linkedDir = await layout(mode, {
      layers: () => [
        {
          mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
          digest: sha256(other.secret),
          size: other.secret.length,
        },
      ],
      files: (dir, blobs) => {
        const away = path.join(other.dir, "sha256");
        execFileSync("cp", ["-a", blobs, away]);
        writeFileSync(path.join(away, sha256(other.secret).slice(7)), other.secret);
        execFileSync("rm", ["-r", path.join(dir, "blobs")]);
        symlinkSync(other.dir, path.join(dir, "blobs"));
      },
    });
    // index.json is a link to a file elsewhere.
    const linkedIndex = await layout(mode, {
      files: (dir) => {
        execFileSync("rm", [path.join(dir, "index.json")]);
        symlinkSync(path.join(other.dir, "secret"), path.join(dir, "index.json"));
      },
    });

    const runs = [
      remoteBuild(mode, linkedBlob.dir),
      remoteBuild(mode, linkedDir.dir),
      remoteBuild(mode, linkedIndex.dir),
    ];
    expectRefused(runs[0]!.built, linkedBlob.dir, /has blobs\/sha256\/[0-9a-f]{64} as a symbolic link/);
    expectRefused(
      runs[1]!.built,
      linkedDir.dir,
      /has blobs\/sha256\/[0-9a-f]{64} as a symbolic link \(or under one\)/,
    );
    expectRefused(runs[2]!.built, linkedIndex.dir, /has index\.json as a symbolic link/);
    // The index.json refusal came before the worker was started: nothing was sent.
    expect(runs[2]!.sent.length).toBe(0);
    for (const { built, sent } of runs) {
      for (const output of [built.stdout, built.stderr, sent])
        expect(output.includes(other.secret.trim())).toBe(false);
    }
    expectAfter(mode, canary, runs);
  }, 300_000);

  it("a blob that is not what its name says, a FIFO, a layer unlike its diff_id: one line naming the layout, the bytes never sent", async () => {
    const canary = world.canary(mode);
    const secret = readFileSync(path.join(canary.dir, "secret"));
    // A blob of the right size named by another content's digest, holding a copy of the secret.
    const decoy = Buffer.alloc(secret.length, "x");
    const misnamed = await layout(mode, {
      layers: () => [
        {
          mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
          digest: sha256(decoy),
          size: decoy.length,
        },
      ],
      files: (_dir, blobs) => writeFileSync(path.join(blobs, sha256(decoy).slice(7)), secret),
    });
    // A FIFO where a layer's blob is: read, it would block forever.
    const fifo = await layout(mode, {
      files: (_dir, blobs, layer) => {
        const file = path.join(blobs, layer.digest.slice(7));
        execFileSync("rm", [file]);
        execFileSync("mkfifo", [file]);
      },
    });
    // A layer whose config says another diff_id: damaged, or made to poison a cache.
    const lying = await layout(mode, { diffIds: [sha256("not this layer")] });

    const runs = [remoteBuild(mode, misnamed.dir), remoteBuild(mode, fifo.dir), remoteBuild(mode, lying.dir)];
    expectRefused(
      runs[0]!.built,
      misnamed.dir,
      /whose content does not hash to its name: the layout is damaged/,
    );
    expectRefused(runs[1]!.built, fifo.dir, /has blobs\/sha256\/[0-9a-f]{64}, which is not a regular file/);
    expectRefused(
      runs[2]!.built,
      lying.dir,
      /: layer sha256:[0-9a-f]{64} uncompresses to sha256:[0-9a-f]{64}, not to its diff_id sha256:/,
    );
    expectAfter(mode, canary, runs);
  }, 300_000);

  it("a worker asking for a blob the build's image does not name gets nothing, nor learns the layout holds it", async () => {
    const canary = world.canary(mode);
    const secret = readFileSync(path.join(canary.dir, "secret"));
    // A file of the layout that no image of it names: the secret, under its own digest.
    const holding = await layout(mode, {
      files: (_dir, blobs) => writeBytesBlob(path.join(blobs, sha256(secret).slice(7)), secret),
    });
    const node = path.join(ROOT, "node_modules", "node", "bin", "node");
    const report = path.join(world.dir("thief", mode), "report.json");
    const climbing = holding.layer.digest.replace("sha256:", "sha256:../");
    const thief = `THIEF_REPORT=${report} THIEF_DIGESTS=${sha256(secret)},${climbing} ${node} ${path.join(ROOT, "test", "hostile", "layout-thief-worker.ts")}`;
    const run = remoteBuild(mode, holding.dir, thief);
    expect(run.built.status, run.built.stderr).toBe(1);
    expect(run.built.stderr).toContain("ERROR: the thief is done");
    const { got, has } = JSON.parse(readFileSync(report, "utf8")) as {
      got: Record<string, string>;
      has: { held: string[] };
    };
    expect(got).toEqual({
      [sha256(secret)]:
        `refused: the worker asked for ${sha256(secret)} of the OCI layout ${holding.dir}, which the image it names does not name`,
      [climbing]: `refused: the worker asked for ${climbing} of the OCI layout ${holding.dir}, which the image it names does not name`,
    });
    expect(has).toEqual({ held: [] });
    expectAfter(mode, canary, [run]);
  }, 300_000);
});
