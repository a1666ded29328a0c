/**
 * The filesystem of an image in a test's store, as a build has it: its layers unpacked by the
 * worker's snapshotter (prepareImage), lowest first, read through the SBOM scanner's view.
 */
import { layersFilesystem } from "../../attest/sbom/index.js";
import { readImage } from "../../oci/image.js";
import { openStore } from "../../oci/store/index.js";
import { Snapshotter } from "../../worker/snapshot/index.js";

export async function imageLayersOf(storeRoot: string, name: string): Promise<string[]> {
  const store = await openStore(storeRoot);
  const record = await store.images.get(name);
  if (!record) throw new Error(`no image ${name} in ${storeRoot}`);
  const image = await readImage(store.content, record.descriptor);
  return new Snapshotter(store.root, store.content).prepareImage(image);
}

export async function imageFilesystemOf(storeRoot: string, name: string) {
  return layersFilesystem(await imageLayersOf(storeRoot, name));
}
