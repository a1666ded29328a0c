/**
 * The quick ustar header decoding an unpack of a cache mount spends its time in (quickUstarHeader,
 * oci/archive/tar-reader.ts) against the plain one, the `tar` package's `Header`: on the headers
 * tbuild writes, on GNU tar's in its three formats, and on both with bytes changed at random
 * (digits, spaces, NULs, line breaks, base-256 markers, other type flags), every field readTarEntries
 * reads is the same, or the quick path declines and Header decides.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import fc from "fast-check";
import { Header } from "tar";
import { afterAll, describe, expect, it } from "vitest";
import { encodeTarHeader, type TarEntry } from "../../../dist/oci/archive/tar.js";
import { quickUstarHeader, type TarHeaderFields } from "../../../dist/oci/archive/tar-reader.js";

const work = mkdtempSync(path.join(tmpdir(), "tbuild-tar-header-property-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function fields(h: TarHeaderFields) {
  return {
    cksumValid: h.cksumValid,
    path: h.path,
    linkpath: h.linkpath,
    type: h.type,
    mode: h.mode,
    uid: h.uid,
    gid: h.gid,
    size: h.size,
    mtime: h.mtime?.getTime(),
    devmaj: h.devmaj,
    devmin: h.devmin,
  };
}

/** The quick path's reading equals Header's whenever it gives one; whether it did. */
function agrees(block: Buffer): boolean {
  const quick = quickUstarHeader(block);
  let plain: TarHeaderFields | Error;
  try {
    plain = new Header(block);
  } catch (err) {
    plain = err as Error;
  }
  if (quick === undefined) return false;
  expect(plain).not.toBeInstanceOf(Error);
  expect(fields(quick)).toEqual(fields(plain as TarHeaderFields));
  return true;
}

const blocksOf = (bytes: Buffer) =>
  Array.from({ length: bytes.length / 512 }, (_, i) => bytes.subarray(i * 512, (i + 1) * 512));

const entry: fc.Arbitrary<TarEntry> = fc.record({
  path: fc.oneof(fc.stringMatching(/^[a-z0-9./_-]{1,20}$/), fc.string({ minLength: 90, maxLength: 300 })),
  type: fc.constantFrom("File", "Directory", "SymbolicLink", "Link", "FIFO", "CharacterDevice"),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.oneof(fc.nat(70000), fc.constant(0o7777777 + 1)),
  gid: fc.nat(70000),
  size: fc.oneof(fc.nat(1 << 20), fc.constant(0o77777777777 + 1)),
  mtime: fc.integer({ min: 0, max: 8_000_000_000 }).map((s) => new Date(s * 1000)),
  linkpath: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 150 })),
  devmaj: fc.nat(300),
  devmin: fc.nat(300),
}) as fc.Arbitrary<TarEntry>;

/** Blocks of GNU tar's archives of a small tree with long names, in ustar, gnu and pax formats. */
function gnuBlocks(): Buffer[] {
  const src = path.join(work, "src");
  const deep = path.join(src, "d".repeat(60), "e".repeat(60));
  mkdirSync(deep, { recursive: true });
  writeFileSync(path.join(deep, "f".repeat(90)), "x".repeat(700));
  writeFileSync(path.join(src, "small"), "y");
  symlinkSync("t".repeat(120), path.join(src, "long-link"));
  symlinkSync("target", path.join(src, "link"));
  return ["ustar", "gnu", "posix"].flatMap((format) => {
    const file = path.join(work, `${format}.tar`);
    // ustar cannot hold the long link: GNU tar leaves it out (and says so), the rest is archived.
    spawnSync("tar", ["-C", src, `--format=${format}`, "-cf", file, "."]);
    return blocksOf(readFileSync(file));
  });
}

const MUTATION_BYTES = [0, 0x20, 0x30, 0x37, 0x38, 0x0a, 0x0d, 0xe2, 0x80, 0xff, 0x2f, 0x78, 0x4c, 0x35];

describe("quick ustar header decoding", () => {
  it("reads tbuild's headers, all of them, as Header does", () => {
    fc.assert(
      fc.property(entry, (e) => {
        const headers = blocksOf(encodeTarHeader(e));
        // The entry's own header (the last block) is the quick path's when its numbers fit in octal
        // (larger ones are base-256, Header's); PAX records may precede it.
        const octal =
          e.uid <= 0o7777777 && e.gid <= 0o7777777 && (e.type !== "File" || e.size <= 0o77777777777);
        expect(agrees(headers.at(-1)!)).toBe(octal);
        for (const block of headers) agrees(block);
      }),
      { numRuns: 500 },
    );
  });

  it("reads GNU tar's headers as Header does, and any block with bytes changed, or leaves it to Header", () => {
    const gnu = gnuBlocks();
    const ours = [0, 1, 2].map((i) =>
      encodeTarHeader({
        path: `p${i}/${"n".repeat(120)}`,
        type: "File",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: i,
        mtime: new Date(0),
      }),
    );
    const bases = [...gnu, ...ours.flatMap(blocksOf)];
    expect(bases.filter((b) => quickUstarHeader(b) !== undefined).length).toBeGreaterThan(4);
    let quick = 0;
    fc.assert(
      fc.property(
        fc.nat(bases.length - 1),
        fc.array(fc.tuple(fc.nat(511), fc.oneof(fc.constantFrom(...MUTATION_BYTES), fc.nat(255))), {
          maxLength: 6,
        }),
        (base, changes) => {
          const block = Buffer.from(bases[base]!);
          for (const [at, byte] of changes) block[at] = byte;
          if (agrees(block)) quick++;
        },
      ),
      { numRuns: 5000 },
    );
    // The property held where it means something: most changed blocks still took the quick path.
    expect(quick).toBeGreaterThan(1000);
  });
});
