import {
  type LoweredBuild,
  type LowerOptions,
  type LowerWarning,
  lowerDockerfile,
} from "../../../frontend/lower/index.js";
import { parseDockerfile } from "../../../frontend/syntax/index.js";
import type { ContainerConfig } from "../../../oci/spec.js";
import type { ExecOp, FileOp, Op, Vertex } from "../../../solver/graph.js";
import { busybox, fixtureResolver } from "../../helpers/resolver.js";

export const amd64 = { os: "linux", architecture: "amd64" };
export const arm64 = { os: "linux", architecture: "arm64" };

export interface LowerResult extends LoweredBuild {
  warnings: LowerWarning[];
  asked: string[];
  /** Vertices of the graph whose op is of this kind, in graph order. */
  ops<K extends Op["kind"]>(kind: K): Extract<Op, { kind: K }>[];
  /** The vertex at the target's root. */
  rootVertex(): Vertex;
  env(op: ExecOp): Record<string, string>;
}

/** Parses and lowers a Dockerfile against fixture base images, as `tbuild debug graph` would. */
export async function lower(
  dockerfile: string,
  options: Partial<LowerOptions> & { images?: Record<string, ContainerConfig> } = {},
): Promise<LowerResult> {
  const resolver = fixtureResolver(
    options.images ?? { busybox, "debian:12": { Env: ["PATH=/usr/bin:/bin"] } },
  );
  const warnings: LowerWarning[] = [];
  const ast = parseDockerfile(dockerfile, { file: "Dockerfile" });
  const lowered = await lowerDockerfile(ast, {
    targetPlatform: amd64,
    buildPlatform: amd64,
    resolver,
    warn: (w) => warnings.push(w),
    ...options,
  });
  return {
    ...lowered,
    warnings,
    asked: resolver.asked,
    ops: (kind) =>
      Object.values(lowered.graph.vertices).flatMap((v) => (v.op.kind === kind ? [v.op as never] : [])),
    rootVertex: () => lowered.graph.vertices[lowered.root!]!,
    env: (op) =>
      Object.fromEntries(op.env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)])),
  };
}

export function asFile(op: Op): FileOp {
  if (op.kind !== "file") throw new Error(`expected a file op, got ${op.kind}`);
  return op;
}

export function asExec(op: Op): ExecOp {
  if (op.kind !== "exec") throw new Error(`expected an exec op, got ${op.kind}`);
  return op;
}
