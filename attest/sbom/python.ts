/**
 * Python packages: the core metadata of each installed distribution, `NAME-VERSION.dist-info/METADATA`
 * (wheels, pip) and `NAME.egg-info/PKG-INFO` (setuptools; an `.egg-info` may also be that file
 * itself). Name, Version and the licence: `License-Expression` (an SPDX expression, metadata 2.4),
 * else `License`, else the `License ::` trove classifiers. The purl's name is normalized as
 * PEP 503 says.
 */
import { checksumsOf, checksumsOfFile } from "./checksums.js";
import { field, parseStanzas } from "./control-fields.js";
import { readImageFile } from "./filesystem.js";
import { absolute, type CatalogContext, type FoundPackage, purl } from "./package.js";

/** The headers are at the top; a long description after them need not be read. */
const METADATA_HEAD_BYTES = 256 << 10;

export async function catalogPythonMetadata(
  ctx: CatalogContext,
  rel: string,
): Promise<FoundPackage | undefined> {
  const file = await readImageFile(ctx.fs, rel, METADATA_HEAD_BYTES, { head: true });
  if (!file) return undefined;
  const foundIn = absolute(file.rel);
  if (!file.ok) {
    ctx.warn(foundIn, file.problem);
    return undefined;
  }
  const [headers] = parseStanzas(file.bytes.toString("utf8"), { maxStanzas: 1 });
  const name = headers && field(headers, "name");
  const version = headers && field(headers, "version");
  if (!headers || !name || !version) {
    ctx.warn(foundIn, "no Name or Version header: the package is not listed");
    return undefined;
  }
  const checksums = file.truncated ? checksumsOfFile(ctx.fs, file.resolved) : checksumsOf(file.bytes);
  if (checksums) ctx.evidence(foundIn, checksums);
  return {
    type: "pypi",
    name,
    version,
    license: licenseOf(headers),
    purl: purl("pypi", name.toLowerCase().replace(/[-_.]+/g, "-"), version),
    foundIn,
  };
}

function licenseOf(headers: Map<string, string[]>): string | undefined {
  const expression = field(headers, "license-expression");
  if (expression) return expression;
  const license = field(headers, "license");
  if (license && license !== "UNKNOWN") return license;
  const classified = (headers.get("classifier") ?? [])
    .filter((c) => c.startsWith("License ::"))
    .map((c) => c.split("::").pop()?.trim() ?? "")
    .filter((c) => c !== "");
  return classified.length > 0 ? classified.join(" AND ") : undefined;
}
