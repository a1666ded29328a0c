/**
 * SLSA provenance of a build, as BuildKit writes it (moby/buildkit docs/attestations/
 * slsa-definitions.md): SLSA v1 by default (`buildDefinition` + `runDetails`), v0.2 on request
 * (`builder`, `invocation`, `materials`). Made from plain data the build collected
 * (build/provenance.ts): the Dockerfile, the request's target, args, secret and ssh ids (never a
 * secret's value), the base images as resolved, the context's git checkout, the build's times and,
 * in `mode=max`, its steps.
 *
 * `mode=min` leaves out what could be sensitive or large: build arg values, secret and ssh ids,
 * the step list. With SOURCE_DATE_EPOCH the statement's bytes depend only on the inputs: the
 * times are the epoch's and the invocation id is derived from the inputs, so two identical builds
 * give the same attestation, and so the same index digest.
 */
import { createHash } from "node:crypto";
import {
  type Attestation,
  IN_TOTO_STATEMENT_V1,
  IN_TOTO_STATEMENT_V01,
  type InTotoStatement,
  type InTotoSubject,
  SLSA_PROVENANCE_V1,
  SLSA_PROVENANCE_V02,
} from "./attestation.js";

/** BuildKit's build types: its documents of the predicate's structure. */
export const BUILD_TYPE_V1 =
  "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
export const BUILD_TYPE_V02 = "https://mobyproject.org/buildkit@v1";

/** A resolved dependency (v1) or material (v0.2): a purl or URL with the digest it had. */
export interface ProvenanceMaterial {
  uri: string;
  digest: Record<string, string>;
}

/** One step of the build graph, as BuildKit's `llbDefinition` lists one: `inputs` are `stepN:0`. */
export interface ProvenanceStep {
  id: string;
  op: unknown;
  inputs?: string[];
}

/** What the build knows, as plain data (JSON-safe). */
export interface ProvenanceInput {
  mode: "min" | "max";
  version: "v1" | "v0.2";
  /** The build's URL in CI (`https://github.com/O/R/actions/runs/N`), else tbuild's own purl. */
  builderId: string;
  /** The build machine's platform (`linux/amd64`), not the image's. */
  builderPlatform: string;
  /** The Dockerfile: its path in the context (BuildKit's `filename`), and the sha256 of its bytes. */
  dockerfile: { path: string; sha256: string };
  target?: string;
  buildArgs: Record<string, string>;
  labels: Record<string, string>;
  secrets: string[];
  ssh: string[];
  /** Local sources by name: `context`, `dockerfile`, named directory contexts. */
  locals: string[];
  /** Base images (`pkg:docker/...`), git and http sources. */
  materials: ProvenanceMaterial[];
  /** The context's git checkout: its remote (without credentials) and commit. */
  vcs?: { source?: string; revision: string };
  startedOn: string;
  finishedOn: string;
  /** Whether no step used the network (no RUN, or every RUN with `--network=none`). */
  hermetic: boolean;
  /** With SOURCE_DATE_EPOCH: the invocation id is derived from the inputs, not random. */
  reproducible: boolean;
  /** mode=max: the build graph's steps. */
  steps?: ProvenanceStep[];
}

export function provenanceAttestation(input: ProvenanceInput): Attestation {
  const predicateType = input.version === "v1" ? SLSA_PROVENANCE_V1 : SLSA_PROVENANCE_V02;
  const predicate = input.version === "v1" ? predicateV1(input) : predicateV02(input);
  return {
    kind: "provenance",
    predicateType,
    file: "provenance.json",
    statement: async (subject: InTotoSubject[]): Promise<InTotoStatement> => ({
      _type: input.version === "v1" ? IN_TOTO_STATEMENT_V1 : IN_TOTO_STATEMENT_V01,
      subject,
      predicateType,
      predicate,
    }),
  };
}

/** BuildKit's frontend attributes: `build-arg:K` (max only), `label:K`, `target`, `filename`. */
function requestArgs(input: ProvenanceInput): Record<string, string> {
  const args: Record<string, string> = {};
  if (input.mode === "max") {
    for (const key of Object.keys(input.buildArgs).sort()) args[`build-arg:${key}`] = input.buildArgs[key]!;
  }
  for (const key of Object.keys(input.labels).sort()) args[`label:${key}`] = input.labels[key]!;
  if (input.target !== undefined) args.target = input.target;
  return args;
}

function requestParameters(input: ProvenanceInput) {
  return {
    frontend: "dockerfile.v0",
    args: requestArgs(input),
    locals: input.locals.map((name) => ({ name })),
    ...(input.mode === "max"
      ? { secrets: input.secrets.map((id) => ({ id })), ssh: input.ssh.map((id) => ({ id })) }
      : {}),
  };
}

/** Random per build, as BuildKit's; derived from the inputs with SOURCE_DATE_EPOCH. */
function invocationId(input: ProvenanceInput): string {
  if (!input.reproducible) return createHash("sha256").update(crypto.randomUUID()).digest("hex").slice(0, 25);
  const { steps: _steps, ...rest } = input;
  return createHash("sha256").update(JSON.stringify(rest)).digest("hex").slice(0, 25);
}

function buildkitMetadata(input: ProvenanceInput) {
  return input.vcs
    ? { vcs: { ...(input.vcs.source ? { source: input.vcs.source } : {}), revision: input.vcs.revision } }
    : undefined;
}

function predicateV1(input: ProvenanceInput) {
  const metadata = buildkitMetadata(input);
  return {
    buildDefinition: {
      buildType: BUILD_TYPE_V1,
      externalParameters: {
        configSource: { path: input.dockerfile.path, digest: { sha256: input.dockerfile.sha256 } },
        request: requestParameters(input),
      },
      internalParameters: {
        ...(input.mode === "max" && input.steps ? { buildConfig: { llbDefinition: input.steps } } : {}),
        builderPlatform: input.builderPlatform,
      },
      resolvedDependencies: input.materials,
    },
    runDetails: {
      builder: { id: input.builderId },
      metadata: {
        invocationID: invocationId(input),
        startedOn: input.startedOn,
        finishedOn: input.finishedOn,
        buildkit_completeness: { request: input.mode === "max", resolvedDependencies: false },
        buildkit_hermetic: input.hermetic,
        buildkit_reproducible: input.reproducible,
        ...(metadata ? { buildkit_metadata: metadata } : {}),
      },
    },
  };
}

function predicateV02(input: ProvenanceInput) {
  const metadata = buildkitMetadata(input);
  return {
    builder: { id: input.builderId },
    buildType: BUILD_TYPE_V02,
    materials: input.materials,
    invocation: {
      configSource: { entryPoint: input.dockerfile.path, digest: { sha256: input.dockerfile.sha256 } },
      parameters: requestParameters(input),
      environment: { platform: input.builderPlatform },
    },
    ...(input.mode === "max" && input.steps ? { buildConfig: { llbDefinition: input.steps } } : {}),
    metadata: {
      buildInvocationID: invocationId(input),
      buildStartedOn: input.startedOn,
      buildFinishedOn: input.finishedOn,
      completeness: { parameters: input.mode === "max", environment: true, materials: false },
      reproducible: input.reproducible,
      "https://mobyproject.org/buildkit@v1#hermetic": input.hermetic,
      ...(metadata ? { "https://mobyproject.org/buildkit@v1#metadata": metadata } : {}),
    },
  };
}

/**
 * BuildKit's purl of an image (its util/purl): `pkg:docker/NAMESPACE/NAME@TAG?platform=os%2Farch`,
 * Docker Hub names in their short form (`busybox`, `user/app`), others with their registry.
 */
export function imagePurl(reference: string, platform?: string): string {
  let name = reference;
  let version: string | undefined;
  const at = name.indexOf("@");
  if (at >= 0) {
    version = name.slice(at + 1);
    name = name.slice(0, at);
  }
  const colon = name.lastIndexOf(":");
  if (colon > name.lastIndexOf("/")) {
    version = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  name = name.replace(/^docker\.io\/library\//, "").replace(/^docker\.io\//, "");
  const qualifier = platform !== undefined ? `?platform=${encodeURIComponent(platform)}` : "";
  return `pkg:docker/${name}${version !== undefined ? `@${version}` : ""}${qualifier}`;
}
