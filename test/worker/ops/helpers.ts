/**
 * What the op tests share: a real store and snapshotter in a temp directory, an OpContext over
 * them, filesystems made from real directories (through the `local` op), and ways to look at a
 * result: one layer's entries, or the whole filesystem mounted.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { decompressor, layerCompression } from "../../../oci/layer.js";
import { openStore } from "../../../oci/store/index.js";
import type { LocalOp } from "../../../solver/graph.js";
import type { FsResult, LayerRef } from "../../../solver/worker.js";
import type { OpContext } from "../../../worker/ops/context.js";
import { prepareLayers } from "../../../worker/ops/layers.js";
import { runLocal } from "../../../worker/ops/local.js";
import { Snapshotter } from "../../../worker/snapshot/index.js";
import { type ListedEntry, listTar } from "../layers.js";

export interface OpsFixture {
  root: string;
  ctx: OpContext;
  warnings: string[];
  cleanup(): Promise<void>;
}

export async function opsFixture(overrides: Partial<OpContext> = {}): Promise<OpsFixture> {
  const root = await mkdtemp(path.join(tmpdir(), "tbuild-ops-test-"));
  const store = await openStore(path.join(root, "store"));
  const stateDir = path.join(root, "state");
  await mkdir(stateDir);
  const warnings: string[] = [];
  const ctx: OpContext = {
    store,
    snapshotter: new Snapshotter(store.root, store.content),
    signal: new AbortController().signal,
    log: () => {},
    warn: (message) => warnings.push(message),
    localSources: {},
    secrets: {},
    ssh: {},
    compression: "gzip",
    stateDir,
    ...overrides,
  };
  return { root, ctx, warnings, cleanup: () => rm(root, { recursive: true, force: true }) };
}

/** A directory as a one-layer filesystem, read by the `local` op as a build context is. */
export async function fsOfDirectory(ctx: OpContext, dir: string, name = `dir-${path.basename(dir)}`) {
  const op: LocalOp = { kind: "local", name, excludePatterns: [], followPaths: [] };
  return runLocal(op, [], { ...ctx, localSources: { ...ctx.localSources, [name]: dir } });
}

/** The entries of one layer blob, read by the `tar` package. */
export async function layerEntries(ctx: OpContext, layer: LayerRef): Promise<ListedEntry[]> {
  const blob = ctx.store.content.open(layer.descriptor.digest);
  const plain = blob.pipe(decompressor(layerCompression(layer.descriptor.mediaType)));
  return listTar(plain as AsyncIterable<Uint8Array>);
}

/** The entries of the layer a file op added, by path. */
export async function addedEntries(ctx: OpContext, fs: FsResult): Promise<Map<string, ListedEntry>> {
  const entries = await layerEntries(ctx, fs.layers.at(-1)!);
  return new Map(entries.map((e) => [e.path, e]));
}

/** Mounts a whole filesystem, gives its root to `look`, and releases it. */
export async function withMounted<T>(
  ctx: OpContext,
  fs: FsResult,
  look: (root: string) => Promise<T>,
): Promise<T> {
  const mount = await ctx.snapshotter.mountWritable(await prepareLayers(ctx, fs.layers));
  try {
    return await look(mount.rootfs);
  } finally {
    await mount.release();
  }
}
