/**
 * What a build's provenance says, collected from what the build knows (attest/provenance.ts
 * makes the statement): the request (target, build args, labels, secret and ssh ids), the
 * Dockerfile, the platform's graph (its base images as the resolver pinned them, its steps, whether
 * any RUN had the network), the context's git checkout, and when it ran.
 *
 * Which builds get one is buildx's rule: `--provenance`/`--attest type=provenance` asks for it,
 * `--provenance=false` turns it off, and otherwise a pushed image gets `mode=min`.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import type { AttestationRequest } from "../attest/attestation.js";
import {
  imagePurl,
  type ProvenanceInput,
  type ProvenanceStep,
  provenanceAttestation,
} from "../attest/provenance.js";
import { formatPlatform, hostPlatform, type Platform } from "../oci/platform.js";
import type { BuildGraph } from "../solver/graph.js";
import { inputsFirst } from "../solver/walk.js";
import type { DockerfileInput } from "./dockerfile.js";
import type { BuildRequest } from "./request.js";

const execFileAsync = promisify(execFile);

export type ProvenanceRequest = Exclude<AttestationRequest["provenance"], false | undefined>;

/** Whether the request pushes an image (`--push`, `-o type=image,push=true`, `type=registry`). */
function pushes(request: BuildRequest): boolean {
  if (request.push === true && (request.tags ?? []).length > 0) return true;
  return (request.outputs ?? []).some((o) => o.type === "image" && o.push === true);
}

/**
 * The provenance a request asks for, none when none: buildx's default is `mode=min` for a pushed
 * image.
 */
export function provenanceOf(request: BuildRequest): ProvenanceRequest | undefined {
  const asked = request.attestations;
  if (asked?.provenance === false) return undefined;
  if (asked?.provenance !== undefined) return asked.provenance;
  return pushes(request) ? { mode: "min", version: "v1" } : undefined;
}

/** The build's URL in CI, as buildx sets the builder id; else tbuild's package. */
function builderId(env: NodeJS.ProcessEnv): string {
  if (env.GITHUB_ACTIONS === "true" && env.GITHUB_REPOSITORY && env.GITHUB_RUN_ID) {
    const server = env.GITHUB_SERVER_URL || "https://github.com";
    return `${server}/${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}`;
  }
  if (env.GITLAB_CI === "true" && env.CI_JOB_URL) return env.CI_JOB_URL;
  return "pkg:npm/tbuild";
}

/** A git remote as it may be shown: any user and password in it are left out. */
export function withoutCredentials(remote: string): string {
  try {
    const url = new URL(remote);
    if (url.username === "" && url.password === "") return remote;
    url.username = "";
    url.password = "";
    return url.toString();
  } catch {
    // scp-like `git@host:path` names a user, never a password.
    return remote;
  }
}

/**
 * The context's git checkout: its commit (`-dirty` when it has changes, as buildx says) and
 * its `origin` remote; nothing when the context is not in one, or git is missing.
 */
export async function gitCheckoutOf(dir: string): Promise<ProvenanceInput["vcs"]> {
  const git = (...args: string[]) =>
    execFileAsync("git", ["-c", "safe.directory=*", "-C", dir, ...args], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/nonexistent", GIT_CONFIG_NOSYSTEM: "1" },
    }).then(
      ({ stdout }) => stdout.trim(),
      () => undefined,
    );
  const revision = await git("rev-parse", "--verify", "HEAD");
  if (revision === undefined || !/^[0-9a-f]{40,64}$/.test(revision)) return undefined;
  const [remote, status] = await Promise.all([
    git("remote", "get-url", "origin"),
    git("status", "--porcelain"),
  ]);
  return {
    ...(remote ? { source: withoutCredentials(remote) } : {}),
    revision: status ? `${revision}-dirty` : revision,
  };
}

export interface ProvenanceBuild {
  request: BuildRequest;
  dockerfile: DockerfileInput;
  /** The platform's graph and root. */
  graph: BuildGraph;
  root?: string;
  /** Names of the local sources (`context`, named directory contexts). */
  localSources: string[];
  vcs: ProvenanceInput["vcs"];
  startedOn: Date;
  finishedOn: Date;
  /** SOURCE_DATE_EPOCH: the times, and nothing random. */
  epoch?: number;
  env: NodeJS.ProcessEnv;
}

/** The provenance attestation of one platform's image. */
export function collectProvenance(wanted: ProvenanceRequest, build: ProvenanceBuild) {
  const { request, dockerfile, graph, root } = build;
  const order = root ? inputsFirst([root], (d) => graph.vertices[d]?.inputs ?? []) : [];
  const stepIds = new Map(order.map((digest, i) => [digest, `step${i}`]));
  const materials: ProvenanceInput["materials"] = [];
  const seen = new Set<string>();
  let hermetic = true;
  for (const digest of order) {
    const op = graph.vertices[digest]!.op;
    if (op.kind === "image" && /^sha256:[0-9a-f]{64}$/.test(op.digest)) {
      const uri = imagePurl(op.ref, formatPlatform(op.platform as Platform));
      if (!seen.has(uri + op.digest)) {
        seen.add(uri + op.digest);
        materials.push({ uri, digest: { sha256: op.digest.slice("sha256:".length) } });
      }
    } else if (op.kind === "http" && op.checksum?.startsWith("sha256:")) {
      materials.push({ uri: op.url, digest: { sha256: op.checksum.slice("sha256:".length) } });
    } else if (op.kind === "exec" && op.network !== "none") {
      hermetic = false;
    } else if (op.kind === "http" || op.kind === "git") {
      hermetic = false;
    }
  }
  if (build.vcs?.source && /^[0-9a-f]{40}$/.test(build.vcs.revision)) {
    materials.push({ uri: build.vcs.source, digest: { sha1: build.vcs.revision } });
  }
  const steps: ProvenanceStep[] = order.map((digest) => {
    const vertex = graph.vertices[digest]!;
    const inputs = vertex.inputs.map((input) => `${stepIds.get(input)}:0`);
    return { id: stepIds.get(digest)!, op: vertex.op, ...(inputs.length > 0 ? { inputs } : {}) };
  });
  const relative = path.relative(dockerfile.contextDir, dockerfile.dockerfilePath);
  const time = (date: Date) =>
    (build.epoch !== undefined ? new Date(build.epoch * 1000) : date).toISOString().replace(/\.\d{3}Z$/, "Z");
  const input: ProvenanceInput = {
    mode: wanted.mode,
    version: wanted.version,
    builderId: builderId(build.env),
    builderPlatform: formatPlatform(hostPlatform()),
    dockerfile: {
      path: relative && !relative.startsWith("..") ? relative : path.basename(dockerfile.dockerfilePath),
      sha256: createHash("sha256").update(dockerfile.source).digest("hex"),
    },
    ...(request.target !== undefined ? { target: request.target } : {}),
    buildArgs: request.buildArgs ?? {},
    labels: request.labels ?? {},
    secrets: (request.secrets ?? []).map((s) => s.id),
    ssh: (request.ssh ?? []).map((s) => s.id),
    locals: [...new Set(["context", "dockerfile", ...build.localSources])],
    materials,
    ...(build.vcs ? { vcs: build.vcs } : {}),
    startedOn: time(build.startedOn),
    finishedOn: time(build.finishedOn),
    hermetic,
    reproducible: build.epoch !== undefined,
    ...(wanted.mode === "max" ? { steps } : {}),
  };
  return provenanceAttestation(input);
}
