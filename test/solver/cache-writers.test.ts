/**
 * The naming of a shared registry cache's writers: each store's own tag of a ref, found again in a
 * registry's tag list and index, never confused with another ref's tags; and the merge of the
 * writers' caches.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { MediaType } from "../../oci/spec.js";
import {
  isWriterTagOf,
  MAX_CACHE_WRITERS,
  mergeCacheDescriptions,
  storeCacheWriter,
  WRITERS_ANNOTATION,
  writersIn,
  writerTag,
} from "../../solver/cache-writers.js";
import type { LayerRef } from "../../solver/worker.js";

const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = `sha256:${"ab".repeat(32)}`;

const layer = (i: number): LayerRef => {
  const hex = i.toString(16).padStart(64, "0");
  return {
    descriptor: { mediaType: MediaType.ociLayerGzip, digest: `sha256:${hex}`, size: i },
    diffId: `sha256:${hex}`,
  };
};
const record = (key: string, layers: LayerRef[]) => ({
  key,
  name: key,
  material: { op: key, inputs: [] },
  layers,
});

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe("writer tags", () => {
  it("are valid tags of the ref's tag, one per writer, and no other tag's", () => {
    const one = writerTag("main", "0123456789abcdef");
    const two = writerTag("main", "fedcba9876543210");
    expect(one).toMatch(TAG);
    expect(one).not.toBe(two);
    expect(isWriterTagOf("main", one)).toBe(true);
    expect(isWriterTagOf("main", two)).toBe(true);
    expect(isWriterTagOf("main", "main")).toBe(false);
    expect(isWriterTagOf("mai", one)).toBe(false);
    expect(isWriterTagOf("main-2", one)).toBe(false);
    expect(isWriterTagOf("main", `${one}0`)).toBe(false);
    expect(isWriterTagOf("main", writerTag("main", "../../x/abcdefg"))).toBe(false);
  });

  it("of a tag of 128 characters are still valid tags, and two such tags differing at the end keep theirs apart", () => {
    const long = `v${"x".repeat(126)}`;
    const a = writerTag(`${long}a`, "0123456789abcdef");
    const b = writerTag(`${long}b`, "0123456789abcdef");
    expect(a).toMatch(TAG);
    expect(a).not.toBe(b);
    expect(isWriterTagOf(`${long}a`, a)).toBe(true);
    expect(isWriterTagOf(`${long}b`, a)).toBe(false);
  });
});

describe("a ref's writers index", () => {
  it("keeps only writer tags of the ref with digests, at most MAX_CACHE_WRITERS", () => {
    const listed: Record<string, unknown> = {
      [writerTag("main", "0123456789abcdef")]: DIGEST,
      "../../other/manifests/x": DIGEST,
      [writerTag("other", "0123456789abcdef")]: DIGEST,
      [writerTag("main", "1123456789abcdef")]: "sha256:../../x",
      [writerTag("main", "2123456789abcdef")]: 7,
    };
    for (let i = 0; i < 200; i++) listed[writerTag("main", i.toString(16).padStart(16, "0"))] = DIGEST;
    const writers = writersIn({ [WRITERS_ANNOTATION]: JSON.stringify(listed) }, "main");
    expect(writers.get(writerTag("main", "0123456789abcdef"))).toBe(DIGEST);
    expect(writers.size).toBe(MAX_CACHE_WRITERS);
    for (const tag of writers.keys()) expect(isWriterTagOf("main", tag)).toBe(true);
    expect(writersIn({ [WRITERS_ANNOTATION]: "not json" }, "main").size).toBe(0);
    expect(writersIn({ [WRITERS_ANNOTATION]: "[1,2]" }, "main").size).toBe(0);
    expect(writersIn(undefined, "main").size).toBe(0);
  });
});

describe("merging writers' caches", () => {
  it("keeps every key once (the first writer's record) and each layer once", () => {
    const merged = mergeCacheDescriptions([
      { records: [record("b", [layer(1)]), record("a", [layer(1), layer(2)])] },
      { records: [record("a", [layer(3)]), record("c", [layer(1), layer(4)])] },
    ]);
    expect(merged.records.map((r) => r.key)).toEqual(["a", "b", "c"]);
    expect(merged.records[0]!.layers.map((l) => l.descriptor.size)).toEqual([1, 2]);
    // The same layer from two writers is one object: written once.
    expect(merged.records[2]!.layers[0]).toBe(merged.records[1]!.layers[0]);
  });
});

describe("a store's writer name", () => {
  const store = () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cache-writer-"));
    dirs.push(dir);
    return dir;
  };

  it("is made once and kept: builds exporting at once from one store agree on it, another store has its own", async () => {
    const one = store();
    const names = await Promise.all(Array.from({ length: 8 }, () => storeCacheWriter(one)));
    expect(names[0]).toMatch(/^[0-9a-f]{16}$/);
    expect(new Set(names).size).toBe(1);
    expect(await storeCacheWriter(one)).toBe(names[0]);
    expect(await storeCacheWriter(store())).not.toBe(names[0]);
  });

  it("a damaged id file is replaced by a new id, not refused", async () => {
    const one = store();
    const first = await storeCacheWriter(one);
    const file = path.join(one, "cache", "writer-id");
    writeFileSync(file, "garbage\n");
    const second = await storeCacheWriter(one);
    expect(second).toMatch(/^[0-9a-f]{16}$/);
    expect(second).not.toBe(first);
    expect(readFileSync(file, "utf8")).toMatch(/^[0-9a-f]{32}\n$/);
  });

  it("a store where it cannot be made is one clear error", async () => {
    const one = store();
    writeFileSync(path.join(one, "cache"), "a file where the cache directory goes\n");
    await expect(storeCacheWriter(one)).rejects.toThrow(
      /cannot read or make this store's cache writer id at .*ENOTDIR/,
    );
  });
});
