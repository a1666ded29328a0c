/**
 * Tar headers are what layer digests are made of: the fast encoder for plain entries must write
 * exactly the bytes the `tar` package writes, or the same files would give another layer.
 */
import fc from "fast-check";
import { Header } from "tar";
import { describe, expect, it } from "vitest";
import { encodeTarHeader, type TarEntry, type TarEntryType } from "../../oci/archive/tar.js";

/** The `tar` package's own header for an entry that needs no PAX record. */
function tarPackageHeader(entry: TarEntry): Buffer | undefined {
  const header = new Header({
    path: entry.path,
    type: entry.type,
    mode: entry.mode & 0o7777,
    uid: entry.uid,
    gid: entry.gid,
    size: entry.type === "File" ? entry.size : 0,
    mtime: new Date(Math.floor(entry.mtime.getTime() / 1000) * 1000),
    ...(entry.linkpath !== undefined ? { linkpath: entry.linkpath } : {}),
    ...(entry.devmaj !== undefined ? { devmaj: entry.devmaj, devmin: entry.devmin ?? 0 } : {}),
  });
  return header.encode() ? undefined : header.block!;
}

const types: TarEntryType[] = [
  "File",
  "Directory",
  "SymbolicLink",
  "Link",
  "CharacterDevice",
  "BlockDevice",
  "FIFO",
];
const asciiChars = fc.constantFrom(..."abcXYZ019._-/ ~".split(""), "\u0001");
const pathChars = fc.oneof(asciiChars, fc.constantFrom("é", "\u{1F600}"));
const entries = fc.record({
  path: fc.oneof(
    fc.string({ unit: asciiChars, minLength: 1, maxLength: 40 }),
    fc.string({ unit: asciiChars, minLength: 95, maxLength: 110 }),
    fc.string({ unit: pathChars, minLength: 1, maxLength: 40 }),
  ),
  type: fc.constantFrom(...types),
  mode: fc.integer({ min: 0, max: 0o7777 }),
  uid: fc.oneof(fc.integer({ min: 0, max: 70000 }), fc.integer({ min: 0o7777770, max: 0o10000010 })),
  gid: fc.integer({ min: 0, max: 0o10000010 }),
  size: fc.oneof(
    fc.integer({ min: 0, max: 1 << 20 }),
    fc.constant(0o77777777777),
    fc.constant(0o100000000000),
  ),
  mtime: fc.integer({ min: 0, max: 2 ** 34 }).map((s) => new Date(s * 1000)),
  linkpath: fc.option(
    fc.oneof(
      fc.string({ unit: asciiChars, minLength: 1, maxLength: 102 }),
      fc.string({ unit: pathChars, minLength: 1, maxLength: 20 }),
    ),
    { nil: undefined },
  ),
  devices: fc.option(fc.tuple(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 0o10000001 })), {
    nil: undefined,
  }),
});

describe("tar headers", () => {
  it("are byte for byte the tar package's, for every entry that needs no PAX record", () => {
    let plain = 0;
    fc.assert(
      fc.property(entries, ({ devices, linkpath, ...rest }) => {
        const entry: TarEntry = {
          ...rest,
          ...(linkpath !== undefined ? { linkpath } : {}),
          ...(devices !== undefined ? { devmaj: devices[0], devmin: devices[1] } : {}),
        };
        const expected = tarPackageHeader(entry);
        const written = encodeTarHeader(entry);
        if (expected) {
          plain++;
          expect(written.equals(expected)).toBe(true);
        }
        // With a PAX record first, the ustar block still ends the header.
        else expect(written.length).toBeGreaterThan(512);
      }),
      { numRuns: 5000 },
    );
    // Many cases are plain ones, the ones the fast encoder writes.
    expect(plain).toBeGreaterThan(500);
  });

  it("a common file's header names its path, mode, owner, size and mtime", () => {
    const block = encodeTarHeader({
      path: "app/src/main.c",
      type: "File",
      mode: 0o644,
      uid: 1000,
      gid: 1000,
      size: 1234,
      mtime: new Date("2000-01-01T00:00:00Z"),
    });
    const header = new Header(block);
    expect(header.cksumValid).toBe(true);
    expect([header.path, header.mode, header.uid, header.gid, header.size]).toEqual([
      "app/src/main.c",
      0o644,
      1000,
      1000,
      1234,
    ]);
    expect(header.mtime?.toISOString()).toBe("2000-01-01T00:00:00.000Z");
  });
});
