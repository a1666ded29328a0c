/**
 * Debian packages: dpkg's database `var/lib/dpkg/status` (installed ones only: `Status: install ok
 * installed`, what `dpkg-query -W` shows of a fresh image) and distroless's `var/lib/dpkg/status.d/*`
 * (one stanza per file, written without a Status field). The licence comes from the package's
 * `usr/share/doc/NAME/copyright` where it is machine-readable (DEP-5), as syft reads it.
 */
import { checksumsOf } from "./checksums.js";
import { field, parseStanzas } from "./control-fields.js";
import { readImageFile } from "./filesystem.js";
import { absolute, type CatalogContext, distroQualifier, type FoundPackage, purl } from "./package.js";

/** dpkg's status of a large image is a few MiB; past this, the file is not a status database. */
export const MAX_STATUS_BYTES = 64 << 20;
const MAX_COPYRIGHT_BYTES = 1 << 20;

export async function catalogDpkg(ctx: CatalogContext): Promise<FoundPackage[]> {
  const found: FoundPackage[] = [];
  const status = await readImageFile(ctx.fs, "var/lib/dpkg/status", MAX_STATUS_BYTES);
  if (status && !status.ok) ctx.warn(absolute(status.rel), status.problem);
  if (status?.ok) {
    ctx.evidence(absolute(status.rel), checksumsOf(status.bytes));
    found.push(...packagesOf(ctx, status.bytes.toString("utf8"), absolute(status.rel), true));
  }
  const dir = ctx.fs.resolve("var/lib/dpkg/status.d");
  for (const entry of await ctx.fs.list(dir)) {
    if (entry.kind !== "file" || entry.name.endsWith(".md5sums")) continue;
    const file = await readImageFile(ctx.fs, `${dir}/${entry.name}`, MAX_STATUS_BYTES, { resolved: true });
    if (!file) continue;
    if (!file.ok) {
      ctx.warn(absolute(file.rel), file.problem);
      continue;
    }
    ctx.evidence(absolute(file.rel), checksumsOf(file.bytes));
    found.push(...packagesOf(ctx, file.bytes.toString("utf8"), absolute(file.rel), false));
  }
  for (const pkg of found) pkg.license = await copyrightLicense(ctx, pkg.name);
  return found;
}

function packagesOf(
  ctx: CatalogContext,
  text: string,
  foundIn: string,
  needsStatus: boolean,
): FoundPackage[] {
  const out: FoundPackage[] = [];
  for (const stanza of parseStanzas(text)) {
    const name = field(stanza, "package");
    const version = field(stanza, "version");
    const status = field(stanza, "status");
    if (status !== undefined || needsStatus) {
      if (status?.split(/\s+/)[2] !== "installed") continue;
    }
    if (!name || !version) {
      ctx.warn(foundIn, `a stanza without Package or Version${name ? ` (${name})` : ""}`);
      continue;
    }
    const arch = field(stanza, "architecture");
    out.push({
      type: "deb",
      name,
      version,
      purl: purl("deb", `${ctx.distro?.id || "debian"}/${name}`, version, {
        arch,
        distro: distroQualifier(ctx.distro),
      }),
      foundIn,
    });
  }
  return out;
}

/** The licences a DEP-5 copyright file names (its `License:` fields' short names), joined with AND. */
async function copyrightLicense(ctx: CatalogContext, name: string): Promise<string | undefined> {
  if (name.includes("/") || name.startsWith(".")) return undefined;
  const file = await readImageFile(ctx.fs, `usr/share/doc/${name}/copyright`, MAX_COPYRIGHT_BYTES, {
    head: true,
  });
  if (!file?.ok) return undefined;
  const text = file.bytes.toString("utf8");
  if (!/^Format:\s*\S*copyright-format/i.test(text)) return undefined;
  const names = new Set<string>();
  for (const stanza of parseStanzas(text)) {
    for (const value of stanza.get("license") ?? []) {
      const short = value.split("\n")[0].trim();
      if (short) names.add(short);
    }
  }
  return names.size > 0 ? [...names].sort().join(" AND ") : undefined;
}
