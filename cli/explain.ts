/**
 * `tbuild build --explain`: after the build, one line per step that ran, saying what changed
 * against the nearest earlier record of that step (solver/explain.ts finds it), on stderr: text
 * lines, or `explain` events with `--progress=rawjson`.
 */
import type { CacheIndex, KeyMaterial } from "../solver/cache.js";
import { explainMisses } from "../solver/explain.js";
import type { BuildGraph, VertexDigest } from "../solver/graph.js";
import { readContextManifest } from "../worker/ops/local.js";

export async function printExplanations(
  out: NodeJS.WritableStream,
  format: "text" | "rawjson",
  build: {
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
  },
): Promise<void> {
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
  for (const e of explanations) {
    out.write(
      format === "rawjson"
        ? `${JSON.stringify({ type: "explain", vertex: e.digest, name: e.name, reason: e.reason })}\n`
        : `explain: ${e.name}: ${e.reason}\n`,
    );
  }
}
