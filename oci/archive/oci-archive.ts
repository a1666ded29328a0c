/**
 * OCI archives: an OCI image layout (`oci-layout`, `blobs/<alg>/<hex>`, `index.json`) as one tar,
 * what `skopeo copy … oci-archive:` and `docker buildx build -o type=oci` write. Each name is in
 * index.json twice over, as BuildKit and containerd write it: `io.containerd.image.name`, the full
 * reference (what containerd and `docker load` read), and `org.opencontainers.image.ref.name`, only
 * what follows the repository (`1.0`), as the OCI spec defines it (`skopeo … oci-archive:FILE:1.0`).
 * tbuild's own store, also a layout, keeps the full reference there instead (see store/images.ts).
 */
import type { Image, ImageIndex } from "../image.js";
import { type ImageReference, parseReference } from "../reference.js";
import { ANNOTATION_REF_NAME, type Descriptor, type ImageLayout, type Index, MediaType } from "../spec.js";
import { parseDigest } from "../store/content.js";
import { TAR_END, type TarEntry, tarEntry } from "./tar.js";

export const ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name";

/** An image or index and the names it is saved under (none: saved unnamed). */
export interface ArchiveImage {
  names: string[];
  image: Image | ImageIndex;
}

/** Archive members are owned by root, dated at the epoch, so saving twice gives the same bytes. */
const EPOCH = new Date(0);

function fileEntry(path: string, size: number): TarEntry {
  return { path, type: "File", mode: 0o644, uid: 0, gid: 0, size, mtime: EPOCH };
}

function directoryEntry(path: string): TarEntry {
  return { path, type: "Directory", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: EPOCH };
}

/** What follows the repository in `name`: its tag, `@digest`, or `tag@digest` (containerd's Object). */
function ociReferenceName(name: string): string {
  let ref: ImageReference;
  try {
    ref = parseReference(name);
  } catch {
    return name;
  }
  return `${ref.tag ?? ""}${ref.digest !== undefined ? `@${ref.digest}` : ""}`;
}

/** The index.json of an archive holding `images`. */
export function archiveIndex(images: ArchiveImage[]): Index {
  const manifests: Descriptor[] = [];
  for (const { names, image } of images) {
    const { annotations, ...descriptor } = image.descriptor;
    const base = annotations ? { ...descriptor, annotations } : descriptor;
    if (names.length === 0) manifests.push(base);
    for (const name of names) {
      manifests.push({
        ...descriptor,
        annotations: {
          ...annotations,
          [ANNOTATION_REF_NAME]: ociReferenceName(name),
          [ANNOTATION_CONTAINERD_NAME]: name,
        },
      });
    }
  }
  return { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests };
}

/** The OCI archive of `images`, as tar bytes. Blobs shared between images are written once. */
export async function* ociArchive(images: ArchiveImage[]): AsyncGenerator<Buffer> {
  const layout: ImageLayout = { imageLayoutVersion: "1.0.0" };
  const layoutBytes = Buffer.from(JSON.stringify(layout));
  yield* tarEntry(fileEntry("oci-layout", layoutBytes.length), layoutBytes);
  yield* tarEntry(directoryEntry("blobs/"));
  const directories = new Set<string>();
  const written = new Set<string>();

  async function* blob(
    descriptor: Descriptor,
    content: Uint8Array | (() => NodeJS.ReadableStream),
  ): AsyncGenerator<Buffer> {
    if (written.has(descriptor.digest)) return;
    written.add(descriptor.digest);
    const { algorithm, hex } = parseDigest(descriptor.digest);
    if (!directories.has(algorithm)) {
      directories.add(algorithm);
      yield* tarEntry(directoryEntry(`blobs/${algorithm}/`));
    }
    const bytes = content instanceof Uint8Array ? content : content();
    yield* tarEntry(fileEntry(`blobs/${algorithm}/${hex}`, descriptor.size), bytes);
  }

  async function* walk(item: Image | ImageIndex): AsyncGenerator<Buffer> {
    if (item.kind === "index") {
      for (const child of await item.children()) yield* walk(child);
      yield* blob(item.descriptor, item.rawIndex);
      return;
    }
    for (const layer of item.layers) yield* blob(layer.descriptor, () => layer.open());
    yield* blob(item.manifest.config, item.rawConfig);
    yield* blob(item.descriptor, item.rawManifest);
  }

  for (const { image } of images) yield* walk(image);
  const index = Buffer.from(JSON.stringify(archiveIndex(images)));
  yield* tarEntry(fileEntry("index.json", index.length), index);
  yield TAR_END;
}
