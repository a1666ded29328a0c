/**
 * What the scanner finds: plain data, one record per package, with the file it was found in (as
 * syft records a package's "location"), and the package URL (github.com/package-url/purl-spec)
 * scanners and policy engines match vulnerabilities by.
 */

export type PackageType = "deb" | "apk" | "rpm" | "npm" | "pypi" | "golang";

export interface FoundPackage {
  type: PackageType;
  name: string;
  version: string;
  /** The licence as the package declares it (an SPDX expression or the ecosystem's own name); absent when none is. */
  license?: string;
  purl: string;
  /** The file it was found in, absolute in the image (`/var/lib/dpkg/status`). */
  foundIn: string;
}

/** A distribution as etc/os-release names it (`debian`, `12`). */
export interface Distro {
  id: string;
  versionId: string;
}

/** purl-spec's percent-encoding of one component: everything but unreserved characters. */
function encode(part: string): string {
  return encodeURIComponent(part).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`; `name` may carry `/`-separated namespace segments
 * (npm's `@scope/name`, Go's module path), each encoded on its own. Qualifiers are sorted by key,
 * empty ones dropped, as the spec's canonical form says.
 */
export function purl(
  type: PackageType,
  name: string,
  version: string,
  qualifiers: Record<string, string | undefined> = {},
): string {
  const path = name.split("/").map(encode).join("/");
  const query = Object.entries(qualifiers)
    .filter((entry): entry is [string, string] => entry[1] !== undefined && entry[1] !== "")
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, value]) => `${key}=${encode(value)}`)
    .join("&");
  return `pkg:${type}/${path}${version ? `@${encode(version)}` : ""}${query ? `?${query}` : ""}`;
}

/** The `distro` qualifier: `debian-12`. */
export function distroQualifier(distro: Distro | undefined): string | undefined {
  return distro?.id ? (distro.versionId ? `${distro.id}-${distro.versionId}` : distro.id) : undefined;
}

/** The checksums SPDX records of a file packages were found in. */
export interface FileChecksums {
  sha1: string;
  sha256: string;
}

/** What a cataloger is given: the filesystem, the distribution, and where to report. */
export interface CatalogContext {
  fs: import("./filesystem.js").ImageFilesystem;
  distro?: Distro;
  /** A bad entry, named in the scan's warnings; the scan goes on. */
  warn(file: string, message: string): void;
  /** The checksums of a file packages were found in (absolute path in the image). */
  evidence(file: string, checksums: FileChecksums): void;
}

/** `/` + a relative path. */
export function absolute(rel: string): string {
  return `/${rel}`;
}
