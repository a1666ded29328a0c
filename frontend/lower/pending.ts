/**
 * Vertices under construction. The lowering links ops to their inputs by object reference and
 * only computes digests at the end, because one op (the build context) learns what it must
 * include only after every stage is dispatched.
 */
import { digestOf } from "../../solver/digest.js";
import type { BuildGraph, Op, VertexDigest, VertexInfo } from "../../solver/graph.js";
import { inputsFirst } from "../../solver/walk.js";

export interface PendingVertex {
  op: Op;
  inputs: PendingVertex[];
  info: VertexInfo;
}

export function pending(op: Op, inputs: PendingVertex[], info: VertexInfo): PendingVertex {
  return { op, inputs, info };
}

/**
 * Computes digests bottom-up (inputs first, without recursion: a long Dockerfile is a deep chain);
 * identical ops with identical inputs collapse into one vertex.
 */
export class GraphAssembler {
  readonly graph: BuildGraph = { vertices: {}, info: {} };
  private readonly digests = new Map<PendingVertex, VertexDigest>();
  private readonly visited = new Set<PendingVertex>();

  digest(vertex: PendingVertex): VertexDigest {
    for (const next of inputsFirst([vertex], (v) => v.inputs, this.visited)) {
      const inputs = next.inputs.map((input) => this.digests.get(input)!);
      const digest = digestOf({ op: next.op, inputs });
      this.digests.set(next, digest);
      if (!(digest in this.graph.vertices)) {
        this.graph.vertices[digest] = { op: next.op, inputs };
        this.graph.info[digest] = next.info;
      }
    }
    return this.digests.get(vertex)!;
  }
}
