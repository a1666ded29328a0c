/**
 * Layers are compressed and decompressed in chunks of a megabyte (oci/layer.ts), where zlib's
 * default is 16 KiB: fewer callbacks and buffers for the garbage collector. The chunk size must not
 * change a byte: a layer blob's digest is in image manifests and build caches, so the same tar
 * must give the same blob as before, and the same tar back.
 *
 * The plain path: gzip as `gzipSync` (one call, zlib's default window and level), and zstd as
 * Node's zstd stream with its default chunk size. Tars of random sizes and bytes (text and noise,
 * so both stored and deflated blocks), cut into random pieces, go through `writeLayer`; the blob
 * must equal the plain path's, and `decompressor` must give the tar back.
 */
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { createZstdCompress, gzipSync } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decompressor, writeLayer } from "../../oci/layer.js";
import { ContentStore } from "../../oci/store/content.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** `size` bytes: noise, or words of it (compressible), as a seed picks. */
function bytesOf(seed: number, size: number, compressible: boolean): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = compressible ? 97 + (x % 4) : x & 0xff;
  }
  return out;
}

/** `data` in pieces at the given cut points. */
function pieces(data: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const cut of [...at, data.length]) {
    if (cut > from) out.push(data.subarray(from, cut));
    from = cut;
  }
  return out;
}

/** Node's zstd stream with its default chunk size, fed the same pieces (an empty tar: none at all). */
async function zstdPlain(input: Buffer[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of Readable.from(input).pipe(createZstdCompress())) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe("layer compression in large chunks", () => {
  const content = new ContentStore(tempDir("layer-chunks"));
  const input = fc.record({
    seed: fc.integer(),
    size: fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 1 << 20, max: 3 << 20 })),
    compressible: fc.boolean(),
    cuts: fc.array(fc.nat(), { maxLength: 8 }),
  });

  it.each(["gzip"] as const)(
    "%s: the blob is the plain path's, and decompresses to the tar",
    async (compression) => {
      await fc.assert(
        fc.asyncProperty(input, async ({ seed, size, compressible, cuts }) => {
          const data = bytesOf(seed, size, compressible);
          const input = pieces(data, cuts);
          const written = await writeLayer(content, Readable.from(input), { compression });
          const blob = await content.readBytes(written.descriptor.digest);
          const plain = compression === "gzip" ? gzipSync(data) : await zstdPlain(input);
          expect(blob.equals(plain)).toBe(true);
          const back = await collect(Readable.from([blob]).pipe(decompressor(compression)));
          expect(back.equals(data)).toBe(true);
        }),
        { numRuns: 12 },
      );
    },
    120_000,
  );

  it("an uncompressed layer passes through decompressor unchanged", async () => {
    const back = await text(
      Readable.from([Buffer.from("plain tar bytes")]).pipe(decompressor("uncompressed")),
    );
    expect(back).toBe("plain tar bytes");
  });
});
