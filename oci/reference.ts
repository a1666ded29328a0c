/**
 * Image references (`busybox`, `ghcr.io/org/app:1.2`, `localhost:5000/x@sha256:…`) with Docker's
 * grammar and normalization (distribution/reference's ParseNormalizedNamed): a familiar name is
 * completed to `docker.io/library/<name>`, `index.docker.io` becomes `docker.io`, and the tag
 * `latest` is assumed only when neither a tag nor a digest is given.
 */
import { TbuildError } from "../errors/index.js";

/** A parsed, normalized image reference: `<domain>/<path>[:<tag>][@<digest>]`. */
export interface ImageReference {
  /** The registry host, with its port if any: `docker.io`, `localhost:5000`, `[::1]:5000`. */
  domain: string;
  /** The repository within the registry: `library/busybox`, `org/app`. */
  path: string;
  tag?: string;
  /** `algorithm:hex`, e.g. `sha256:` and 64 lowercase hex characters. */
  digest?: string;
}

/** An image reference that is not valid; the message names the text and what is wrong with it. */
export class InvalidReferenceError extends TbuildError {
  /** The text as given. */
  readonly reference: string;

  constructor(reference: string, reason: string) {
    const shown = reference.length > 300 ? `${reference.slice(0, 300)}…` : reference;
    super("E_INVALID_REFERENCE", `invalid image reference ${JSON.stringify(shown)}: ${reason}`);
    this.reference = reference;
  }
}

const DEFAULT_DOMAIN = "docker.io";
const LEGACY_DEFAULT_DOMAIN = "index.docker.io";
const OFFICIAL_REPO_PREFIX = "library/";
const DEFAULT_TAG = "latest";
/** Docker's limit on the repository path (the domain is not counted). */
const MAX_PATH_LENGTH = 255;
/** No valid reference comes near this; the cap keeps the regular expressions fast on hostile input. */
const MAX_REFERENCE_LENGTH = 4096;

// The grammar of distribution/reference (regexp.go), in JavaScript syntax.
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
const REMOTE_NAME = `${PATH_COMPONENT}(?:/${PATH_COMPONENT})*`;
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN_AND_PORT = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const TAG = "[\\w][\\w.-]{0,127}";
const DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}";
const REFERENCE_RE = new RegExp(`^((?:${DOMAIN_AND_PORT}/)?${REMOTE_NAME})(?::(${TAG}))?(?:@(${DIGEST}))?$`);
const NAME_RE = new RegExp(`^(?:(${DOMAIN_AND_PORT})/)?(${REMOTE_NAME})$`);
const PATH_COMPONENT_RE = new RegExp(`^${PATH_COMPONENT}$`);
const DOMAIN_RE = new RegExp(`^${DOMAIN_AND_PORT}$`);
const TAG_RE = new RegExp(`^${TAG}$`);
const IDENTIFIER_RE = /^[a-f0-9]{64}$/;

/** The digest algorithms Docker accepts, with the length of their hex encoding. */
const DIGEST_ALGORITHMS: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/**
 * Parses an image reference as `docker pull` and `FROM` do: `busybox` →
 * `docker.io/library/busybox:latest`, `host:5000/a/b:tag@sha256:…` kept as written. A reference
 * with both a tag and a digest keeps both (the digest is what a pull resolves).
 */
export function parseReference(text: string): ImageReference {
  if (text === "") throw new InvalidReferenceError(text, "the reference is empty");
  if (text.length > MAX_REFERENCE_LENGTH) {
    throw new InvalidReferenceError(text, `it is ${text.length} characters long`);
  }
  if (IDENTIFIER_RE.test(text)) {
    throw new InvalidReferenceError(
      text,
      "a 64-character hexadecimal string is an image ID, not a repository name (write sha256:<hex> after @ to pin a digest)",
    );
  }
  const { domain, remainder } = splitDockerDomain(text);
  const colon = remainder.indexOf(":");
  const remote = colon < 0 ? remainder : remainder.slice(0, colon);
  if (remote.toLowerCase() !== remote) {
    throw new InvalidReferenceError(text, `repository name ${JSON.stringify(remote)} must be lowercase`);
  }
  const full = `${domain}/${remainder}`;
  const match = REFERENCE_RE.exec(full);
  if (match === null) {
    if (full.toLowerCase() !== full && REFERENCE_RE.test(full.toLowerCase())) {
      throw new InvalidReferenceError(text, "repository name must be lowercase");
    }
    throw new InvalidReferenceError(text, diagnose(text));
  }
  const [, name, tag, digest] = match;
  const nameMatch = NAME_RE.exec(name!)!;
  const path = nameMatch[2]!;
  if (path.length > MAX_PATH_LENGTH) {
    throw new InvalidReferenceError(
      text,
      `repository name must not be more than ${MAX_PATH_LENGTH} characters (${JSON.stringify(path)} has ${path.length})`,
    );
  }
  if (digest !== undefined) {
    const problem = digestProblem(digest);
    if (problem !== undefined) throw new InvalidReferenceError(text, problem);
  }
  const ref: ImageReference = { domain: nameMatch[1]!, path };
  if (tag !== undefined) ref.tag = tag;
  else if (digest === undefined) ref.tag = DEFAULT_TAG;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** The full form: `docker.io/library/busybox:latest`, `host:5000/app:1@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  return repositoryName(ref) + suffix(ref);
}

/** As `docker` prints it: `busybox:latest`, `user/app:1`, `myhost:5000/app:1`. */
export function familiarReference(ref: ImageReference): string {
  let name = `${ref.domain}/${ref.path}`;
  if (ref.domain === DEFAULT_DOMAIN) {
    name = ref.path;
    // Only a single-level name under library/ is an official image; library/a/b stays as is.
    const official = ref.path.slice(OFFICIAL_REPO_PREFIX.length);
    if (ref.path.startsWith(OFFICIAL_REPO_PREFIX) && !official.includes("/")) name = official;
  }
  return name + suffix(ref);
}

/** The repository without tag or digest: `docker.io/library/busybox`. */
export function repositoryName(ref: ImageReference): string {
  return `${ref.domain}/${ref.path}`;
}

function suffix(ref: ImageReference): string {
  return (ref.tag !== undefined ? `:${ref.tag}` : "") + (ref.digest !== undefined ? `@${ref.digest}` : "");
}

/**
 * Docker's rule for where the registry ends: the first `/`-separated element is a registry when
 * it is `localhost`, contains `.` or `:`, or has upper-case letters (repository names cannot);
 * otherwise the name lives on Docker Hub, under `library/` when it has a single element.
 */
function splitDockerDomain(name: string): { domain: string; remainder: string; explicit: boolean } {
  const slash = name.indexOf("/");
  if (slash < 0) return { domain: DEFAULT_DOMAIN, remainder: OFFICIAL_REPO_PREFIX + name, explicit: false };
  const first = name.slice(0, slash);
  const explicit = first === "localhost" || /[.:]/.test(first) || first.toLowerCase() !== first;
  const domain = !explicit || first === LEGACY_DEFAULT_DOMAIN ? DEFAULT_DOMAIN : first;
  let remainder = explicit ? name.slice(slash + 1) : name;
  if (domain === DEFAULT_DOMAIN && !remainder.includes("/")) remainder = OFFICIAL_REPO_PREFIX + remainder;
  return { domain, remainder, explicit };
}

/** What go-digest's validation would object to, or undefined. */
function digestProblem(digest: string): string | undefined {
  const colon = digest.indexOf(":");
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  const length = DIGEST_ALGORITHMS[algorithm];
  if (length === undefined) {
    return `unsupported digest algorithm ${JSON.stringify(algorithm)} (use sha256, sha384 or sha512)`;
  }
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) {
    return `digest ${JSON.stringify(digest)} must be "${algorithm}:" followed by ${length} lowercase hexadecimal characters`;
  }
  return undefined;
}

/** Names the part of a reference that breaks the grammar, for a message a person can act on. */
function diagnose(text: string): string {
  const at = text.indexOf("@");
  const beforeDigest = at < 0 ? text : text.slice(0, at);
  if (at >= 0) {
    const digest = text.slice(at + 1);
    if (!new RegExp(`^${DIGEST}$`).test(digest)) {
      return `digest ${JSON.stringify(digest)} must be "sha256:" followed by 64 lowercase hexadecimal characters`;
    }
  }
  const lastSlash = beforeDigest.lastIndexOf("/");
  const tagColon = beforeDigest.indexOf(":", lastSlash + 1);
  const nameText = tagColon < 0 ? beforeDigest : beforeDigest.slice(0, tagColon);
  if (tagColon >= 0) {
    const tag = beforeDigest.slice(tagColon + 1);
    if (!TAG_RE.test(tag)) {
      return tag.length > 128
        ? `tag must not be more than 128 characters (it has ${tag.length})`
        : `tag ${JSON.stringify(tag)} must start with a letter, digit or "_" and contain only letters, digits, "_", "." and "-"`;
    }
  }
  const { domain, remainder, explicit } = splitDockerDomain(nameText);
  if (explicit && !DOMAIN_RE.test(domain)) {
    return `registry ${JSON.stringify(domain)} is not a valid host name or address (with an optional :port)`;
  }
  for (const component of remainder.split("/")) {
    if (!PATH_COMPONENT_RE.test(component)) {
      return component === ""
        ? "the repository path has an empty component (a leading, trailing or doubled /)"
        : `repository path component ${JSON.stringify(component)} must be lowercase letters and digits, separated by ".", "_", "__" or "-"`;
    }
  }
  return "invalid reference format";
}
