/**
 * Go modules compiled into an executable: the build info the Go linker embeds in the ELF section
 * `.go.buildinfo` (what `go version -m` prints): a 16-byte header (`\xff Go buildinf:`, pointer
 * size, flags), then, since Go 1.18 (flag 2), the Go version and the module info as two
 * varint-length-prefixed strings; before that, two pointers to Go string headers in the binary's
 * data, found through the section headers. The module info is lines of `path`, `mod` (the main
 * module), `dep` and `=>` (a replacement of the dep above it), between 16-byte sentinels.
 *
 * Only the ELF header, the section headers, the section names and that section are read, with
 * limits, never the whole binary (its checksum is streamed).
 */
import { closeSync } from "node:fs";
import { checksumsOfFd } from "./checksums.js";
import { openRegular, readAt } from "./filesystem.js";
import { absolute, type CatalogContext, type FoundPackage, purl } from "./package.js";

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const BUILDINFO_MAGIC = Buffer.from("\xff Go buildinf:", "latin1");
const MAX_SECTION_HEADERS = 4096;
const MAX_SECTION_BYTES = 8 << 20;
/** An executable smaller than this is a script or a stub, not a Go binary. */
export const MIN_GO_BINARY_BYTES = 64 << 10;

const PT_LOAD = 1;
const PF_X = 1;
const PF_W = 2;

/** A loaded segment: where its bytes are in the file and at which virtual address. */
interface Segment {
  flags: number;
  offset: bigint;
  addr: bigint;
  /** Its size in the file. */
  size: bigint;
}

function loadSegments(
  fd: number,
  ident: Buffer,
  is64: boolean,
  u16: (b: Buffer, at: number) => number,
  u32: (b: Buffer, at: number) => number,
  word: (b: Buffer, at: number) => bigint,
): Segment[] {
  const phoff = word(ident, is64 ? 0x20 : 0x1c);
  const phentsize = u16(ident, is64 ? 0x36 : 0x2a);
  const phnum = u16(ident, is64 ? 0x38 : 0x2c);
  if (phoff === 0n || phnum === 0 || phnum > MAX_SECTION_HEADERS || phentsize < (is64 ? 56 : 32)) return [];
  const table = readAt(fd, phoff, phnum * phentsize);
  const segments: Segment[] = [];
  for (let i = 0; i < phnum && (i + 1) * phentsize <= table.length; i++) {
    const at = i * phentsize;
    if (u32(table, at) !== PT_LOAD) continue;
    segments.push(
      is64
        ? {
            flags: u32(table, at + 4),
            offset: word(table, at + 8),
            addr: word(table, at + 0x10),
            size: word(table, at + 0x20),
          }
        : {
            flags: u32(table, at + 0x18),
            offset: word(table, at + 4),
            addr: word(table, at + 8),
            size: word(table, at + 0x10),
          },
    );
  }
  return segments;
}

interface Section {
  name: number;
  offset: bigint;
  size: bigint;
}

/** The Go build info of the ELF file at `rel`, as `{ goVersion, modinfo }`; undefined when it has none. */
export function readGoBuildInfo(fd: number): { goVersion: string; modinfo: string } | undefined {
  const ident = readAt(fd, 0, 64);
  if (ident.length < 52 || !ident.subarray(0, 4).equals(ELF_MAGIC)) return undefined;
  const is64 = ident[4] === 2;
  const le = ident[5] !== 2;
  const u16 = (b: Buffer, at: number) => (le ? b.readUInt16LE(at) : b.readUInt16BE(at));
  const u32 = (b: Buffer, at: number) => (le ? b.readUInt32LE(at) : b.readUInt32BE(at));
  const word = (b: Buffer, at: number) =>
    is64 ? (le ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at)) : BigInt(u32(b, at));
  const shoff = word(ident, is64 ? 0x28 : 0x20);
  const shentsize = u16(ident, is64 ? 0x3a : 0x2e);
  const shnum = u16(ident, is64 ? 0x3c : 0x30);
  const shstrndx = u16(ident, is64 ? 0x3e : 0x32);
  const hasSections =
    shoff !== 0n && shnum > 0 && shnum <= MAX_SECTION_HEADERS && shentsize >= (is64 ? 64 : 40);
  const table = hasSections ? readAt(fd, shoff, shnum * shentsize) : Buffer.alloc(0);
  const sections: Section[] = [];
  for (let i = 0; i < shnum && (i + 1) * shentsize <= table.length; i++) {
    const at = i * shentsize;
    sections.push({
      name: u32(table, at),
      offset: word(table, at + (is64 ? 0x18 : 0x10)),
      size: word(table, at + (is64 ? 0x20 : 0x14)),
    });
  }
  const names = sections[shstrndx];
  const nameBytes =
    names && names.size <= BigInt(MAX_SECTION_BYTES)
      ? readAt(fd, names.offset, Number(names.size))
      : Buffer.alloc(0);
  const sectionName = (s: Section) => {
    if (s.name >= nameBytes.length) return "";
    const end = nameBytes.indexOf(0, s.name);
    return nameBytes.toString("latin1", s.name, end < 0 ? nameBytes.length : end);
  };
  // Where the build info is: its own section, or (a binary whose section headers were rewritten,
  // as esbuild's are) the first 16-byte-aligned magic in the first 64 KiB of the first writable,
  // non-executable segment, where Go's debug/buildinfo looks too.
  const segments = loadSegments(fd, ident, is64, u16, u32, word);
  let data: Buffer | undefined;
  const info = sections.find((s) => sectionName(s) === ".go.buildinfo");
  if (info && info.size >= 32n && info.size <= BigInt(MAX_SECTION_BYTES)) {
    data = readAt(fd, info.offset, Number(info.size));
  } else {
    const writable = segments.find((s) => (s.flags & (PF_X | PF_W)) === PF_W);
    if (writable) {
      const head = readAt(fd, writable.offset, Number(writable.size < 65536n ? writable.size : 65536n));
      for (let at = 0; at + 32 <= head.length; at += 16) {
        if (head.subarray(at, at + 14).equals(BUILDINFO_MAGIC)) {
          const left = writable.size - BigInt(at);
          data = readAt(
            fd,
            writable.offset + BigInt(at),
            Number(left < BigInt(MAX_SECTION_BYTES) ? left : BigInt(MAX_SECTION_BYTES)),
          );
          break;
        }
      }
    }
  }
  if (!data || data.length < 32 || !data.subarray(0, 14).equals(BUILDINFO_MAGIC)) return undefined;
  const ptrSize = data[14];
  const flags = data[15];
  let goVersion: Buffer | undefined;
  let modinfo: Buffer | undefined;
  if (flags & 2) {
    let at = 32;
    const next = () => {
      let length = 0;
      let shift = 0;
      for (;;) {
        if (at >= data.length || shift > 28) return undefined;
        const byte = data[at++];
        length |= (byte & 0x7f) << shift;
        if (!(byte & 0x80)) break;
        shift += 7;
      }
      if (at + length > data.length) return undefined;
      const value = data.subarray(at, at + length);
      at += length;
      return value;
    };
    goVersion = next();
    modinfo = next();
  } else {
    // Before Go 1.18: two pointers to string headers { data pointer, length }, all virtual addresses.
    const bigEndian = (flags & 1) === 1;
    const pointer = (b: Buffer, at: number) =>
      ptrSize === 8
        ? bigEndian
          ? b.readBigUInt64BE(at)
          : b.readBigUInt64LE(at)
        : BigInt(bigEndian ? b.readUInt32BE(at) : b.readUInt32LE(at));
    const readVirtual = (addr: bigint, length: number) => {
      const holder = segments.find((s) => addr >= s.addr && addr + BigInt(length) <= s.addr + s.size);
      return holder ? readAt(fd, holder.offset + (addr - holder.addr), length) : undefined;
    };
    const readString = (headerAddr: bigint) => {
      const header = readVirtual(headerAddr, ptrSize * 2);
      if (!header || header.length < ptrSize * 2) return undefined;
      const length = pointer(header, ptrSize);
      if (length > BigInt(MAX_SECTION_BYTES)) return undefined;
      return readVirtual(pointer(header, 0), Number(length));
    };
    if (ptrSize !== 4 && ptrSize !== 8) return undefined;
    goVersion = readString(pointer(data, 16));
    modinfo = readString(pointer(data, 16 + ptrSize));
  }
  if (goVersion === undefined) return undefined;
  // The module info sits between two 16-byte sentinels.
  const stripped =
    modinfo && modinfo.length >= 33 && modinfo[modinfo.length - 17] === 0x0a
      ? modinfo.subarray(16, -16)
      : undefined;
  return { goVersion: goVersion.toString("utf8"), modinfo: stripped?.toString("utf8") ?? "" };
}

/** The modules of the Go binary at `rel`, or [] when it is not one. */
export async function catalogGoBinary(ctx: CatalogContext, rel: string): Promise<FoundPackage[]> {
  const fd = openRegular(ctx.fs, rel);
  if (fd === undefined) return [];
  const foundIn = absolute(rel);
  try {
    const info = readGoBuildInfo(fd);
    if (!info) return [];
    const found: FoundPackage[] = [];
    const module = (name: string, version: string): FoundPackage => ({
      type: "golang",
      name,
      version,
      purl: purl("golang", name, version === "(devel)" ? "" : version),
      foundIn,
    });
    found.push(module("stdlib", info.goVersion));
    for (const line of info.modinfo.split("\n")) {
      const [kind, name, version] = line.split("\t");
      if ((kind === "mod" || kind === "dep") && name && version) found.push(module(name, version));
      else if (kind === "=>" && name && found.length > 1) {
        // A replacement: the module in the binary is the replacement's, at its version (or a local path's, unversioned).
        const replaced = found[found.length - 1];
        found[found.length - 1] = module(name, version || replaced.version);
      }
    }
    ctx.evidence(foundIn, checksumsOfFd(fd));
    return found;
  } catch (err) {
    ctx.warn(foundIn, `unreadable ELF file: ${(err as Error).message}`);
    return [];
  } finally {
    closeSync(fd);
  }
}
