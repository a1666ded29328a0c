/**
 * Vertices under construction. The lowering links ops to their inputs by object reference and
 * only computes digests at the end, because one op (the build context) learns what it must
 * include only after every stage is dispatched.
 */
import { digestOf } from "../../solver/digest.js";
import type { BuildGraph, Op, VertexDigest, VertexInfo } from "../../solver/graph.js";

export interface PendingVertex {
  op: Op;
  inputs: PendingVertex[];
  info: VertexInfo;
}

export function pending(op: Op, inputs: PendingVertex[], info: VertexInfo): PendingVertex {
  return { op, inputs, info };
}

/** Computes digests bottom-up; identical ops with identical inputs collapse into one vertex. */
export class GraphAssembler {
  readonly graph: BuildGraph = { vertices: {}, info: {} };
  private readonly digests = new Map<PendingVertex, VertexDigest>();

  digest(vertex: PendingVertex): VertexDigest {
    const known = this.digests.get(vertex);
    if (known) return known;
    const inputs = vertex.inputs.map((input) => this.digest(input));
    const digest = digestOf({ op: vertex.op, inputs });
    this.digests.set(vertex, digest);
    if (!(digest in this.graph.vertices)) {
      this.graph.vertices[digest] = { op: vertex.op, inputs };
      this.graph.info[digest] = vertex.info;
    }
    return digest;
  }
}
