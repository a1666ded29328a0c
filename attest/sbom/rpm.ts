/**
 * RPM packages from the sqlite database newer RPM distributions keep (`var/lib/rpm/rpmdb.sqlite`,
 * Fedora 33+, RHEL 9): its `Packages` table holds one header blob per package, in RPM's header
 * format: a big-endian count of index entries and of data bytes, then the entries (tag, type,
 * offset, count; 16 bytes each), then the data. The database is opened read-only and immutable
 * (no lock, no journal written beside it). The older Berkeley DB and NDB formats are not read: a
 * warning says so.
 */
import { DatabaseSync } from "node:sqlite";
import { checksumsOf } from "./checksums.js";
import { readImageFile } from "./filesystem.js";
import { absolute, type CatalogContext, distroQualifier, type FoundPackage, purl } from "./package.js";

const TAG_NAME = 1000;
const TAG_VERSION = 1001;
const TAG_RELEASE = 1002;
const TAG_EPOCH = 1003;
const TAG_LICENSE = 1014;
const TAG_ARCH = 1022;
const TYPE_INT32 = 4;
const TYPE_STRING = 6;
const TYPE_I18NSTRING = 9;
const MAX_RPMDB_BYTES = 512 << 20;

export async function catalogRpm(ctx: CatalogContext): Promise<FoundPackage[]> {
  for (const legacy of ["var/lib/rpm/Packages", "var/lib/rpm/Packages.db"]) {
    if (ctx.fs.stat(ctx.fs.resolve(legacy))?.kind === "file") {
      ctx.warn(
        `/${legacy}`,
        "RPM's Berkeley DB and NDB databases are not supported yet: its packages are not listed",
      );
    }
  }
  const rel = ctx.fs.resolve("var/lib/rpm/rpmdb.sqlite");
  const entry = ctx.fs.stat(rel);
  if (!entry) return [];
  const foundIn = absolute(rel);
  const host = ctx.fs.hostPath(rel);
  if (entry.kind !== "file" || !host) {
    ctx.warn(foundIn, `not a regular file (${entry.kind})`);
    return [];
  }
  if (entry.size > MAX_RPMDB_BYTES) {
    ctx.warn(foundIn, `skipped: ${entry.size} bytes, more than the limit of ${MAX_RPMDB_BYTES}`);
    return [];
  }
  const bytes = await readImageFile(ctx.fs, rel, MAX_RPMDB_BYTES, { resolved: true });
  if (bytes?.ok) ctx.evidence(foundIn, checksumsOf(bytes.bytes));
  const blobs: Uint8Array[] = [];
  try {
    // immutable=1: sqlite neither locks nor writes a -wal or -shm file beside the image's database.
    const db = new DatabaseSync(`file:${encodeURI(host)}?immutable=1`, { readOnly: true, open: true });
    try {
      for (const row of db.prepare("SELECT blob FROM Packages ORDER BY hnum").iterate()) {
        const { blob } = row as { blob: unknown };
        if (blob instanceof Uint8Array) blobs.push(blob);
        else ctx.warn(foundIn, "a package that is not a header blob");
      }
    } finally {
      db.close();
    }
  } catch (err) {
    ctx.warn(foundIn, `not a readable RPM database: ${(err as Error).message}`);
    return [];
  }
  const found: FoundPackage[] = [];
  for (const blob of blobs) {
    const header = parseHeader(blob);
    const name = header?.get(TAG_NAME);
    const version = header?.get(TAG_VERSION);
    if (!header || typeof name !== "string" || typeof version !== "string") {
      ctx.warn(foundIn, "a package header that is not RPM's header format");
      continue;
    }
    if (name === "gpg-pubkey") continue; // an imported signing key, not a package (syft skips it too)
    const release = header.get(TAG_RELEASE);
    const epoch = header.get(TAG_EPOCH);
    const full = typeof release === "string" ? `${version}-${release}` : version;
    const license = header.get(TAG_LICENSE);
    found.push({
      type: "rpm",
      name,
      version: typeof epoch === "number" ? `${epoch}:${full}` : full,
      license: typeof license === "string" ? license : undefined,
      purl: purl("rpm", `${ctx.distro?.id || "rpm"}/${name}`, full, {
        arch: stringOr(header.get(TAG_ARCH)),
        epoch: typeof epoch === "number" ? String(epoch) : undefined,
        distro: distroQualifier(ctx.distro),
      }),
      foundIn,
    });
  }
  return found;
}

function stringOr(value: string | number | undefined): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/** The string and int32 tags of one header blob; undefined when the blob is not one. */
export function parseHeader(blob: Uint8Array): Map<number, string | number> | undefined {
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  if (buf.length < 8) return undefined;
  const count = buf.readUInt32BE(0);
  const dataLength = buf.readUInt32BE(4);
  const dataStart = 8 + count * 16;
  if (count > 0xffff || dataStart + dataLength > buf.length) return undefined;
  const data = buf.subarray(dataStart, dataStart + dataLength);
  const tags = new Map<number, string | number>();
  for (let i = 0; i < count; i++) {
    const at = 8 + i * 16;
    const tag = buf.readUInt32BE(at);
    const type = buf.readUInt32BE(at + 4);
    const offset = buf.readUInt32BE(at + 8);
    if (offset >= data.length) continue;
    if (type === TYPE_STRING || type === TYPE_I18NSTRING) {
      const end = data.indexOf(0, offset);
      tags.set(tag, data.toString("utf8", offset, end < 0 ? data.length : end));
    } else if (type === TYPE_INT32 && offset + 4 <= data.length) {
      tags.set(tag, data.readUInt32BE(offset));
    }
  }
  return tags;
}
