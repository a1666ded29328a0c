/**
 * The tar reader hands a small file's content over whole (`content`) when it has arrived with the
 * header, instead of through `body`. That shortcut must give what the plain way gives: random
 * archives (long names through PAX, empty files, sizes on and off the 512-byte blocks, directories,
 * links) fed whole or in random pieces read exactly as when fed one byte at a time, where nothing
 * is ever at hand early; and whether a reader takes `content`, iterates `body` or skips the entry,
 * the entries after it come out the same.
 *
 * The pull parser an unpack of a cache mount reads with (TarPullParser: no promise per entry) reads
 * exactly what readTarEntries reads: the same entries, content and end, or the same error, on those
 * archives cut at random places, cut short, with a byte changed, or with bytes after their end.
 */
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { TAR_END, TarChunker, type TarEntry } from "../../oci/archive/tar.js";
import { readTarEntries, type TarEntryHead, TarPullParser } from "../../oci/archive/tar-reader.js";

interface Made {
  path: string;
  type: "File" | "Directory" | "SymbolicLink";
  content: Buffer;
  mode: number;
}

/** An archive of `entries`, by the encoder the layers use (PAX records where a name is long). */
function archive(entries: Made[]): Buffer {
  const chunker = new TarChunker(1024);
  const parts: Buffer[] = [];
  for (const e of entries) {
    const header: TarEntry = {
      path: e.path,
      type: e.type,
      mode: e.mode,
      uid: 0,
      gid: 0,
      size: e.type === "File" ? e.content.length : 0,
      mtime: new Date(1_700_000_000_000),
      ...(e.type === "SymbolicLink" ? { linkpath: "target" } : {}),
    };
    const chunk = chunker.add(header, e.type === "File" ? e.content : undefined);
    if (chunk) parts.push(chunk);
  }
  const rest = chunker.flush();
  if (rest) parts.push(rest);
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

/** `bytes` cut at `cuts` (offsets, any order), as a stream would deliver them. */
async function* pieces(bytes: Buffer, cuts: number[]): AsyncGenerator<Buffer> {
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  for (const cut of [...at, bytes.length]) {
    if (cut > from) yield Buffer.from(bytes.subarray(from, cut));
    from = cut;
  }
}

type Reading = "content" | "body" | "skip";

/** What a reader sees of each entry, taking its content the given way (cycling per entry). */
async function read(source: AsyncIterable<Buffer>, ways: Reading[]) {
  const seen: Array<{ path: string; type: string; size: number; mode: number; data?: string }> = [];
  let i = 0;
  for await (const entry of readTarEntries(source, { what: "the test archive" })) {
    const way = ways[i++ % ways.length]!;
    let data: string | undefined;
    if (way === "content" && entry.content !== undefined) data = entry.content.toString("hex");
    else if (way !== "skip") {
      const chunks: Buffer[] = [];
      for await (const chunk of entry.body) chunks.push(chunk);
      data = Buffer.concat(chunks).toString("hex");
    }
    if (entry.content !== undefined) expect(entry.content.length).toBe(entry.size);
    seen.push({
      path: entry.path,
      type: entry.type,
      size: entry.size,
      mode: entry.mode,
      ...(data !== undefined ? { data } : {}),
    });
  }
  return seen;
}

const made = fc.record({
  name: fc.oneof(fc.stringMatching(/^[a-z]{1,12}$/), fc.stringMatching(/^[a-z]{101,140}$/)),
  type: fc.constantFrom("File", "File", "File", "Directory", "SymbolicLink") as fc.Arbitrary<Made["type"]>,
  size: fc.oneof(fc.constantFrom(0, 1, 511, 512, 513, 1024, 4096), fc.nat(3000)),
  mode: fc.constantFrom(0o644, 0o755, 0o600),
  fill: fc.nat(255),
});

describe("tar reader", () => {
  it("reads the same entries and bytes whether the archive comes whole, in random pieces or byte by byte, whichever way each entry is read", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(made, { minLength: 1, maxLength: 25 }),
        fc.array(fc.nat(200_000), { maxLength: 40 }),
        fc.array(fc.constantFrom<Reading>("content", "body", "skip"), { minLength: 1, maxLength: 5 }),
        async (specs, cuts, ways) => {
          const entries: Made[] = specs.map((s, i) => ({
            path: `${i}-${s.name}`,
            type: s.type,
            content: s.type === "File" ? Buffer.alloc(s.size, s.fill) : Buffer.alloc(0),
            mode: s.mode,
          }));
          const bytes = archive(entries);
          const byteByByte = await read(
            pieces(
              bytes,
              Array.from({ length: bytes.length }, (_, i) => i),
            ),
            ["body"],
          );
          // Nothing was ever at hand early, one byte at a time: the plain way, with every body read.
          expect(byteByByte.map((e) => e.path)).toEqual(entries.map((e) => e.path));
          for (const [i, e] of entries.entries()) {
            expect(byteByByte[i]!.data).toBe(e.content.toString("hex"));
          }
          const expected = (seen: typeof byteByByte) =>
            seen.map((e, i) => {
              const way = ways[i % ways.length]!;
              return way === "skip" ? { ...e, data: undefined } : e;
            });
          const strip = (seen: typeof byteByByte) => seen.map((e) => ({ ...e, data: e.data ?? undefined }));
          expect(strip(await read(pieces(bytes, []), ways))).toEqual(strip(expected(byteByByte)));
          expect(strip(await read(pieces(bytes, cuts), ways))).toEqual(strip(expected(byteByByte)));
        },
      ),
      { numRuns: 150 },
    );
  });
});

/** Every field of an entry's head, and its content as hex; or the error, as a user reads it. */
type Outcome = { entries: Array<Record<string, unknown>> } | { error: string };

function headFields(entry: TarEntryHead): Record<string, unknown> {
  const { mtime, atime, xattrs, ...rest } = entry;
  return {
    ...rest,
    mtime: mtime.getTime(),
    atime: atime?.getTime(),
    xattrs: [...xattrs].map(([k, v]) => `${k}=${v.toString("hex")}`),
  };
}

async function byReadTarEntries(source: AsyncIterable<Buffer>): Promise<Outcome> {
  const entries: Array<Record<string, unknown>> = [];
  try {
    for await (const entry of readTarEntries(source, { what: "the test archive" })) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry.body) chunks.push(chunk);
      const { body: _, content: __, ...head } = entry;
      entries.push({ ...headFields(head), data: Buffer.concat(chunks).toString("hex") });
    }
  } catch (err) {
    return { error: (err as Error).message };
  }
  return { entries };
}

async function byPullParser(source: AsyncIterable<Buffer>): Promise<Outcome> {
  const entries: Array<Record<string, unknown>> = [];
  const parser = new TarPullParser({ what: "the test archive" });
  let data: Buffer[] = [];
  const done = () => {
    const last = entries[entries.length - 1];
    if (last !== undefined) last.data = Buffer.concat(data).toString("hex");
    data = [];
  };
  try {
    for await (const chunk of source) {
      parser.push(chunk);
      for (let item = parser.next(); item !== undefined; item = parser.next()) {
        if (item instanceof Uint8Array) {
          data.push(Buffer.from(item));
          continue;
        }
        done();
        entries.push(headFields(item));
      }
    }
    parser.finish();
    done();
  } catch (err) {
    return { error: (err as Error).message };
  }
  return { entries };
}

describe("tar pull parser", () => {
  it("reads what readTarEntries reads, in any pieces: entries, content and errors, on archives cut short, changed or followed by bytes", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(made, { minLength: 1, maxLength: 20 }),
        fc.array(fc.nat(200_000), { maxLength: 40 }),
        fc.oneof(
          fc.constant({ kind: "whole" as const }),
          fc.record({ kind: fc.constant("short" as const), at: fc.nat(200_000) }),
          fc.record({ kind: fc.constant("changed" as const), at: fc.nat(200_000), byte: fc.nat(255) }),
          fc.record({ kind: fc.constant("trailing" as const), bytes: fc.nat(2000) }),
        ),
        async (specs, cuts, damage) => {
          const entries: Made[] = specs.map((s, i) => ({
            path: `${i}-${s.name}`,
            type: s.type,
            content: s.type === "File" ? Buffer.alloc(s.size, s.fill) : Buffer.alloc(0),
            mode: s.mode,
          }));
          let bytes = archive(entries);
          if (damage.kind === "short") bytes = bytes.subarray(0, damage.at % bytes.length);
          if (damage.kind === "changed") bytes[damage.at % bytes.length] = damage.byte;
          if (damage.kind === "trailing") bytes = Buffer.concat([bytes, Buffer.alloc(damage.bytes, 7)]);
          const plain = await byReadTarEntries(pieces(bytes, []));
          if (damage.kind === "whole") expect(plain).not.toHaveProperty("error");
          expect(await byPullParser(pieces(bytes, cuts))).toEqual(plain);
          expect(await byPullParser(pieces(bytes, []))).toEqual(plain);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("archives of other tools", () => {
  it("reads a regular file whose header's name was cut to end in '/' (Python's PAX tar) as the file its PAX name names", async () => {
    const bytes = readFileSync(new URL("../fixtures/tar/python-pax-cut-name.tar", import.meta.url));
    const plain = await byReadTarEntries(pieces(bytes, []));
    const entries = (plain as { entries: Array<Record<string, unknown>> }).entries;
    expect(entries?.map(({ path, type, size, data }) => ({ path, type, size, data }))).toEqual([
      {
        path: `${"a".repeat(99)}/bcdef.txt`,
        type: "File",
        size: 6,
        data: Buffer.from("hello\n").toString("hex"),
      },
      { path: "after.txt", type: "File", size: 3, data: Buffer.from("xyz").toString("hex") },
    ]);
    expect(await byPullParser(pieces(bytes, [700, 1500]))).toEqual(plain);
  });
});
