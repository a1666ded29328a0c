/**
 * `type=oci`: the image as an OCI image layout, in one tar (what `skopeo … oci-archive:` reads) or,
 * with `tar=false`, as a directory (`oci:DIR`). Into an existing layout directory the image is
 * added: blobs it already holds are kept, its index.json keeps its other entries, and an entry of
 * the same name is replaced, as BuildKit's client does.
 */

import { createWriteStream } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { TbuildError, UsageError } from "../errors/index.js";
import {
  ANNOTATION_CONTAINERD_NAME,
  type ArchiveImage,
  archiveIndex,
  ociArchive,
} from "../oci/archive/oci-archive.js";
import { replaceFile, writeFileAtomic } from "../oci/atomic-file.js";
import { makeDirectories } from "../oci/make-directories.js";
import {
  ANNOTATION_REF_NAME,
  type Descriptor,
  type ImageLayout,
  type Index,
  MediaType,
} from "../oci/spec.js";
import { parseDigest } from "../oci/store/index.js";
import { cannotWrite, releasingSpent, writeBytesTo } from "./destination.js";
import type { Exporter, ExportJob } from "./exporter.js";

export const ociExporter: Exporter = async (job) => {
  const image = await job.image({ mediaTypes: "oci", compressLayers: true });
  const dest = job.request.dest ?? "-";
  if (job.request.tar === false) {
    if (dest === "-") throw new UsageError("type=oci,tar=false writes a directory: give dest=DIRECTORY");
    const blobs = [...image.layers.map((l) => l.descriptor), image.configDescriptor, image.descriptor];
    await writeLayoutDirectory(job, blobs, { names: job.names, image: image.image }, dest);
  } else {
    await writeBytesTo(
      ociArchive([{ names: job.names, image: image.image }]),
      dest,
      "type=oci",
      job.destinationOptions(),
    );
  }
  return image;
};

/**
 * Adds an image (or an index of several platforms' images: `top`, whose `blobs` are all in the
 * store) to the OCI layout directory `dir`, as the file header says.
 */
export async function writeLayoutDirectory(
  job: ExportJob,
  blobs: readonly Descriptor[],
  top: ArchiveImage,
  dir: string,
): Promise<void> {
  try {
    await addToLayout(job, blobs, top, dir);
  } catch (err) {
    throw cannotWrite(err, dir, "type=oci,tar=false");
  }
}

async function addToLayout(
  job: ExportJob,
  blobs: readonly Descriptor[],
  top: ArchiveImage,
  dir: string,
): Promise<void> {
  const root = path.resolve(dir);
  await makeDirectories(root);
  const layoutFile = path.join(root, "oci-layout");
  const existingLayout = await readFile(layoutFile, "utf8").catch(() => undefined);
  if (existingLayout === undefined) {
    const layout: ImageLayout = { imageLayoutVersion: "1.0.0" };
    await writeFile(layoutFile, JSON.stringify(layout));
  } else if ((JSON.parse(existingLayout) as Partial<ImageLayout>).imageLayoutVersion !== "1.0.0") {
    throw new TbuildError(
      "E_BAD_LAYOUT",
      `${dir} holds an OCI layout of another version; tbuild writes 1.0.0`,
    );
  }
  for (const blob of blobs) await copyBlob(job, blob, root);

  const indexFile = path.join(root, "index.json");
  const text = await readFile(indexFile, "utf8").catch(() => undefined);
  let index: Index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
  if (text !== undefined) {
    try {
      index = JSON.parse(text) as Index;
    } catch {
      throw new TbuildError(
        "E_BAD_LAYOUT",
        `${indexFile} is not JSON: remove it or export into another directory`,
      );
    }
    if (!Array.isArray(index.manifests)) {
      throw new TbuildError(
        "E_BAD_LAYOUT",
        `${indexFile} is not an OCI image index: remove it or export into another directory`,
      );
    }
  }
  const added = archiveIndex([top]).manifests;
  const names = new Set(top.names);
  index.manifests = [
    ...index.manifests.filter((m) => {
      // The full name is the containerd one (ref.name holds only the tag, as BuildKit writes it).
      const name = m.annotations?.[ANNOTATION_CONTAINERD_NAME] ?? m.annotations?.[ANNOTATION_REF_NAME];
      // Same name: replaced. Unnamed and the same image: written again below.
      return name !== undefined ? !names.has(name) : m.digest !== top.image.descriptor.digest;
    }),
    ...added,
  ];
  await writeFileAtomic(indexFile, JSON.stringify(index), { durable: true });
}

/** A blob from the store into the layout, unless the layout already has it whole. */
async function copyBlob(job: ExportJob, blob: Descriptor, root: string): Promise<void> {
  const { algorithm, hex } = parseDigest(blob.digest);
  const target = path.join(root, "blobs", algorithm, hex);
  const present = await stat(target).catch(() => undefined);
  if (present?.isFile() && present.size === blob.size) return;
  await makeDirectories(path.dirname(target));
  await replaceFile(target, (temp) =>
    pipeline(
      releasingSpent(job.store.content.open(blob.digest) as unknown as AsyncIterable<Uint8Array>),
      createWriteStream(temp, { flags: "wx", highWaterMark: 1 << 20 }),
      job.options.signal ? { signal: job.options.signal } : {},
    ),
  );
}
