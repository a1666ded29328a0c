/**
 * The cache index keeps a result's layers as a stack, each layer once: a build of thousands of
 * steps, each result holding every layer below it, must not write each list whole.
 */
import { statSync } from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { describe, expect, it } from "vitest";
import { MediaType } from "../../oci/spec.js";
import { CacheIndex, type KeyMaterial } from "../../solver/cache.js";
import type { LayerRef } from "../../solver/worker.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

const layer = (i: number): LayerRef => {
  const hex = i.toString(16).padStart(64, "0");
  return {
    descriptor: { mediaType: MediaType.ociLayerGzip, digest: `sha256:${hex}`, size: 100 + i },
    diffId: `sha256:${hex.replace(/^0/, "f")}`,
  };
};
const material = (i: number): KeyMaterial => ({ op: { step: i }, inputs: [] });

function chain(cache: CacheIndex, steps: number): LayerRef[] {
  // As a build does it: each step's result is its input's layers plus one.
  let layers: LayerRef[] = [];
  for (let i = 0; i < steps; i++) {
    layers = [...layers, layer(i)];
    cache.put(`key-${i}`, { layers }, material(i), `step ${i}`);
  }
  return layers;
}

describe("the cache index", () => {
  it("stores the results of a 2,000-step chain in a few megabytes, each read back whole", () => {
    const file = path.join(tempDir("cache"), "index.db");
    const cache = new CacheIndex(file);
    const layers = chain(cache, 2_000);
    expect(cache.get("key-1999")?.result.layers).toEqual(layers);
    expect(cache.get("key-999")?.result.layers).toEqual(layers.slice(0, 1_000));
    const all = new Map(cache.all().map((r) => [r.key, r]));
    expect(all.size).toBe(2_000);
    expect(all.get("key-1500")?.result.layers).toEqual(layers.slice(0, 1_501));
    expect(cache.recordsNamed("step 7")[0]?.result.layers).toEqual(layers.slice(0, 8));
    cache.close();
    // Each list whole would be 2,000 * 1,000 layers of ~200 bytes: 400 MB.
    expect(statSync(file).size).toBeLessThan(8 * 1024 * 1024);
  });

  it("removes with a record the layers no other record holds, and keeps the rest readable", () => {
    const cache = new CacheIndex(path.join(tempDir("cache"), "index.db"));
    const layers = chain(cache, 50);
    cache.put("branch", { layers: [...layers.slice(0, 10), layer(999)] }, material(999), "branch");
    cache.remove(Array.from({ length: 50 }, (_, i) => `key-${i}`).filter((k) => k !== "key-4"));
    expect(cache.all().map((r) => [r.key, r.result.layers.length])).toEqual([
      ["key-4", 5],
      ["branch", 11],
    ]);
    expect(cache.get("branch")?.result.layers).toEqual([...layers.slice(0, 10), layer(999)]);
    const db = new DatabaseSync(cache.file, { readOnly: true });
    expect(db.prepare("SELECT count(*) AS n FROM layer_stacks").get()).toEqual({ n: 11 });
    db.close();
    cache.close();
  });

  it("writes a whole stack again when another process's collection removed the part it had written", () => {
    const file = path.join(tempDir("cache"), "index.db");
    const cache = new CacheIndex(file);
    const layers = chain(cache, 20);
    const other = new CacheIndex(file);
    other.remove(Array.from({ length: 20 }, (_, i) => `key-${i}`));
    other.close();
    const next = [...layers, layer(20)];
    cache.put("key-20", { layers: next }, material(20), "step 20");
    expect(cache.get("key-20")?.result.layers).toEqual(next);
    cache.close();
  });

  it("reads a record written before stacks, with its layers listed in it", () => {
    const file = path.join(tempDir("cache"), "index.db");
    new CacheIndex(file).close();
    const db = new DatabaseSync(file);
    db.prepare(
      "INSERT INTO results (key, result, material, name, created, last_used) VALUES (?, ?, ?, ?, ?, ?)",
    ).run("old", JSON.stringify({ layers: [layer(1), layer(2)] }), JSON.stringify(material(1)), "old", 1, 1);
    db.close();
    const cache = new CacheIndex(file);
    expect(cache.get("old")?.result.layers).toEqual([layer(1), layer(2)]);
    expect(cache.all()[0]?.result.layers).toEqual([layer(1), layer(2)]);
    cache.close();
  });
});
