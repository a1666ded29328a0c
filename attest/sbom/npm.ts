/**
 * npm packages: the `package.json` at the root of each package in a `node_modules` directory
 * (`node_modules/NAME/package.json`, `node_modules/@SCOPE/NAME/package.json`), wherever the
 * directory is (an application's, npm's own global one). A package's test fixtures deeper down are
 * not packages. The licence is `license` (an SPDX expression), or the older `license: {type}` and
 * `licenses: [{type}]` forms.
 */
import { checksumsOf } from "./checksums.js";
import { readImageFile } from "./filesystem.js";
import { absolute, type CatalogContext, type FoundPackage, purl } from "./package.js";

const MAX_PACKAGE_JSON_BYTES = 4 << 20;

/** Whether `rel` (a file named package.json) is a package's root manifest inside node_modules. */
export function isNodeModulesManifest(rel: string): boolean {
  const parts = rel.split("/");
  const n = parts.length;
  if (n >= 3 && parts[n - 3] === "node_modules" && !parts[n - 2].startsWith("@")) return true;
  return n >= 4 && parts[n - 4] === "node_modules" && parts[n - 3].startsWith("@");
}

export async function catalogNpmManifest(
  ctx: CatalogContext,
  rel: string,
): Promise<FoundPackage | undefined> {
  const file = await readImageFile(ctx.fs, rel, MAX_PACKAGE_JSON_BYTES);
  if (!file) return undefined;
  const foundIn = absolute(file.rel);
  if (!file.ok) {
    ctx.warn(foundIn, file.problem);
    return undefined;
  }
  let manifest: unknown;
  try {
    manifest = JSON.parse(file.bytes.toString("utf8"));
  } catch {
    ctx.warn(foundIn, "not JSON: the package is not listed");
    return undefined;
  }
  if (manifest === null || typeof manifest !== "object") {
    ctx.warn(foundIn, "not a JSON object: the package is not listed");
    return undefined;
  }
  const { name, version } = manifest as Record<string, unknown>;
  if (typeof name !== "string" || typeof version !== "string" || name === "" || version === "") {
    ctx.warn(foundIn, "no name or version: the package is not listed");
    return undefined;
  }
  ctx.evidence(foundIn, checksumsOf(file.bytes));
  return {
    type: "npm",
    name,
    version,
    license: licenseOf(manifest as Record<string, unknown>),
    purl: purl("npm", name, version),
    foundIn,
  };
}

function licenseOf(manifest: Record<string, unknown>): string | undefined {
  const typeOf = (value: unknown) =>
    typeof value === "string"
      ? value
      : value && typeof value === "object" && typeof (value as { type?: unknown }).type === "string"
        ? (value as { type: string }).type
        : undefined;
  const single = typeOf(manifest.license);
  if (single) return single;
  if (Array.isArray(manifest.licenses)) {
    const all = manifest.licenses.map(typeOf).filter((t): t is string => !!t);
    if (all.length > 0) return all.length === 1 ? all[0] : `(${all.join(" OR ")})`;
  }
  return undefined;
}
