import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { MediaType } from "../../oci/spec.js";
import { ContentStore } from "../../oci/store/index.js";
import { CacheIndex } from "../../solver/cache.js";
import { digestOf } from "../../solver/digest.js";
import type { BuildGraph, ExecOp, Vertex } from "../../solver/graph.js";
import { type SolveEvent, StepFailedError, solve } from "../../solver/solve.js";
import type { FsResult, Worker } from "../../solver/worker.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const platform = { os: "linux", architecture: "amd64" };

/** A graph built by hand: `step(name, ...inputs)` adds an exec vertex running `name`. */
function graphBuilder() {
  const graph: BuildGraph = { vertices: {}, info: {} };
  const step = (name: string, ...inputs: string[]) => {
    const op: ExecOp = {
      kind: "exec",
      args: ["/bin/sh", "-c", name],
      env: [],
      cwd: "/",
      user: "",
      network: "default",
      security: "sandbox",
      mounts: [{ type: "bind", target: "/", readonly: false, output: true }],
      platform,
    };
    const vertex: Vertex = { op, inputs };
    const digest = digestOf(vertex);
    graph.vertices[digest] = vertex;
    graph.info[digest] = { name, location: { file: "Dockerfile", startLine: 7, endLine: 7 } };
    return digest;
  };
  return { graph, step };
}

/**
 * A worker whose steps each store one real layer blob (their name) in a real content store,
 * taking `ms` milliseconds; it records what ran and how many ran at once.
 */
function recordingWorker(
  content: ContentStore,
  options: { ms?: number; fail?: string; contentKeys?: Record<string, string> } = {},
) {
  const runs: string[] = [];
  const aborted: string[] = [];
  let running = 0;
  let maxRunning = 0;
  const worker: Worker = {
    async contentKey(vertex) {
      const name = (vertex.op as ExecOp).args[2]!;
      return options.contentKeys?.[name];
    },
    async run(vertex, inputs, ctx): Promise<FsResult> {
      const name = (vertex.op as ExecOp).args[2]!;
      runs.push(name);
      running++;
      maxRunning = Math.max(maxRunning, running);
      try {
        ctx.log(1, Buffer.from(`running ${name}\n`));
        await sleep(options.ms ?? 20, undefined, { signal: ctx.signal }).catch((err) => {
          aborted.push(name);
          throw err;
        });
        if (name === options.fail) throw new Error(`exit code 3: ${name} failed`);
        const blob = await content.writeBytes(Buffer.from(`layer of ${name}`));
        const layer = { descriptor: { mediaType: MediaType.ociLayer, ...blob }, diffId: blob.digest };
        return { layers: [...inputs.flatMap((i) => i.layers), layer] };
      } finally {
        running--;
      }
    },
  };
  return {
    worker,
    runs,
    aborted,
    get maxRunning() {
      return maxRunning;
    },
  };
}

function fixture() {
  const root = tempDir("solver");
  const content = new ContentStore(root);
  const cache = new CacheIndex(path.join(root, "cache.db"));
  return { root, content, cache, hasBlob: (d: string) => content.has(d) };
}

describe("solve", () => {
  it("solves several roots at once (a build's platforms): a vertex they share runs once, each root gets its own result", async () => {
    const { content } = fixture();
    const { graph, step } = graphBuilder();
    const base = step("toolchain");
    const amd = step("build for amd64", base);
    const arm = step("build for arm64", base);
    const w = recordingWorker(content, { ms: 50 });
    const solved = await solve(graph, [amd, arm], { worker: w.worker, jobs: 2 });
    expect(w.runs.filter((r) => r === "toolchain")).toHaveLength(1);
    expect([...w.runs].sort()).toEqual(["build for amd64", "build for arm64", "toolchain"]);
    // The two platforms' own steps ran side by side.
    expect(w.maxRunning).toBe(2);
    const layerText = async (r: FsResult) =>
      Promise.all(r.layers.map(async (l) => (await content.readBytes(l.descriptor.digest)).toString()));
    expect(await layerText(solved.rootResults[0]!)).toEqual([
      "layer of toolchain",
      "layer of build for amd64",
    ]);
    expect(await layerText(solved.rootResults[1]!)).toEqual([
      "layer of toolchain",
      "layer of build for arm64",
    ]);
    expect(solved.result).toBe(solved.rootResults[0]);
  });

  it("runs a step several stages need once, and independent steps at the same time", async () => {
    const { content } = fixture();
    const { graph, step } = graphBuilder();
    const base = step("base");
    const left = step("left", base);
    const right = step("right", base);
    const root = step("join", left, right);
    const w = recordingWorker(content, { ms: 50 });
    const { result } = await solve(graph, root, { worker: w.worker, jobs: 2 });
    expect(w.runs.filter((r) => r === "base")).toHaveLength(1);
    expect(w.runs).toHaveLength(4);
    expect(w.maxRunning).toBe(2);
    expect(result.layers).toHaveLength(5);

    const serial = recordingWorker(content, { ms: 10 });
    await solve(graph, root, { worker: serial.worker, jobs: 1 });
    expect(serial.maxRunning).toBe(1);
  });

  it("an unchanged rebuild runs nothing, reuses the final result directly and reports every step cached", async () => {
    const { content, cache, hasBlob } = fixture();
    const { graph, step } = graphBuilder();
    const root = step("two", step("one"));
    const first = await solve(graph, root, { worker: recordingWorker(content).worker, cache, hasBlob });
    const again = recordingWorker(content);
    const events: SolveEvent[] = [];
    const second = await solve(graph, root, {
      worker: again.worker,
      cache,
      hasBlob,
      onEvent: (e) => events.push(e),
    });
    expect(again.runs).toEqual([]);
    expect(second.result).toEqual(first.result);
    expect(events.map((e) => e.type)).toEqual(["vertex.cached", "vertex.cached"]);
    expect(events.map((e) => (e.type === "vertex.cached" ? e.info.name : ""))).toEqual(["one", "two"]);
  });

  it("a changed input re-runs only the steps that depend on it", async () => {
    const { content, cache, hasBlob } = fixture();
    const { graph, step } = graphBuilder();
    const copy = step("copy-sources");
    const tools = step("install-tools");
    const root = step("compile", copy, tools);
    await solve(graph, root, {
      worker: recordingWorker(content, { contentKeys: { "copy-sources": "v1" } }).worker,
      cache,
      hasBlob,
    });
    const changed = recordingWorker(content, { contentKeys: { "copy-sources": "v2" } });
    await solve(graph, root, { worker: changed.worker, cache, hasBlob });
    expect(changed.runs.sort()).toEqual(["compile", "copy-sources"]);
  });

  it("ignoring the cache for a step re-runs it and what uses it", async () => {
    const { content, cache, hasBlob } = fixture();
    const { graph, step } = graphBuilder();
    const base = step("base");
    const mid = step("mid", base);
    const root = step("top", mid);
    await solve(graph, root, { worker: recordingWorker(content).worker, cache, hasBlob });
    const again = recordingWorker(content);
    await solve(graph, root, { worker: again.worker, cache, hasBlob, ignoreCache: (d) => d === mid });
    expect(again.runs).toEqual(["mid", "top"]);
  });

  it("dates each record when its result was made: an imported one keeps its time, a step run again gets a new one", async () => {
    const { content, cache, hasBlob } = fixture();
    const { graph, step } = graphBuilder();
    const base = step("base");
    const root = step("top", base);
    const made = Date.UTC(2026, 0, 2, 3, 4, 5);
    // What an earlier build elsewhere made, as `--cache-from` would serve it.
    const elsewhere = fixture();
    const exported = await solve(graph, root, {
      worker: recordingWorker(elsewhere.content).worker,
      cache: elsewhere.cache,
      hasBlob: elsewhere.hasBlob,
    });
    for (const l of exported.result.layers) {
      await content.writeBytes(await elsewhere.content.readBytes(l.descriptor.digest));
    }
    const imported = {
      get: async (key: string) =>
        key === exported.keys.get(root) ? { result: exported.result, created: made } : undefined,
    };
    const first = await solve(graph, root, {
      worker: recordingWorker(content).worker,
      cache,
      hasBlob,
      remoteCache: imported,
    });
    expect(first.ran).toEqual([]);
    expect(cache.createdAt(first.keys.get(root)!)).toBe(made);
    const before = Date.now();
    const again = await solve(graph, root, {
      worker: recordingWorker(content).worker,
      cache,
      hasBlob,
      ignoreCache: (d) => d === root,
    });
    expect(again.ran).toContain(root);
    expect(cache.createdAt(again.keys.get(root)!)).toBeGreaterThanOrEqual(before);
  });

  it("a cache record whose layers were collected is a miss", async () => {
    const { content, cache, hasBlob } = fixture();
    const { graph, step } = graphBuilder();
    const root = step("only");
    const { result } = await solve(graph, root, { worker: recordingWorker(content).worker, cache, hasBlob });
    await content.delete(result.layers[0]!.descriptor.digest);
    const again = recordingWorker(content);
    await solve(graph, root, { worker: again.worker, cache, hasBlob });
    expect(again.runs).toEqual(["only"]);
  });

  it("the cache survives the process: a reopened index still hits", async () => {
    const { root: storeRoot, content, cache, hasBlob } = fixture();
    const { graph, step } = graphBuilder();
    const root = step("persisted");
    await solve(graph, root, { worker: recordingWorker(content).worker, cache, hasBlob });
    cache.close();
    const reopened = new CacheIndex(path.join(storeRoot, "cache.db"));
    const again = recordingWorker(content);
    await solve(graph, root, { worker: again.worker, cache: reopened, hasBlob });
    expect(again.runs).toEqual([]);
  });

  it("a failing step cancels the rest promptly and is named with its line", async () => {
    const { content } = fixture();
    const { graph, step } = graphBuilder();
    const slow = step("slow-sibling");
    const bad = step("bad-step");
    const root = step("never", slow, bad);
    const w = recordingWorker(content, { ms: 2_000, fail: "bad-step" });
    const quick = recordingWorker(content, { ms: 10, fail: "bad-step" });
    // The failing step is quick; the sibling would take 2 s unless canceled.
    const worker: Worker = {
      contentKey: w.worker.contentKey,
      run: (vertex, inputs, ctx) =>
        ((vertex.op as ExecOp).args[2] === "bad-step" ? quick.worker : w.worker).run(vertex, inputs, ctx),
    };
    const started = performance.now();
    const err = await solve(graph, root, { worker, jobs: 4 }).catch((e: unknown) => e);
    expect(performance.now() - started).toBeLessThan(1_500);
    expect(err).toBeInstanceOf(StepFailedError);
    expect((err as StepFailedError).message).toBe("bad-step (Dockerfile:7): exit code 3: bad-step failed");
    expect(w.aborted).toEqual(["slow-sibling"]);
    expect(w.runs).not.toContain("never");
  });

  it("solves a chain of 10,000 steps, then finds all of it cached, forced runs included", async () => {
    const { cache } = fixture();
    const { graph, step } = graphBuilder();
    let root = step("step 0");
    for (let i = 1; i < 10_000; i++) root = step(`step ${i}`, root);
    const ran: string[] = [];
    // Each step's result is empty: the chain, not the layers, is under test.
    const worker: Worker = {
      contentKey: async () => undefined,
      run: async (vertex) => {
        ran.push((vertex.op as ExecOp).args[2]!);
        return { layers: [] };
      },
    };
    const first = await solve(graph, root, { worker, cache, jobs: 2 });
    expect(first.ran).toHaveLength(10_000);
    expect(ran[0]).toBe("step 0");
    expect(ran.at(-1)).toBe("step 9999");

    const cached: SolveEvent[] = [];
    const again = await solve(graph, root, { worker, cache, onEvent: (e) => cached.push(e) });
    expect(again.ran).toEqual([]);
    expect(cached.filter((e) => e.type === "vertex.cached")).toHaveLength(10_000);
    expect(again.keys.get(root)).toBe(first.keys.get(root));

    ran.length = 0;
    const bottom = Object.keys(graph.vertices)[0]!;
    await solve(graph, root, { worker, cache, ignoreCache: (d) => d === bottom });
    expect(ran).toHaveLength(10_000);
  });
});
