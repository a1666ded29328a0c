/**
 * The SPDX 2.3 JSON document of what the scanner found, shaped as BuildKit's SBOM (syft's SPDX
 * output) is: one root package per scanned source (the image, and the extra stages or the context
 * BUILDKIT_SBOM_SCAN_STAGE / BUILDKIT_SBOM_SCAN_CONTEXT ask for) that the document DESCRIBES and
 * that CONTAINS each package found in it; each package with its purl as a PACKAGE-MANAGER
 * reference, its declared licence, and the file it was found in (a `files` entry with checksums,
 * related as syft relates them: OTHER "evident-by", and named in `sourceInfo`).
 *
 * Deterministic: the same scan gives the same bytes. `created` is the caller's time
 * (SOURCE_DATE_EPOCH's when set), and the document namespace is derived from the content, not
 * random, so a reproducible build reproduces its SBOM.
 */
import { createHash } from "node:crypto";
import type { FoundPackage, PackageType } from "./package.js";
import type { ScanResult } from "./scan.js";

export interface SbomSource {
  /** What was scanned: an image reference (`docker.io/library/app:latest`), a stage, `context`. */
  name: string;
  kind: "image" | "stage" | "context";
  scan: ScanResult;
}

export interface SpdxOptions {
  /** The document's name: the image's reference, or what the caller calls the build. */
  name: string;
  /** tbuild's version: `creators` says `Tool: tbuild-VERSION`. */
  toolVersion: string;
  /** `creationInfo.created`: SOURCE_DATE_EPOCH's time when set; now otherwise. */
  created?: Date;
}

/** The JSON document, with the fields this module writes (SPDX 2.3 names). */
export interface SpdxDocument {
  spdxVersion: "SPDX-2.3";
  dataLicense: "CC0-1.0";
  SPDXID: "SPDXRef-DOCUMENT";
  name: string;
  documentNamespace: string;
  creationInfo: { created: string; creators: string[]; licenseListVersion?: string };
  packages: Record<string, unknown>[];
  files: Record<string, unknown>[];
  hasExtractedLicensingInfos?: { licenseId: string; extractedText: string; name: string }[];
  relationships: {
    spdxElementId: string;
    relatedSpdxElement: string;
    relationshipType: string;
    comment?: string;
  }[];
}

const SOURCE_INFO: Record<PackageType, string> = {
  deb: "acquired package info from DPKG DB",
  apk: "acquired package info from APK DB",
  rpm: "acquired package info from RPM DB",
  npm: "acquired package info from installed node module manifest file",
  pypi: "acquired package info from installed python package manifest file",
  golang: "acquired package info from go module information",
};

function shortHash(...parts: string[]): string {
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 16);
}

/** SPDX ids allow letters, digits, `.` and `-`. */
function idPart(text: string): string {
  return text.replace(/[^A-Za-z0-9.-]+/g, "-").replace(/^-+|-+$/g, "") || "x";
}

const LICENSE_OPERATORS = new Set(["AND", "OR", "WITH"]);

/**
 * A declared licence as an SPDX license expression: kept when it reads as one (identifiers, `+`,
 * AND/OR/WITH, parentheses); otherwise a `LicenseRef-` that names it, with its text extracted.
 */
function licenseExpression(declared: string | undefined, extracted: Map<string, string>): string {
  if (!declared) return "NOASSERTION";
  const tokens = declared.replace(/[()]/g, " $& ").trim().split(/\s+/);
  let expectId = true;
  let depth = 0;
  let valid = tokens.length > 0;
  const out: string[] = [];
  for (const token of tokens) {
    if (token === "(") depth++;
    else if (token === ")") depth--;
    else if (LICENSE_OPERATORS.has(token.toUpperCase())) {
      if (expectId) valid = false;
      out.push(token.toUpperCase());
      expectId = true;
      continue;
    } else {
      if (!expectId || !/^[A-Za-z0-9][A-Za-z0-9.-]*\+?$/.test(token)) valid = false;
      expectId = false;
    }
    if (depth < 0) valid = false;
    out.push(token);
  }
  if (valid && !expectId && depth === 0) return out.join(" ").replace(/\( /g, "(").replace(/ \)/g, ")");
  const id = `LicenseRef-${idPart(declared)}`;
  extracted.set(id, declared);
  return id;
}

/** One SPDX document of the packages of `sources`. */
export function spdxDocument(sources: readonly SbomSource[], options: SpdxOptions): SpdxDocument {
  const packages: Record<string, unknown>[] = [];
  const files: Record<string, unknown>[] = [];
  const relationships: SpdxDocument["relationships"] = [];
  const extracted = new Map<string, string>();
  const usedIds = new Set<string>();
  const unique = (id: string) => {
    let candidate = id;
    for (let n = 2; usedIds.has(candidate); n++) candidate = `${id}-${n}`;
    usedIds.add(candidate);
    return candidate;
  };
  for (const source of sources) {
    const rootId = unique(`SPDXRef-DocumentRoot-${idPart(source.kind)}-${idPart(source.name)}`);
    packages.push({
      SPDXID: rootId,
      name: source.name,
      downloadLocation: "NOASSERTION",
      filesAnalyzed: false,
      primaryPackagePurpose: source.kind === "image" ? "CONTAINER" : "SOURCE",
      licenseConcluded: "NOASSERTION",
      licenseDeclared: "NOASSERTION",
      copyrightText: "NOASSERTION",
    });
    relationships.push({
      spdxElementId: "SPDXRef-DOCUMENT",
      relatedSpdxElement: rootId,
      relationshipType: "DESCRIBES",
    });
    const fileIds = new Map<string, string>();
    for (const [file, checksums] of Object.entries(source.scan.files)) {
      const id = unique(
        `SPDXRef-File-${idPart(file.slice(file.lastIndexOf("/") + 1))}-${shortHash(source.name, file)}`,
      );
      fileIds.set(file, id);
      files.push({
        SPDXID: id,
        fileName: file,
        checksums: [
          { algorithm: "SHA1", checksumValue: checksums.sha1 },
          { algorithm: "SHA256", checksumValue: checksums.sha256 },
        ],
        licenseConcluded: "NOASSERTION",
        copyrightText: "NOASSERTION",
      });
    }
    for (const pkg of source.scan.packages) {
      const id = unique(
        `SPDXRef-Package-${pkg.type}-${idPart(pkg.name)}-${shortHash(source.name, pkg.purl, pkg.foundIn)}`,
      );
      packages.push(packageEntry(pkg, id, extracted));
      relationships.push({ spdxElementId: rootId, relatedSpdxElement: id, relationshipType: "CONTAINS" });
      const fileId = fileIds.get(pkg.foundIn);
      if (fileId) {
        relationships.push({
          spdxElementId: id,
          relatedSpdxElement: fileId,
          relationshipType: "OTHER",
          comment: "evident-by: indicates the package's existence is evident by the given file",
        });
      }
    }
  }
  const content: Omit<SpdxDocument, "documentNamespace" | "creationInfo"> = {
    spdxVersion: "SPDX-2.3",
    dataLicense: "CC0-1.0",
    SPDXID: "SPDXRef-DOCUMENT",
    name: options.name,
    packages,
    files,
    ...(extracted.size > 0
      ? {
          hasExtractedLicensingInfos: [...extracted]
            .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
            .map(([licenseId, text]) => ({ licenseId, extractedText: text, name: text })),
        }
      : {}),
    relationships,
  };
  const digest = createHash("sha256").update(JSON.stringify(content)).digest("hex");
  const created = (options.created ?? new Date()).toISOString().replace(/\.\d{3}Z$/, "Z");
  return {
    spdxVersion: content.spdxVersion,
    dataLicense: content.dataLicense,
    SPDXID: content.SPDXID,
    name: content.name,
    // A URI unique to this content (SPDX's own namespace for documents, a UUID shaped from the digest).
    documentNamespace: `https://spdx.org/spdxdocs/tbuild-${idPart(options.name)}-${uuidOf(digest)}`,
    creationInfo: { created, creators: [`Tool: tbuild-${options.toolVersion}`] },
    packages: content.packages,
    files: content.files,
    ...(content.hasExtractedLicensingInfos
      ? { hasExtractedLicensingInfos: content.hasExtractedLicensingInfos }
      : {}),
    relationships: content.relationships,
  };
}

/** A name-based (version 5 shaped) UUID from a hex digest. */
function uuidOf(hex: string): string {
  const h = `${hex.slice(0, 12)}5${hex.slice(13, 16)}${((Number.parseInt(hex[16], 16) & 0x3) | 0x8).toString(16)}${hex.slice(17, 32)}`;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function packageEntry(
  pkg: FoundPackage,
  id: string,
  extracted: Map<string, string>,
): Record<string, unknown> {
  return {
    SPDXID: id,
    name: pkg.name,
    versionInfo: pkg.version,
    downloadLocation: "NOASSERTION",
    filesAnalyzed: false,
    sourceInfo: `${SOURCE_INFO[pkg.type]}: ${pkg.foundIn}`,
    licenseConcluded: "NOASSERTION",
    licenseDeclared: licenseExpression(pkg.license, extracted),
    copyrightText: "NOASSERTION",
    externalRefs: [
      { referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: pkg.purl },
    ],
  };
}
