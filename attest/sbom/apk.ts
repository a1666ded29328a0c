/**
 * Alpine packages: apk's database `lib/apk/db/installed`, one stanza of `X:value` lines per
 * package (P name, V version, A architecture, L licence, o origin), stanzas separated by a blank
 * line (apk's own format, read as syft's apk cataloger reads it).
 */
import { checksumsOf } from "./checksums.js";
import { MAX_STATUS_BYTES } from "./dpkg.js";
import { readImageFile } from "./filesystem.js";
import { absolute, type CatalogContext, distroQualifier, type FoundPackage, purl } from "./package.js";

export async function catalogApk(ctx: CatalogContext): Promise<FoundPackage[]> {
  const file = await readImageFile(ctx.fs, "lib/apk/db/installed", MAX_STATUS_BYTES);
  if (!file) return [];
  const foundIn = absolute(file.rel);
  if (!file.ok) {
    ctx.warn(foundIn, file.problem);
    return [];
  }
  ctx.evidence(foundIn, checksumsOf(file.bytes));
  const found: FoundPackage[] = [];
  for (const block of file.bytes.toString("utf8").split(/\n[ \t]*\n/)) {
    const fields = new Map<string, string>();
    for (const line of block.split("\n")) {
      const match = /^([A-Za-z]):(.*)$/.exec(line);
      if (match && !fields.has(match[1])) fields.set(match[1], match[2]);
    }
    if (fields.size === 0) continue;
    const name = fields.get("P");
    const version = fields.get("V");
    if (!name || !version) {
      ctx.warn(foundIn, `a package without P: or V:${name ? ` (${name})` : ""}`);
      continue;
    }
    found.push({
      type: "apk",
      name,
      version,
      license: fields.get("L") || undefined,
      purl: purl("apk", `${ctx.distro?.id || "alpine"}/${name}`, version, {
        arch: fields.get("A"),
        distro: distroQualifier(ctx.distro),
        upstream: fields.get("o") && fields.get("o") !== name ? fields.get("o") : undefined,
      }),
      foundIn,
    });
  }
  return found;
}
