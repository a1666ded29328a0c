/**
 * A RUN's cache key covers its platform (the ExecOp carries it, and the key is the op's digest):
 * the same step for arm64 never reuses a result recorded for amd64, whose files were made by
 * programs of another architecture.
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { Platform } from "../../oci/platform.js";
import { MediaType } from "../../oci/spec.js";
import { ContentStore } from "../../oci/store/index.js";
import { CacheIndex } from "../../solver/cache.js";
import { digestOf } from "../../solver/digest.js";
import type { BuildGraph, ExecOp, Vertex } from "../../solver/graph.js";
import { solve } from "../../solver/solve.js";
import type { FsResult, Worker } from "../../solver/worker.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** `RUN uname -m > /arch` for `platform`, alone in its graph. */
function runFor(platform: Platform): { graph: BuildGraph; root: string } {
  const op: ExecOp = {
    kind: "exec",
    args: ["/bin/sh", "-c", "uname -m > /arch"],
    env: [],
    cwd: "/",
    user: "",
    network: "default",
    security: "sandbox",
    mounts: [{ type: "bind", target: "/", readonly: false, output: true }],
    platform,
  };
  const vertex: Vertex = { op, inputs: [] };
  const root = digestOf(vertex);
  return {
    graph: { vertices: { [root]: vertex }, info: { [root]: { name: "RUN uname -m > /arch" } } },
    root,
  };
}

/** A worker whose step writes the platform it ran for into a real layer blob. */
function worker(content: ContentStore, ran: string[]): Worker {
  return {
    contentKey: async () => undefined,
    async run(vertex): Promise<FsResult> {
      const { architecture } = (vertex.op as ExecOp).platform;
      ran.push(architecture);
      const blob = await content.writeBytes(Buffer.from(`arch ${architecture}`));
      return { layers: [{ descriptor: { mediaType: MediaType.ociLayer, ...blob }, diffId: blob.digest }] };
    },
  };
}

describe("the cache key of a RUN", () => {
  it("covers its platform: an arm64 step runs although the same step for amd64 is cached", async () => {
    const dir = tempDir("platform-cache");
    const content = new ContentStore(dir);
    const cache = new CacheIndex(path.join(dir, "cache.db"));
    const hasBlob = (d: string) => content.has(d);
    const ran: string[] = [];
    const amd64 = runFor({ os: "linux", architecture: "amd64" });
    const arm64 = runFor({ os: "linux", architecture: "arm64" });
    const first = await solve(amd64.graph, amd64.root, { worker: worker(content, ran), cache, hasBlob });
    const second = await solve(arm64.graph, arm64.root, { worker: worker(content, ran), cache, hasBlob });
    expect(ran).toEqual(["amd64", "arm64"]);
    expect(second.result.layers).not.toEqual(first.result.layers);
    // Each is cached for its own platform.
    await solve(arm64.graph, arm64.root, { worker: worker(content, ran), cache, hasBlob });
    await solve(amd64.graph, amd64.root, { worker: worker(content, ran), cache, hasBlob });
    expect(ran).toEqual(["amd64", "arm64"]);
    cache.close();
  });
});
