/**
 * `explain`: after the build, for each step that ran, what changed against the nearest earlier
 * record of that step (solver/explain.ts finds it): which file, build arg, base image or
 * instruction. The build sends each as an `explain` event.
 */
import type { CacheIndex, KeyMaterial } from "../solver/cache.js";
import { explainMisses } from "../solver/explain.js";
import type { BuildGraph, VertexDigest } from "../solver/graph.js";
import { readContextManifest } from "../worker/ops/local.js";

export async function explainBuild(build: {
  graph: BuildGraph;
  solved: {
    keys: Map<VertexDigest, string>;
    materials: Map<VertexDigest, KeyMaterial>;
    ran: VertexDigest[];
    cachedByContent?: Map<VertexDigest, KeyMaterial>;
  };
  cache: CacheIndex;
  storeRoot: string;
  buildArgs: string[];
  buildStarted: number;
}): Promise<{ vertex: string; name: string; reason: string }[]> {
  const explanations = await explainMisses({
    graph: build.graph,
    keys: build.solved.keys,
    materials: build.solved.materials,
    ran: build.solved.ran,
    ...(build.solved.cachedByContent ? { cachedByContent: build.solved.cachedByContent } : {}),
    cache: build.cache,
    contentManifest: (content) => readContextManifest(build.storeRoot, content),
    buildArgs: build.buildArgs,
    buildStarted: build.buildStarted,
  });
  return explanations.map((e) => ({ vertex: e.digest, name: e.name, reason: e.reason }));
}
