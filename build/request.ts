/**
 * A build, asked for in plain data: what the CLI parses its flags into (cli/build-request.ts),
 * what the library's `build()` takes, and what a remote worker will be sent. Nothing in it is a
 * class or a function, so it survives JSON.stringify unchanged (BuildKit's SolveRequest, buildx's
 * build.Options). Relative paths are relative to the caller's working directory (`cwd`).
 */
import type { AttestationRequest } from "../attest/attestation.js";
import { TbuildError } from "../errors/index.js";
import type { ExportRequest } from "../exporters/request.js";
import {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  type Platform,
  parsePlatform,
} from "../oci/platform.js";
import type { CacheExportSpec, CacheImportSpec } from "../solver/build-cache.js";

export interface BuildRequest {
  /** The build context: a directory. */
  context: string;
  /** The Dockerfile; `CONTEXT/Dockerfile` (or `dockerfile`) when absent. */
  dockerfile?: string;
  /** `--build-arg`: values of the Dockerfile's ARGs. */
  buildArgs?: Record<string, string>;
  /** The stage to build; the last one when absent. */
  target?: string;
  /** Target platforms (`linux/arm64`); this machine's when absent. One at a time for now. */
  platforms?: string[];
  /** `--build-context NAME=SRC`: a directory, `docker-image://REF` or `oci-layout://DIR[:TAG]`. */
  contexts?: Record<string, string>;
  /** Secrets for `RUN --mount=type=secret`, by id: from a file (`src`) or an environment variable (`env`; the id's own when neither is given). */
  secrets?: SecretRequest[];
  /** SSH agents for `RUN --mount=type=ssh`, by id: a socket, else `$SSH_AUTH_SOCK`. */
  ssh?: SshRequest[];
  /** Where the image goes besides the local store's `tags` (`-o`). */
  outputs?: ExportRequest[];
  cacheFrom?: CacheImportSpec[];
  cacheTo?: CacheExportSpec;
  /** Labels added to the image config. */
  labels?: Record<string, string>;
  /** The network of every RUN without its own `--network`. */
  network?: "default" | "none" | "host";
  /** Run every step, reusing nothing. */
  noCache?: boolean;
  /** Run these stages' steps without the cache. */
  noCacheFilter?: string[];
  /**
   * SOURCE_DATE_EPOCH, in seconds: the image's `created` and the newest time in its new layers.
   * When absent, a `SOURCE_DATE_EPOCH` build arg counts, as in BuildKit.
   */
  epoch?: number;
  /** A remote worker (`ssh://HOST`): not supported yet, and refused rather than ignored. */
  worker?: string;
  /** Names for the image in the local store (and in oci/docker archives). */
  tags?: string[];
  /** Push the `tags` to their registries. */
  push?: boolean;
  /** Ask the registry for base images even when the store has them. */
  pull?: boolean;
  /** Steps run at once; config.toml's `[build] jobs`, else the CPU count. */
  jobs?: number;
  /** Kill a RUN step still running after this many milliseconds, and fail the build. */
  stepTimeoutMs?: number;
  /** Write the image digest to this file. */
  iidFile?: string;
  /** Write the build's metadata (digests, names) as JSON to this file. */
  metadataFile?: string;
  /** After the build, an `explain` event for each step that ran: why it missed the cache. */
  explain?: boolean;
  /** `--provenance`, `--sbom`, `--attest`: absent, buildx's default (provenance mode=min for a pushed image). */
  attestations?: AttestationRequest;
}

export type SecretRequest = { id: string; src: string } | { id: string; env?: string };

export interface SshRequest {
  id: string;
  /** An agent's socket; `$SSH_AUTH_SOCK` when absent. */
  socket?: string;
}

const KEYS: readonly (keyof BuildRequest)[] = [
  "context",
  "dockerfile",
  "buildArgs",
  "target",
  "platforms",
  "contexts",
  "secrets",
  "ssh",
  "outputs",
  "cacheFrom",
  "cacheTo",
  "labels",
  "network",
  "noCache",
  "noCacheFilter",
  "epoch",
  "worker",
  "tags",
  "push",
  "pull",
  "jobs",
  "stepTimeoutMs",
  "iidFile",
  "metadataFile",
  "explain",
  "attestations",
];

export class BadBuildRequestError extends TbuildError {
  constructor(message: string) {
    super("E_BAD_REQUEST", `build request: ${message}`);
  }
}

/**
 * `request` as the build takes it, or an error naming the field that is wrong: a caller without
 * types (JavaScript, JSON from elsewhere) learns of a misspelt or mistyped field at once rather
 * than from a build that quietly did something else.
 */
export function checkBuildRequest(request: unknown): BuildRequest {
  if (typeof request !== "object" || request === null || Array.isArray(request)) {
    throw new BadBuildRequestError('must be an object such as { context: "." }');
  }
  const fields = request as Record<string, unknown>;
  for (const key of Object.keys(fields)) {
    if (!(KEYS as readonly string[]).includes(key)) {
      throw new BadBuildRequestError(`unknown field "${key}" (known: ${KEYS.join(", ")})`);
    }
  }
  const expect = (key: keyof BuildRequest, what: string, ok: (value: unknown) => boolean) => {
    const value = fields[key];
    if (value !== undefined && !ok(value)) throw new BadBuildRequestError(`"${key}" must be ${what}`);
  };
  const isString = (v: unknown) => typeof v === "string";
  const isStrings = (v: unknown) => Array.isArray(v) && v.every(isString);
  const isRecord = (v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every(isString);
  const isBoolean = (v: unknown) => typeof v === "boolean";
  const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 1;
  if (typeof fields.context !== "string" || fields.context === "") {
    throw new BadBuildRequestError('"context" must be a directory, such as "."');
  }
  for (const key of ["dockerfile", "target", "worker", "iidFile", "metadataFile"] as const) {
    expect(key, "a string", isString);
  }
  for (const key of ["platforms", "tags", "noCacheFilter"] as const)
    expect(key, "an array of strings", isStrings);
  for (const key of ["buildArgs", "contexts", "labels"] as const) {
    expect(key, "an object of string values", isRecord);
  }
  for (const key of ["noCache", "push", "pull", "explain"] as const) expect(key, "true or false", isBoolean);
  for (const key of ["jobs", "stepTimeoutMs"] as const) expect(key, "a whole number of at least 1", isCount);
  expect("epoch", "whole seconds since 1970", (v) => Number.isSafeInteger(v) && (v as number) >= 0);
  expect("network", '"default", "none" or "host"', (v) => v === "default" || v === "none" || v === "host");
  const isObjects = (v: unknown) =>
    Array.isArray(v) && v.every((item) => typeof item === "object" && item !== null && isString(item.id));
  expect("secrets", "an array of { id, src } or { id, env }", isObjects);
  expect("ssh", "an array of { id, socket? }", isObjects);
  const isTyped = (v: unknown) =>
    typeof v === "object" && v !== null && isString((v as { type?: unknown }).type);
  expect("outputs", "an array of { type, ... }", (v) => Array.isArray(v) && v.every(isTyped));
  // `mounts` (cache mounts travel with the cache) is true or false, and never for inline cache,
  // which rides in an image config.
  const isCacheSpec = (v: unknown) => {
    const mounts = (v as { mounts?: unknown } | null)?.mounts;
    return isTyped(v) && (mounts === undefined || isBoolean(mounts));
  };
  expect(
    "cacheFrom",
    "an array of { type, mounts?: boolean, ... }",
    (v) => Array.isArray(v) && v.every(isCacheSpec),
  );
  expect(
    "cacheTo",
    '{ type, mounts?: boolean, ... } (type "inline" cannot carry cache mounts)',
    (v) =>
      isCacheSpec(v) && !((v as { type: string }).type === "inline" && (v as { mounts?: boolean }).mounts),
  );
  expect(
    "attestations",
    '{ provenance?: false | { mode: "min" | "max", version: "v1" | "v0.2" }, sbom?: false }',
    (v) => {
      if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
      const { provenance, sbom, ...rest } = v as Record<string, unknown>;
      if (Object.keys(rest).length > 0) return false;
      const p = provenance as { mode?: unknown; version?: unknown } | false | undefined;
      const provenanceOk =
        p === undefined ||
        p === false ||
        (typeof p === "object" &&
          p !== null &&
          (p.mode === "min" || p.mode === "max") &&
          (p.version === "v1" || p.version === "v0.2"));
      return (
        provenanceOk && (sbom === undefined || sbom === false || (typeof sbom === "object" && sbom !== null))
      );
    },
  );
  return request as BuildRequest;
}

/**
 * The platforms a build is for, normalized (`arm64` is `linux/arm64`, `linux/arm` is
 * `linux/arm/v7`) and each once, in the order given: this machine's, unless the request names some.
 */
export function targetPlatformsOf(platforms: string[] | undefined): Platform[] {
  const named = (platforms ?? []).map((p) => p.trim()).filter((p) => p !== "");
  if (named.length === 0) return [hostPlatform()];
  const seen = new Map<string, Platform>();
  for (const specifier of named) {
    const platform = normalizePlatform(parsePlatform(specifier));
    seen.set(formatPlatform(platform), platform);
  }
  return [...seen.values()];
}

/** The one platform a single-platform build (or one platform's part of a build) is for. */
export function targetPlatformOf(platforms: string[] | undefined): Platform {
  const all = targetPlatformsOf(platforms);
  if (all.length > 1) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `--platform ${all.map(formatPlatform).join(",")}: several platforms cannot be built here (one at a time)`,
    );
  }
  return all[0]!;
}
