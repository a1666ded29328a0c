/**
 * The embedded store: content-addressed blobs and named images in one directory that is itself an
 * OCI image layout (`oci-layout`, `index.json`, `blobs/`), plus tbuild's own `ingest/` (blobs
 * being written) and `leases/` (blobs live processes rely on). No daemon: every command opens it.
 */

import { randomBytes } from "node:crypto";
import { access, link, mkdir, readFile, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { TbuildError } from "../../errors/index.js";
import { type ImageLayout, type Index, MediaType } from "../spec.js";
import { ContentStore, DiskFullError } from "./content.js";
import { ImageStore } from "./images.js";

export {
  BlobNotFoundError,
  ContentStore,
  DigestMismatchError,
  DiskFullError,
  digestOf,
  type ExpectedBlob,
  InvalidDigestError,
  parseDigest,
  type WrittenBlob,
} from "./content.js";
export {
  ANNOTATION_PULLED_INDEX,
  CorruptStoreError,
  ImageNotFoundError,
  type ImageRecord,
  ImageStore,
  MissingContentError,
  normalizeImageName,
} from "./images.js";

export interface Store {
  root: string;
  content: ContentStore;
  images: ImageStore;
}
export { defaultStoreRoot } from "./root.js";

const LAYOUT: ImageLayout = { imageLayoutVersion: "1.0.0" };
const EMPTY_INDEX: Index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };

/** Opens the store at `root`, creating an empty image layout there on first use. */
export async function openStore(root: string): Promise<Store> {
  const absolute = path.resolve(root);
  try {
    await mkdir(path.join(absolute, "blobs", "sha256"), { recursive: true });
    await createIfAbsent(path.join(absolute, "oci-layout"), `${JSON.stringify(LAYOUT)}\n`);
    await createIfAbsent(path.join(absolute, "index.json"), `${JSON.stringify(EMPTY_INDEX, null, 2)}\n`);
  } catch (err) {
    if (err instanceof TbuildError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") throw new DiskFullError(absolute, err);
    throw new TbuildError(
      "E_STORE_UNUSABLE",
      `cannot use ${absolute} as the image store (${code ?? (err as Error).message}); set TBUILD_ROOT to a directory you can write`,
      { cause: err },
    );
  }
  await checkLayout(absolute);
  const content = new ContentStore(absolute);
  return { root: absolute, content, images: new ImageStore(absolute, content) };
}

/**
 * Writes a file only if it does not exist, atomically: link(2) of a complete temp file fails with
 * EEXIST when another process got there first, so a late opener never clobbers a filled index.
 */
async function createIfAbsent(file: string, text: string): Promise<void> {
  // Checked first so that a store on a read-only mount still opens for reading.
  if (
    await access(file).then(
      () => true,
      () => false,
    )
  )
    return;
  const temp = `${file}.${process.pid}-${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(temp, text, { flag: "wx", flush: true });
  try {
    await link(temp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    await unlink(temp).catch(() => {});
  }
}

async function checkLayout(root: string): Promise<void> {
  const file = path.join(root, "oci-layout");
  let layout: Partial<ImageLayout>;
  try {
    layout = JSON.parse(await readFile(file, "utf8")) as Partial<ImageLayout>;
  } catch (err) {
    throw new TbuildError("E_STORE_CORRUPT", `${file} is not an OCI layout file (${(err as Error).message})`);
  }
  if (layout.imageLayoutVersion !== LAYOUT.imageLayoutVersion) {
    throw new TbuildError(
      "E_STORE_CORRUPT",
      `${root} holds an OCI image layout of version ${JSON.stringify(layout.imageLayoutVersion)}; tbuild reads 1.0.0`,
    );
  }
}
