/**
 * `image`: a base image's filesystem is its layers as they are in the store, pulled by digest
 * when the store lacks the manifest or any layer. Nothing is unpacked or copied here: the
 * snapshotter unpacks a layer only when a step needs the filesystem.
 */
import { readImage } from "../../oci/image.js";
import { parseReference } from "../../oci/reference.js";
import { pullImage } from "../../oci/registry/index.js";
import { type Descriptor, MediaType } from "../../oci/spec.js";
import type { ImageOp } from "../../solver/graph.js";
import type { FsResult, LayerRef } from "../../solver/worker.js";
import type { OpContext } from "./context.js";

export async function runImage(op: ImageOp, _inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  const stored = await storedLayers(op, ctx);
  if (stored) return { layers: stored };
  const ref = parseReference(op.ref);
  // By digest alone: the tag may have moved since the graph was made, the digest is what it pinned.
  await pullImage(
    ctx.store,
    { domain: ref.domain, path: ref.path, digest: op.digest },
    { ...ctx.registry, platform: op.platform, signal: ctx.signal, warn: ctx.warn },
  );
  const pulled = await storedLayers(op, ctx);
  if (!pulled) throw new Error(`the pull of ${op.ref}@${op.digest} left layers missing from the store`);
  return { layers: pulled };
}

/** The image's layers, when its manifest, config and every layer blob are in the store. */
async function storedLayers(op: ImageOp, ctx: OpContext): Promise<LayerRef[] | undefined> {
  const content = ctx.store.content;
  if (!(await content.has(op.digest))) return undefined;
  const raw = await content.readBytes(op.digest);
  const manifest = JSON.parse(raw.toString("utf8")) as { mediaType?: string; config?: Descriptor };
  if (manifest.config === undefined || !(await content.has(manifest.config.digest))) return undefined;
  const descriptor: Descriptor = {
    // An OCI manifest may leave its media type out; a Docker one always names it.
    mediaType: manifest.mediaType ?? MediaType.ociManifest,
    digest: op.digest,
    size: raw.length,
  };
  const image = await readImage(content, descriptor);
  for (const layer of image.layers) {
    if (!(await content.has(layer.descriptor.digest))) return undefined;
  }
  return image.layers.map((layer) => ({ descriptor: layer.descriptor, diffId: layer.diffId }));
}
