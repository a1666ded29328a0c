/**
 * One set of rules for applying a layer, whichever way it is applied: unpacked into directories
 * overlayfs stacks (what RUN steps and `tbuild run` see) or flattened in memory (what
 * `-o type=local` and `type=tar` write). A property test: random stacks of small layers (files,
 * directories, symbolic links, hard links, whiteouts and opaque markers over a few names) are
 * applied both ways, and the trees, or the refusals, must be the same. Named cases first: the
 * shapes that once differed.
 */
import { readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { flattenLayers } from "../../exporters/index.js";
import { openStore } from "../../oci/store/index.js";
import type { LayerRef } from "../../solver/worker.js";
import { LowerView } from "../../worker/snapshot/lower-view.js";
import { unpackLayer } from "../../worker/unpack.js";
import { tempDirs } from "../helpers/temp.js";
import { type FixtureEntry, writeFixtureLayer } from "./fixtures.js";

const tempDir = tempDirs();

type Outcome = { tree: Record<string, string> } | { refused: { code: string; reason: string } };

function refusal(err: unknown): Outcome {
  const { code, reason } = err as { code?: string; reason?: string };
  if (code === undefined) throw err;
  return { refused: { code, reason: reason ?? String((err as Error).message) } };
}

const owner = (mode: number, uid: number, gid: number) => `${(mode & 0o7777).toString(8)} ${uid}:${gid}`;
const seconds = (date: Date) => Math.floor(date.getTime() / 1000);

/** The stack as `-o type=local` would write it: the exporters' flattening. */
async function flattened(store: Awaited<ReturnType<typeof openStore>>, layers: LayerRef[]): Promise<Outcome> {
  const tree: Record<string, string> = {};
  const files = new Map<string, string>();
  try {
    for await (const entry of flattenLayers(store.content, layers)) {
      const meta = `${owner(entry.mode, entry.uid, entry.gid)} @${seconds(entry.mtime)}`;
      if (entry.type === "Directory") tree[entry.path] = `dir ${meta}`;
      else if (entry.type === "SymbolicLink")
        tree[entry.path] = `symlink ${entry.uid}:${entry.gid} @${seconds(entry.mtime)} -> ${entry.linkpath}`;
      else if (entry.type === "File") {
        const chunks: Buffer[] = [];
        for await (const chunk of entry.body!) chunks.push(chunk);
        tree[entry.path] = `file ${meta} ${Buffer.concat(chunks).toString()}`;
        files.set(entry.path, tree[entry.path]!);
      } else if (entry.type === "Link") tree[entry.path] = files.get(entry.linkpath!)!;
      else tree[entry.path] = entry.type;
    }
  } catch (err) {
    return refusal(err);
  }
  return { tree };
}

/** The stack as a RUN step sees it: each layer unpacked over the ones below, read as overlayfs merges them. */
async function unpacked(
  store: Awaited<ReturnType<typeof openStore>>,
  layers: LayerRef[],
  work: string,
): Promise<Outcome> {
  const dirs: string[] = [];
  try {
    for (const [index, layer] of layers.entries()) {
      const dir = path.join(work, `layer-${index}`);
      await unpackLayer(store.content.open(layer.descriptor.digest), dir, {
        rootless: false,
        lowers: [...dirs],
      });
      dirs.push(dir);
    }
  } catch (err) {
    return refusal(err);
  }
  const view = new LowerView(dirs);
  const tree: Record<string, string> = {};
  const visit = async (rel: string) => {
    const entries = [...(await view.list(rel))].sort(([a], [b]) => (a < b ? -1 : 1));
    for (const [name, { source, stat }] of entries) {
      const child = rel === "" ? name : `${rel}/${name}`;
      const meta = `${owner(Number(stat.mode), Number(stat.uid), Number(stat.gid))} @${seconds(stat.mtime)}`;
      if (stat.isDirectory()) {
        tree[child] = `dir ${meta}`;
        await visit(child);
      } else if (stat.isSymbolicLink()) {
        tree[child] = `symlink ${stat.uid}:${stat.gid} @${seconds(stat.mtime)} -> ${readlinkSync(source)}`;
      } else if (stat.isFile()) {
        tree[child] = `file ${meta} ${readFileSync(source, "utf8")}`;
      } else tree[child] = "special";
    }
  };
  await visit("");
  return { tree };
}

async function bothWays(stack: FixtureEntry[][], name: string) {
  const work = tempDir(`layer-rules-${name}`);
  const store = await openStore(path.join(work, "store"));
  const layers: LayerRef[] = [];
  for (const entries of stack) layers.push(await writeFixtureLayer(store, entries, "uncompressed"));
  return { flattened: await flattened(store, layers), unpacked: await unpacked(store, layers, work) };
}

describe("a layer is applied by one set of rules, unpacked or flattened", () => {
  it("a layer writing below a link of the layers below replaces the link with its directory (lib -> usr/lib, then lib/x)", async () => {
    const { flattened, unpacked } = await bothWays(
      [
        [
          { path: "usr", type: "Directory" },
          { path: "usr/lib", type: "Directory" },
          { path: "usr/lib/libc.so", type: "File", content: "libc" },
          { path: "lib", type: "SymbolicLink", linkpath: "usr/lib" },
          { path: "escape", type: "SymbolicLink", linkpath: "../../../.." },
        ],
        [
          { path: "lib/libz.so", type: "File", content: "libz" },
          { path: "escape/etc/inside", type: "File", content: "stays inside" },
        ],
      ],
      "usr-lib",
    );
    expect(unpacked).toEqual(flattened);
    const tree = (flattened as { tree: Record<string, string> }).tree;
    expect(Object.keys(tree).sort()).toEqual([
      "escape",
      "escape/etc",
      "escape/etc/inside",
      "lib",
      "lib/libz.so",
      "usr",
      "usr/lib",
      "usr/lib/libc.so",
    ]);
    expect(tree.lib).toBe("dir 755 0:0 @0");
  });

  it("a lower file where a layer writes below it becomes the layer's directory", async () => {
    const { flattened, unpacked } = await bothWays(
      [[{ path: "f", type: "File", content: "lower" }], [{ path: "f/x", type: "File", content: "x" }]],
      "file-parent",
    );
    expect(unpacked).toEqual(flattened);
    expect(Object.keys((flattened as { tree: Record<string, string> }).tree).sort()).toEqual(["f", "f/x"]);
  });

  it("a whiteout below a lower link makes the layer's directory there too, and hides nothing behind the link", async () => {
    const { flattened, unpacked } = await bothWays(
      [
        [
          { path: "real", type: "Directory" },
          { path: "real/kept", type: "File", content: "kept" },
          { path: "l", type: "SymbolicLink", linkpath: "real" },
        ],
        [{ path: "l/kept", type: "Whiteout" }],
      ],
      "whiteout-link",
    );
    expect(unpacked).toEqual(flattened);
    expect(Object.keys((flattened as { tree: Record<string, string> }).tree).sort()).toEqual([
      "l",
      "real",
      "real/kept",
    ]);
  });

  it("a hard link through a lower link finds nothing; through one the layer planted it is refused", async () => {
    const lower: FixtureEntry[] = [
      { path: "real", type: "Directory" },
      { path: "real/f", type: "File", content: "f" },
      { path: "l", type: "SymbolicLink", linkpath: "real" },
    ];
    const throughLower = await bothWays(
      [lower, [{ path: "h", type: "Link", linkpath: "l/f" }]],
      "link-lower",
    );
    expect(throughLower.unpacked).toEqual(throughLower.flattened);
    expect(throughLower.flattened).toEqual({
      refused: { code: "E_INVALID_LAYER", reason: 'is a hard link to "l/f", which does not exist' },
    });
    const planted = await bothWays(
      [
        lower,
        [
          { path: "p", type: "SymbolicLink", linkpath: "real" },
          { path: "h", type: "Link", linkpath: "p/f" },
        ],
      ],
      "link-planted",
    );
    expect(planted.unpacked).toEqual(planted.flattened);
    expect(planted.flattened).toEqual({
      refused: {
        code: "E_HOSTILE_LAYER",
        reason: 'is a hard link through "p", a symbolic link the layer planted',
      },
    });
  });

  it("random stacks of layers come out the same both ways", async () => {
    const seed = Number(process.env.LAYER_RULES_SEED ?? 20261207);
    const cases = Number(process.env.LAYER_RULES_CASES ?? 150);
    let state = seed >>> 0;
    const random = (n: number) => {
      // mulberry32: small, seeded, the same sequence on every machine.
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (((t ^ (t >>> 14)) >>> 0) % 4294967296) % n;
    };
    const pick = <T>(items: readonly T[]): T => items[random(items.length)]!;
    const somePath = () => Array.from({ length: 1 + random(3) }, () => pick(["a", "b", "c"])).join("/");
    const entry = (): FixtureEntry => {
      const where = somePath();
      switch (
        pick(["dir", "dir", "file", "file", "file", "symlink", "link", "whiteout", "opaque"] as const)
      ) {
        case "dir":
          return { path: where, type: "Directory", mode: pick([0o755, 0o700]), uid: pick([0, 1000]), gid: 0 };
        case "file":
          return { path: where, type: "File", content: `c${random(100)}`, mode: pick([0o644, 0o600]) };
        case "symlink":
          return { path: where, type: "SymbolicLink", linkpath: pick(["", "/", "../"]) + somePath() };
        case "link":
          return { path: where, type: "Link", linkpath: somePath() };
        case "whiteout":
          return { path: where, type: "Whiteout" };
        case "opaque":
          return { path: where, type: "Opaque" };
      }
    };
    const outcomes = { trees: 0, refused: 0 };
    for (let n = 0; n < cases; n++) {
      const stack = Array.from({ length: 1 + random(3) }, () => Array.from({ length: 1 + random(6) }, entry));
      const { flattened, unpacked } = await bothWays(stack, `random-${n}`);
      expect(unpacked, `case ${n} (seed ${seed}): ${JSON.stringify(stack)}`).toEqual(flattened);
      if ("tree" in flattened) outcomes.trees++;
      else outcomes.refused++;
    }
    // Both kinds of outcome were compared, not only refusals.
    expect(outcomes.trees).toBeGreaterThan(cases / 3);
    expect(outcomes.refused).toBeGreaterThan(0);
  }, 240_000);
});
