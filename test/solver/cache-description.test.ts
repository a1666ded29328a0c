/**
 * A cache description as written (`--cache-to`, inline cache) names each record's layers as the
 * top of a stack: deep builds' descriptions stay small, and what a registry sends is checked.
 */
import { describe, expect, it } from "vitest";
import { MediaType } from "../../oci/spec.js";
import {
  type CacheDescription,
  describedLayers,
  encodeCacheDescription,
  parseCacheDescription,
} from "../../solver/cache-description.js";
import { mergeCacheDescriptions } from "../../solver/cache-writers.js";
import type { LayerRef } from "../../solver/worker.js";
import { CACHE_MOUNT_MEDIA_TYPE } from "../../worker/cache-mounts/archive.js";
import { cacheMountKey } from "../../worker/cache-mounts/store.js";

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

/** As JSON, the way it travels. */
const travel = (value: unknown) => JSON.parse(JSON.stringify(value)) as unknown;

describe("a written cache description", () => {
  it("holds the records of a 3,000-step chain in about a megabyte, and reads back the same", () => {
    const records = [];
    let layers: LayerRef[] = [];
    for (let i = 0; i < 3_000; i++) {
      layers = [...layers, layer(i)];
      records.push(record(`key-${i}`, layers));
    }
    records.push(record("empty", []), record("branch", [layer(0), layer(7)]));
    const description: CacheDescription = { records };
    const written = JSON.stringify(encodeCacheDescription(description));
    // Listed whole, the layers of these records would take ~1 GB: more than a string can hold.
    expect(written.length).toBeLessThan(2_000_000);
    const parsed = new Map(parseCacheDescription(JSON.parse(written)).records.map((r) => [r.key, r]));
    expect(parsed.size).toBe(records.length);
    for (const original of records) {
      const read = parsed.get(original.key)!;
      expect([read.name, read.material, read.layers.length]).toEqual([
        original.name,
        original.material,
        original.layers.length,
      ]);
    }
    for (const key of ["key-0", "key-1234", "key-2999", "empty", "branch"]) {
      expect(parsed.get(key)!.layers).toEqual(travel(records.find((r) => r.key === key)!.layers));
    }
  });

  it("is the same bytes for the same records, whether their equal layers are one object or copies (a cached rebuild's)", () => {
    const shared = [layer(1), layer(2)];
    const ran = { records: [record("a", shared), record("b", [...shared, layer(3)])] };
    // Read back from the cache index: each record's layers are objects of their own.
    const cached = travel(ran) as CacheDescription;
    const written = JSON.stringify(encodeCacheDescription(ran));
    expect(JSON.stringify(encodeCacheDescription(cached))).toBe(written);
    // One stack per distinct layer on its base: three, not five.
    expect((JSON.parse(written) as { stacks: unknown[] }).stacks).toHaveLength(3);
  });

  it("still reads a description whose records list their layers", () => {
    const description = { records: [record("a", [layer(1), layer(2)]), record("b", [])] };
    expect(parseCacheDescription(travel(description))).toEqual(travel(description));
  });

  it("drops records whose stack is not one: out of range, or on a stack not below it", () => {
    const stacks = [
      { layer: layer(0) },
      { below: 0, layer: layer(1) },
      { below: 3, layer: layer(2) },
      { below: 2, layer: layer(3) },
      { below: -1, layer: layer(4) },
      { below: 1, layer: { digest: "x" } },
    ];
    const records = [0, 1, 2, 3, 4, 5, 6, "1"].map((stack, i) => ({
      key: `k${i}`,
      name: "n",
      material: {},
      stack,
    }));
    const parsed = parseCacheDescription({ stacks, records });
    expect(parsed.records.map((r) => [r.key, r.layers.length])).toEqual([
      ["k0", 1],
      ["k1", 2],
    ]);
  });

  it("keeps when each record's result was made, and drops a time that is no time", () => {
    const made = Date.UTC(2026, 11, 7, 11, 52, 3, 35);
    const records = [
      { ...record("made", [layer(1)]), created: made },
      { ...record("unknown", [layer(1)]) },
      ...[-1, 1.5, "2026-12-07", 9e15, null].map((created, i) => ({ ...record(`bad${i}`, []), created })),
    ];
    const parsed = parseCacheDescription(travel(encodeCacheDescription({ records } as CacheDescription)));
    expect(parsed.records.map((r) => [r.key, r.created])).toEqual([
      ["made", made],
      ["unknown", undefined],
      ...[0, 1, 2, 3, 4].map((i) => [`bad${i}`, undefined]),
    ]);
  });
});

describe("the cache mounts a description carries", () => {
  const mountRecord = (id: string) => ({
    key: cacheMountKey(id),
    id,
    sharing: "shared" as const,
    target: "/cache",
  });
  const blob = (i: number) => ({
    mediaType: CACHE_MOUNT_MEDIA_TYPE,
    digest: `sha256:${i.toString(16).padStart(64, "a")}`,
    size: 100 + i,
  });

  it("travel with it and read back the same", () => {
    const description: CacheDescription = {
      records: [record("k", [layer(1)])],
      mounts: [{ record: mountRecord("npm"), blob: blob(1) }],
    };
    expect(parseCacheDescription(travel(encodeCacheDescription(description)))).toEqual(description);
  });

  it("are read from untrusted JSON only when the record is its own key's and the blob a mount blob", () => {
    const good = { record: mountRecord("good"), blob: blob(1) };
    const written = {
      records: [],
      mounts: [
        good,
        // A key that is not the digest of its id: it would seed another mount.
        { record: { ...mountRecord("x"), key: cacheMountKey("other") }, blob: blob(2) },
        { record: mountRecord("layer-type"), blob: { ...blob(3), mediaType: MediaType.ociLayerGzip } },
        { record: mountRecord("bad-digest"), blob: { ...blob(4), digest: "sha256:../../etc" } },
        { record: mountRecord("sha512"), blob: { ...blob(5), digest: `sha512:${"a".repeat(128)}` } },
        { record: mountRecord("huge"), blob: { ...blob(6), size: 2 ** 60 } },
        { record: mountRecord("negative"), blob: { ...blob(7), size: -1 } },
        { record: { ...mountRecord("sharing"), sharing: "everyone" }, blob: blob(8) },
        { record: mountRecord("good"), blob: blob(9) },
        "not a mount",
      ],
    };
    expect(parseCacheDescription(travel(written)).mounts).toEqual([good]);
  });

  it("never make a record's layer of a mount blob", () => {
    const asLayer = { descriptor: blob(1), diffId: blob(1).digest };
    const parsed = parseCacheDescription(travel({ records: [{ key: "k", name: "k", layers: [asLayer] }] }));
    expect(parsed.records).toEqual([]);
    const mounts = {
      records: [record("k", [layer(1)])],
      mounts: [{ record: mountRecord("m"), blob: blob(2) }],
    };
    expect(describedLayers(mounts).map((l) => l.descriptor.digest)).toEqual([layer(1).descriptor.digest]);
  });

  it("merge by mount key, the first description's blob winning (a writer's own is merged first)", () => {
    const own = { record: mountRecord("npm"), blob: blob(1) };
    const other = { record: mountRecord("npm"), blob: blob(2) };
    const onlyOther = { record: mountRecord("apt"), blob: blob(3) };
    const merged = mergeCacheDescriptions([
      { records: [], mounts: [own] },
      { records: [], mounts: [other, onlyOther] },
    ]);
    expect(merged.mounts).toHaveLength(2);
    expect(merged.mounts).toEqual(expect.arrayContaining([own, onlyOther]));
    expect(mergeCacheDescriptions([{ records: [] }]).mounts).toBeUndefined();
  });
});
