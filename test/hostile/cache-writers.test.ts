/**
 * A shared registry cache ref is read from what the registry says: the writers index at the ref,
 * its tag list, each writer's manifest. A registry that lies in any of them (names that are no
 * writer tags of the ref, a tag list without end, a ref that is no manifest, a description of ten
 * gigabytes, one that is not what its digest says) gets a build that still runs, reads only the ref's own writer tags and
 * boundedly many of them, warns about each writer it leaves out, and leaves the store usable.
 */
import { createHash } from "node:crypto";
import type http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DistributionServer, startDistributionServer } from "./distribution-server.js";
import { hostileWorld, MODES, type Mode } from "./harness.js";
import { tbuildAsync } from "./run-async.js";

const world = hostileWorld();
let server: DistributionServer;

beforeAll(async () => {
  server = await startDistributionServer();
});
afterAll(async () => {
  await server?.stop();
});

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const CACHE_CONFIG = "application/vnd.tbuild.cache.config.v0+json";
const WRITERS = "dev.tbuild.cache.writers";
const digestOf = (data: Buffer | string) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
/** A writer's tag of `main`, as docs/ names them. */
const writerOfMain = (n: number) => `main--tbuild-cache-${n.toString(16).padStart(16, "0")}`;

/** Serves a cache manifest (no records) under `repository:tag` with `annotations`; its digest. */
function serveCache(
  repository: string,
  tag: string,
  annotations: Record<string, string> = {},
  config?: { digest: string; size: number },
) {
  const description = Buffer.from(JSON.stringify({ stacks: [], records: [] }));
  const described = config ?? { digest: digestOf(description), size: description.length };
  server.blobs.set(digestOf(description), description);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: CACHE_CONFIG, ...described },
    layers: [],
    annotations,
  });
  server.manifests.set(`${repository}:${tag}`, { body: manifest });
  return digestOf(manifest);
}

function serveTags(
  repository: string,
  answer: (req: http.IncomingMessage, res: http.ServerResponse) => void,
) {
  server.routes.set(`/v2/${repository}/tags/list`, answer);
}

let counter = 0;
async function importFrom(mode: Mode, repository: string) {
  const store = world.store(mode);
  const canary = world.canary(mode);
  const ctx = world.context({ Dockerfile: "FROM busybox\nRUN echo hostile-cache > /f\n" });
  const seenBefore = server.seen.length;
  const built = await tbuildAsync(world, mode, store, [
    "build",
    "--progress=plain",
    "--cache-from",
    `type=registry,ref=${server.host}/${repository}:main`,
    ctx,
  ]);
  return { built, store, canary, seen: server.seen.slice(seenBefore) };
}

describe.each(MODES)("a registry lying about a shared cache's writers (%s)", (mode) => {
  it("names in the index and the tag list that are no writer tags of the ref are never fetched", async () => {
    const repository = `hostile/writers-${mode}-${++counter}`;
    const names = [
      "../../other/manifests/x",
      `${writerOfMain(1)}/../../../x`,
      "other--tbuild-cache-0000000000000001",
      "main--tbuild-cache-zz",
      "main",
    ];
    serveCache(repository, "main", {
      [WRITERS]: JSON.stringify(Object.fromEntries(names.map((name) => [name, digestOf(name)]))),
    });
    serveTags(repository, (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ name: repository, tags: names }));
    });
    const { built, store, canary, seen } = await importFrom(mode, repository);
    expect(built.status, built.stderr).toBe(0);
    expect(seen.filter((p) => p.includes("/manifests/"))).toEqual([`/v2/${repository}/manifests/main`]);
    expect(built.stderr).not.toContain("left out");
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("a tag list that pages for ever, listing 100,000 writer tags: the import ends and reads 64 of them, saying so", async () => {
    const repository = `hostile/writers-${mode}-${++counter}`;
    serveCache(repository, "main");
    let pages = 0;
    serveTags(repository, (_req, res) => {
      const first = pages++ * 1000;
      const tags = Array.from({ length: 1000 }, (_, i) => writerOfMain(first + i));
      res.writeHead(200, {
        "content-type": "application/json",
        link: `</v2/${repository}/tags/list?n=1000&last=${tags.at(-1)}>; rel="next"`,
      });
      res.end(JSON.stringify({ name: repository, tags }));
    });
    const { built, store, canary, seen } = await importFrom(mode, repository);
    expect(built.status, built.stderr).toBe(0);
    expect(pages).toBeLessThanOrEqual(100);
    expect(seen.filter((p) => p.includes("/manifests/main--tbuild-cache-")).length).toBe(64);
    expect(built.stderr).toMatch(/writers' caches are there; importing 64 of them/);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("a ref whose own manifest is no JSON: a warning, and its writers' tags are still read", async () => {
    const repository = `hostile/writers-${mode}-${++counter}`;
    serveCache(repository, writerOfMain(1));
    server.manifests.set(`${repository}:main`, { body: "\u0000 not a manifest {" });
    serveTags(repository, (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ name: repository, tags: ["main", writerOfMain(1)] }));
    });
    const { built, store, canary, seen } = await importFrom(mode, repository);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toMatch(
      /WARNING: --cache-from .*: the cache there is left out \(its manifest is not JSON\)/,
    );
    expect(seen).toContain(`/v2/${repository}/manifests/${writerOfMain(1)}`);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("a writer whose description claims ten gigabytes, and one whose description is not what its digest says: both left out with a warning", async () => {
    const repository = `hostile/writers-${mode}-${++counter}`;
    const huge = { digest: digestOf("ten gigabytes"), size: 10 * 1024 ** 3 };
    const forged = Buffer.from(JSON.stringify({ stacks: [], records: [] }));
    const lying = { digest: digestOf("something else"), size: forged.length };
    server.blobs.set(lying.digest, forged);
    serveCache(repository, writerOfMain(1), {}, huge);
    serveCache(repository, writerOfMain(2), {}, lying);
    serveCache(repository, "main", {
      [WRITERS]: JSON.stringify({ [writerOfMain(1)]: digestOf("a"), [writerOfMain(2)]: digestOf("b") }),
    });
    serveTags(repository, (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ name: repository, tags: ["main", writerOfMain(1), writerOfMain(2)] }));
    });
    const { built, store, canary, seen } = await importFrom(mode, repository);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toMatch(
      new RegExp(`WARNING: .*the cache of writer ${writerOfMain(1)} is left out \\(.*more than`),
    );
    expect(built.stderr).toMatch(
      new RegExp(
        `WARNING: .*the cache of writer ${writerOfMain(2)} is left out \\(.*does not match its digest`,
      ),
    );
    expect(seen).not.toContain(`/v2/${repository}/blobs/${huge.digest}`);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });
});
