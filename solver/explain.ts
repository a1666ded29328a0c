/**
 * `--explain`: for every step that ran, what changed against the nearest earlier record of the
 * same step, down to the root cause: a file of the build context (by path), a build arg or env
 * value, a base image digest, an instruction's text, or the input step that changed (named, and
 * explained in turn). BuildKit users have asked for this since 2022 (moby/buildkit#2567).
 *
 * "The same step" is a record with the same display name, else the newest record of the same op
 * kind at the same step position (`[build 3/5]`): an edited instruction changes its name but not
 * its position. A step's inputs are compared with exactly the records its earlier self used.
 */
import type { CacheIndex, CacheRecord, KeyMaterial } from "./cache.js";
import { canonicalJson } from "./digest.js";
import type { BuildGraph, ExecOp, ImageOp, LocalOp, Op, VertexDigest } from "./graph.js";

export interface ExplainOptions {
  graph: BuildGraph;
  /** What the solve computed: every vertex's key material, and which vertices ran. */
  materials: Map<VertexDigest, KeyMaterial>;
  keys: Map<VertexDigest, string>;
  ran: VertexDigest[];
  /** The vertices cached under their second key, with that key's material (solve.ts). */
  cachedByContent?: Map<VertexDigest, KeyMaterial>;
  cache: CacheIndex;
  /** The per-path manifest behind a `local` op's content key, when the worker recorded one. */
  contentManifest?: (content: string) => Promise<Record<string, string> | undefined>;
  /** `--build-arg` names of this build: an env entry by one of these names is called a build arg. */
  buildArgs?: Iterable<string>;
  /** When this build started (ms since the epoch): a record of a step's own key older than that means the cache was bypassed. */
  buildStarted?: number;
}

export interface Explanation {
  digest: VertexDigest;
  /** The step's display name. */
  name: string;
  /** What changed, e.g. `input file src/main.c changed`. */
  reason: string;
}

/** How many changed paths one line names before it summarizes the rest. */
const MAX_PATHS = 5;

export async function explainMisses(options: ExplainOptions): Promise<Explanation[]> {
  const { graph, materials, keys, cache } = options;
  const buildArgs = new Set(options.buildArgs ?? []);
  let everything: CacheRecord[] | undefined;
  // Read once, and without touching last_used: explaining must not change which records GC keeps.
  const allRecords = () => {
    everything ??= cache.all().sort((a, b) => b.lastUsed - a.lastUsed);
    return everything;
  };
  let byKey: Map<string, CacheRecord> | undefined;
  const recordOf = (key: string) => {
    byKey ??= new Map(allRecords().map((r) => [r.key, r]));
    return byKey.get(key);
  };

  const nearestRecord = (digest: VertexDigest): CacheRecord | undefined => {
    const name = graph.info[digest]?.name;
    const key = keys.get(digest);
    const kind = graph.vertices[digest]?.op.kind;
    if (name === undefined) return undefined;
    // A record under a second key has the checksums of what was read in place of input keys:
    // it is compared with nothing of this build's first keys.
    const firstKeyed = allRecords().filter((r) => r.key !== key && r.material.slow !== true);
    const sameName = firstKeyed.find((r) => r.name === name);
    if (sameName) return sameName;
    const position = /^\[[^\]]+\] /.exec(name)?.[0];
    if (position === undefined) return undefined;
    return firstKeyed.find((r) => r.name.startsWith(position) && (r.material.op as Op).kind === kind);
  };

  const textOf = (name: string) => name.replace(/^\[[^\]]+\] /, "");

  const compare = async (digest: VertexDigest, before: CacheRecord, depth: number): Promise<string[]> => {
    const vertex = graph.vertices[digest];
    const now = materials.get(digest);
    if (!vertex || !now) return ["its inputs changed"];
    const name = graph.info[digest]?.name ?? vertex.op.kind;
    const was = before.material;
    if (canonicalJson(now.op) !== canonicalJson(was.op)) {
      return opChanges(now.op as Op, was.op as Op, textOf(name), textOf(before.name), buildArgs);
    }
    if (now.content !== was.content) {
      return contentChanges(vertex.op, now.content, was.content, options.contentManifest);
    }
    const reasons: string[] = [];
    for (const [i, inputKey] of now.inputs.entries()) {
      if (inputKey === was.inputs[i]) continue;
      const input = vertex.inputs[i]!;
      const inputOp = graph.vertices[input]?.op;
      if (inputOp?.kind === "local") {
        // The key took the checksum of what this step selects of the source: name those files.
        reasons.push(...(await contentChanges(inputOp, inputKey, was.inputs[i], options.contentManifest)));
        continue;
      }
      const inputInfo = graph.info[input];
      const label = inputInfo?.internal ? "" : `${inputInfo?.name ?? "an input step"} changed: `;
      const earlier = was.inputs[i] !== undefined ? recordOf(was.inputs[i]!) : undefined;
      // A chain of steps is followed to its root cause; the bound only guards against pathological graphs.
      const causes =
        earlier && depth < 64 ? await compare(input, earlier, depth + 1) : ["it is not the one used before"];
      reasons.push(`${label}${causes.join("; ")}`);
    }
    if (now.inputs.length !== was.inputs.length) reasons.push("it reads a different number of inputs");
    return reasons.length > 0 ? reasons : ["nothing in its key changed"];
  };

  const explanations: Explanation[] = [];
  const ran = new Set(options.ran);
  const byContent = options.cachedByContent ?? new Map<VertexDigest, KeyMaterial>();
  for (const digest of Object.keys(graph.vertices)) {
    const info = graph.info[digest];
    const slow = byContent.get(digest);
    if (slow && !info?.internal) {
      explanations.push({
        digest,
        name: info?.name ?? graph.vertices[digest]!.op.kind,
        reason: cachedByContentReason(digest, slow),
      });
      continue;
    }
    if (!ran.has(digest) || info?.internal) continue;
    const name = info?.name ?? graph.vertices[digest]!.op.kind;
    const key = keys.get(digest);
    const same = key !== undefined ? recordOf(key) : undefined;
    let reason: string;
    if (same && options.buildStarted !== undefined && same.created < options.buildStarted) {
      // The very key was recorded by an earlier build: nothing changed, the cache was bypassed.
      reason = "its cached result was not used (--no-cache, --no-cache-filter, or its layers were removed)";
    } else {
      const before = nearestRecord(digest);
      reason = before
        ? (await compare(digest, before, 0)).join("; ")
        : "no earlier record of this step (first build of it in this store)";
    }
    explanations.push({ digest, name, reason });
  }
  return explanations;

  /** Why a step whose first key missed was cached all the same: which inputs changed, and how little. */
  function cachedByContentReason(digest: VertexDigest, slow: KeyMaterial): string {
    const vertex = graph.vertices[digest]!;
    const first = materials.get(digest);
    const inputs: string[] = [];
    for (const [i, input] of vertex.inputs.entries()) {
      if (first?.inputs[i] === slow.inputs[i] || graph.vertices[input]?.op.kind === "local") continue;
      const name = graph.info[input]?.name ?? "an input step";
      inputs.push(
        byContent.has(input)
          ? `${name} was cached by content too`
          : `${name} changed, but not in the files this step reads of it`,
      );
    }
    return `cached by content: ${inputs.join("; ") || "what it reads is unchanged"}`;
  }
}

function opChanges(now: Op, was: Op, nameNow: string, nameWas: string, buildArgs: Set<string>): string[] {
  if (now.kind !== was.kind) return [`instruction changed: "${nameWas}" → "${nameNow}"`];
  switch (now.kind) {
    case "image": {
      const before = was as ImageOp;
      if (now.ref !== before.ref) return [`base image changed: ${before.ref} → ${now.ref}`];
      if (now.digest !== before.digest)
        return [`base image ${now.ref} digest changed: ${before.digest} → ${now.digest}`];
      return ["base image platform changed"];
    }
    case "exec": {
      const before = was as ExecOp;
      const reasons = envChanges(now.env, before.env, buildArgs);
      if (canonicalJson(now.args) !== canonicalJson(before.args)) {
        reasons.push(
          nameNow !== nameWas
            ? `instruction text changed: "${nameWas}" → "${nameNow}"`
            : `command changed: ${JSON.stringify(before.args)} → ${JSON.stringify(now.args)}`,
        );
      }
      const labels = { cwd: "WORKDIR", user: "USER", network: "network" } as const;
      for (const field of ["cwd", "user", "network"] as const) {
        if (now[field] !== before[field])
          reasons.push(
            `${labels[field]} changed: ${JSON.stringify(before[field])} → ${JSON.stringify(now[field])}`,
          );
      }
      for (const field of ["security", "mounts", "platform"] as const) {
        if (canonicalJson(now[field]) !== canonicalJson(before[field])) reasons.push(`RUN ${field} changed`);
      }
      return reasons.length > 0 ? reasons : ["the step's definition changed"];
    }
    case "local": {
      const before = was as LocalOp;
      const reasons: string[] = [];
      if (canonicalJson(now.followPaths) !== canonicalJson(before.followPaths))
        reasons.push("the context paths the build reads changed (COPY/ADD sources)");
      if (canonicalJson(now.excludePatterns) !== canonicalJson(before.excludePatterns))
        reasons.push(".dockerignore patterns changed");
      return reasons.length > 0 ? reasons : ["the context definition changed"];
    }
    default:
      return nameNow !== nameWas
        ? [`instruction text changed: "${nameWas}" → "${nameNow}"`]
        : [`${now.kind} options changed`];
  }
}

function envChanges(now: string[], was: string[], buildArgs: Set<string>): string[] {
  const parse = (list: string[]) =>
    new Map(
      list.map((e) => {
        const eq = e.indexOf("=");
        return eq < 0 ? [e, ""] : [e.slice(0, eq), e.slice(eq + 1)];
      }),
    );
  const a = parse(was);
  const b = parse(now);
  const reasons: string[] = [];
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    const kind = buildArgs.has(key) ? "build arg" : "env";
    if (!a.has(key)) reasons.push(`${kind} ${key} added (${JSON.stringify(b.get(key))})`);
    else if (!b.has(key)) reasons.push(`${kind} ${key} removed (was ${JSON.stringify(a.get(key))})`);
    else if (a.get(key) !== b.get(key))
      reasons.push(`${kind} ${key} changed: ${JSON.stringify(a.get(key))} → ${JSON.stringify(b.get(key))}`);
  }
  return reasons;
}

async function contentChanges(
  op: Op,
  now: string | undefined,
  was: string | undefined,
  manifestOf: ExplainOptions["contentManifest"],
): Promise<string[]> {
  if (op.kind === "exec" || op.kind === "file") {
    // The only content of a step that makes a layer: the SOURCE_DATE_EPOCH it clamps times to.
    const epoch = (key: string | undefined) => key?.replace(/^SOURCE_DATE_EPOCH=/, "") ?? "unset";
    return [`SOURCE_DATE_EPOCH changed (was ${epoch(was)}, now ${epoch(now)})`];
  }
  if (op.kind !== "local") return [`the content of its ${op.kind} source changed`];
  const where = op.name === "context" ? "" : ` of build context ${op.name}`;
  const [a, b] = await Promise.all([
    was !== undefined && manifestOf ? manifestOf(was) : undefined,
    now !== undefined && manifestOf ? manifestOf(now) : undefined,
  ]);
  if (!a || !b) return [`files${where} changed (no per-file record of the earlier build to name them)`];
  const changed: string[] = [];
  const added: string[] = [];
  const removed: string[] = [];
  for (const [file, record] of Object.entries(b)) {
    if (!(file in a)) added.push(file);
    else if (a[file] !== record) changed.push(file);
  }
  for (const file of Object.keys(a)) if (!(file in b)) removed.push(file);
  const describe = (files: string[], what: string) => {
    if (files.length === 0) return [];
    const shown = files.slice(0, MAX_PATHS).join(", ");
    const more = files.length > MAX_PATHS ? ` and ${files.length - MAX_PATHS} more` : "";
    return [`input file${files.length > 1 ? "s" : ""}${where} ${shown}${more} ${what}`];
  };
  const reasons = [
    ...describe(changed, "changed"),
    ...describe(added, "added"),
    ...describe(removed, "removed"),
  ];
  return reasons.length > 0 ? reasons : [`files${where} changed`];
}
