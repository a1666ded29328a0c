/**
 * `-o`/`--output` specs, read as buildx reads them: CSV fields of `key=value` (a field may be
 * quoted, so `"name=a,b"` names two images), `type=` choosing the exporter; a bare value is a
 * directory for the local exporter, and `-` the final filesystem as a tar on standard output.
 */
import { TbuildError, UsageError } from "../errors/index.js";
import type { LayerCompression } from "../oci/layer.js";
import { parseReference } from "../oci/reference.js";

export type ExportType = "image" | "oci" | "docker" | "tar" | "local";

/** What to write where: one `-o` (or `-t`/`--push`, which the CLI turns into a `type=image` request). */
export interface ExportRequest {
  type: ExportType;
  /** A file (or `-`, standard output) for `oci`, `docker` and `tar`; a directory for `local`, and for `oci`/`docker` with `tar=false`. */
  dest?: string;
  /** Image names: stored under (`image`), pushed to (`push`), written into the archive (`oci`, `docker`). */
  names?: string[];
  push?: boolean;
  /** `oci` and `docker`: false writes the layout as a directory rather than one tar. */
  tar?: boolean;
  compression?: LayerCompression;
  compressionLevel?: number;
  /** Recompress layers already compressed with another algorithm (uncompressed ones always are). */
  forceCompression?: boolean;
  /** OCI media types for the manifest, config and layers; false: Docker's schema2 ones. */
  ociMediaTypes?: boolean;
  /** Attestation manifests as OCI artifacts (subject, empty config: the default); false: BuildKit's legacy form. */
  ociArtifact?: boolean;
}

const TYPES: Record<string, ExportType> = {
  image: "image",
  registry: "image",
  oci: "oci",
  docker: "docker",
  tar: "tar",
  local: "local",
};

/** Attributes each exporter takes, as buildx spells them. */
const ATTRIBUTES: Record<ExportType, string[]> = {
  image: [
    "name",
    "push",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "oci-artifact",
  ],
  oci: [
    "dest",
    "name",
    "tar",
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "oci-artifact",
  ],
  docker: ["dest", "name", "tar", "compression", "compression-level", "force-compression", "oci-mediatypes"],
  tar: ["dest"],
  local: ["dest"],
};

/**
 * Attributes BuildKit knows and tbuild does not do yet: refused by name rather than ignored, so a
 * script relying on one learns it at once.
 */
const NOT_YET = new Set([
  "push-by-digest",
  "insecure",
  "dangling-name-prefix",
  "name-canonical",
  "unpack",
  "store",
  "annotation",
  "buildinfo",
  "buildinfo-attrs",
  "attestation-inline",
  "rewrite-timestamp",
  "platform-split",
  "unsafe-internal-store",
  "registry.insecure",
]);

/** One `-o` value as an ExportRequest; throws a UsageError saying what is wrong with it. */
export function parseOutputSpec(text: string): ExportRequest {
  const spec = text.trim();
  if (spec === "") throw new UsageError("--output is empty: give type=TYPE[,dest=PATH,...] or a directory");
  const fields = splitCsv(spec, text);
  if (fields.length === 1 && !fields[0]!.includes("=")) {
    // buildx: a bare value is a directory for the local exporter; `-` is a tar on standard output.
    return spec === "-" ? { type: "tar", dest: "-" } : { type: "local", dest: spec };
  }
  const attributes = new Map<string, string>();
  let typeName: string | undefined;
  for (const field of fields) {
    const eq = field.indexOf("=");
    if (eq < 0) throw new UsageError(`--output "${text}": "${field}" is not key=value`);
    const key = field.slice(0, eq).trim().toLowerCase();
    const value = field.slice(eq + 1);
    if (key === "") throw new UsageError(`--output "${text}": "${field}" has no key before "="`);
    if (key === "type") typeName = value.trim();
    else if (attributes.has(key)) throw new UsageError(`--output "${text}": ${key} is given twice`);
    else attributes.set(key, value);
  }
  // `-o dest=DIR` without a type is the local exporter, as a bare directory is.
  typeName ??= attributes.size === 1 && attributes.has("dest") ? "local" : undefined;
  if (typeName === undefined) {
    throw new UsageError(
      `--output "${text}" has no type=: give type=image, registry, oci, docker, tar or local`,
    );
  }
  const type = TYPES[typeName];
  if (type === undefined) {
    if (typeName === "cacheonly" || typeName === "moby") {
      throw new TbuildError("E_NOT_SUPPORTED", `--output type=${typeName} is not supported yet`);
    }
    throw new UsageError(
      `--output "${text}": unknown type "${typeName}": use image, registry, oci, docker, tar or local`,
    );
  }
  const request: ExportRequest = { type };
  if (typeName === "registry") request.push = true;
  for (const [key, value] of attributes) {
    const allowed = ATTRIBUTES[type];
    if (!allowed.includes(key)) {
      if (NOT_YET.has(key) || key.startsWith("annotation")) {
        throw new TbuildError("E_NOT_SUPPORTED", `--output ${key}= is not supported yet`);
      }
      throw new UsageError(
        `--output "${text}": type=${typeName} takes no ${key}= (it takes ${allowed.map((a) => `${a}=`).join(", ")})`,
      );
    }
    applyAttribute(request, key, value, text);
  }
  checkRequest(request, text);
  return request;
}

function applyAttribute(request: ExportRequest, key: string, value: string, text: string): void {
  switch (key) {
    case "dest":
      if (value === "") throw new UsageError(`--output "${text}": dest= is empty`);
      request.dest = value;
      return;
    case "name": {
      const names = value
        .split(",")
        .map((n) => n.trim())
        .filter((n) => n !== "");
      if (names.length === 0) throw new UsageError(`--output "${text}": name= is empty`);
      for (const name of names) {
        const { digest } = parseReference(name);
        if (digest !== undefined) {
          throw new UsageError(
            `--output "${text}": name=${name}: a digest is not a tag; give NAME[:TAG] without "@${digest}"`,
          );
        }
      }
      request.names = names;
      return;
    }
    case "push":
      request.push = parseBool(key, value, text);
      return;
    case "tar":
      request.tar = parseBool(key, value, text);
      return;
    case "force-compression":
      request.forceCompression = parseBool(key, value, text);
      return;
    case "oci-mediatypes":
      request.ociMediaTypes = parseBool(key, value, text);
      return;
    case "oci-artifact":
      request.ociArtifact = parseBool(key, value, text);
      return;
    case "compression":
      if (value !== "gzip" && value !== "zstd" && value !== "uncompressed") {
        if (value === "estargz") {
          throw new TbuildError("E_NOT_SUPPORTED", "--output compression=estargz is not supported yet");
        }
        throw new UsageError(
          `--output "${text}": compression must be gzip, zstd or uncompressed, not "${value}"`,
        );
      }
      request.compression = value;
      return;
    case "compression-level": {
      if (!/^-?\d+$/.test(value.trim())) {
        throw new UsageError(`--output "${text}": compression-level must be a whole number, not "${value}"`);
      }
      request.compressionLevel = Number(value.trim());
      return;
    }
  }
}

function checkRequest(request: ExportRequest, text: string): void {
  if (request.type === "local" && request.dest === undefined) {
    throw new UsageError(`--output "${text}": type=local needs dest=DIRECTORY`);
  }
  if (request.type === "local" && request.dest === "-") {
    throw new UsageError(
      `--output "${text}": type=local writes a directory; for a tar on standard output use type=tar,dest=-`,
    );
  }
  if (request.tar === false && request.dest === "-") {
    throw new UsageError(
      `--output "${text}": tar=false writes a directory, which cannot go to standard output`,
    );
  }
  if (request.tar === false && request.dest === undefined) {
    throw new UsageError(`--output "${text}": tar=false needs dest=DIRECTORY`);
  }
  const level = request.compressionLevel;
  if (level !== undefined) {
    const compression = request.compression ?? "gzip";
    const range = COMPRESSION_LEVELS[compression];
    if (range === undefined) {
      throw new UsageError(`--output "${text}": compression-level does not apply to uncompressed layers`);
    }
    if (level < range[0] || level > range[1]) {
      throw new UsageError(
        `--output "${text}": compression-level for ${compression} must be from ${range[0]} to ${range[1]}, not ${level}`,
      );
    }
  }
}

/** The levels zlib's gzip and zstd accept (zstd's negative "fast" levels are left out). */
export const COMPRESSION_LEVELS: Partial<Record<LayerCompression, [number, number]>> = {
  gzip: [0, 9],
  zstd: [1, 22],
};

/** Go's strconv.ParseBool, which buildx uses for these attributes. */
function parseBool(key: string, value: string, text: string): boolean {
  if (["1", "t", "T", "true", "TRUE", "True"].includes(value)) return true;
  if (["0", "f", "F", "false", "FALSE", "False"].includes(value)) return false;
  throw new UsageError(`--output "${text}": ${key} must be true or false, not "${value}"`);
}

/** Go's encoding/csv for one line, as buildx reads an output spec: `"` quotes a field, `""` is a quote inside one. */
function splitCsv(line: string, text: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new UsageError(`--output "${text}": a quote is not closed`);
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += line[i++];
      }
      if (i < line.length && line[i] !== ",") {
        throw new UsageError(`--output "${text}": unexpected text after a quoted field`);
      }
    } else {
      const comma = line.indexOf(",", i);
      const end = comma < 0 ? line.length : comma;
      field = line.slice(i, end);
      if (field.includes('"')) throw new UsageError(`--output "${text}": a quote inside an unquoted field`);
      i = end;
    }
    fields.push(field);
    if (i >= line.length) return fields;
    i++; // the comma
  }
}
