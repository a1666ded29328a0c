/**
 * What the solver needs from a worker, declared here so that the solver depends on no worker:
 * `worker/` implements it locally, and remotely over SSH. A vertex's result is its filesystem as a
 * stack of layers in the content store, so a cached result is reused without running or copying
 * anything, and an exporter writes the layers as they are.
 */
import type { Descriptor } from "../oci/spec.js";
import type { Vertex, VertexDigest } from "./graph.js";

export interface LayerRef {
  /** The (usually compressed) layer blob in the content store. */
  descriptor: Descriptor;
  /** sha256 of the uncompressed tar: what the image config's `rootfs.diff_ids` lists. */
  diffId: string;
}

/** A filesystem: layers lowest first. No layers is the empty filesystem. */
export interface FsResult {
  layers: LayerRef[];
}

export interface VertexContext {
  digest: VertexDigest;
  signal: AbortSignal;
  /** Output of the step as it comes: 1 stdout, 2 stderr. */
  log(stream: 1 | 2, chunk: Uint8Array): void;
}

export interface Worker {
  /**
   * What a vertex's cache key needs beyond its definition and its inputs' keys: for a `local` op
   * the checksum of the files it selects (paths, content, mode, ownership; never mtimes), for an
   * `http` op the checksum it promises. `undefined` when the definition says it all.
   */
  contentKey(vertex: Vertex, signal: AbortSignal): Promise<string | undefined>;
  /**
   * For each input of `vertex` (given as `inputs`) of which the vertex reads only some paths (a
   * COPY from the context, a RUN bind mount of it): the checksum of exactly those paths, which its
   * cache key takes instead of that input's key. Undefined for the other inputs.
   */
  selectionKeys?(
    vertex: Vertex,
    inputs: readonly Vertex[],
    signal: AbortSignal,
  ): Promise<(string | undefined)[]>;
  /**
   * For each input of `vertex` that is a build result (not a local source) of which the vertex
   * reads only some paths (a COPY --from a stage or image, a RUN mount of one): the checksum of
   * exactly those paths in that input's result (`results[i]`), which the vertex's second key
   * takes instead of that input's key. Undefined for the other inputs.
   */
  resultSelectionKeys?(
    vertex: Vertex,
    inputs: readonly Vertex[],
    results: readonly FsResult[],
    signal: AbortSignal,
  ): Promise<(string | undefined)[]>;
  /** Runs one vertex on its inputs' results. */
  run(vertex: Vertex, inputs: FsResult[], ctx: VertexContext): Promise<FsResult>;
}
