/**
 * Scans an image of a store as a build would: its layers unpacked by the snapshotter, read through
 * the SBOM scanner's view, in the process's own user (and, started so by the caller, inside
 * tbuild's user namespace when rootless). Prints `{ warnings, document }` as JSON.
 * Usage: node sbom-scan.ts STORE IMAGE
 */
import { layersFilesystem, scanFilesystem, spdxDocument } from "../../dist/attest/sbom/index.js";
import { readImage } from "../../dist/oci/image.js";
import { openStore } from "../../dist/oci/store/index.js";
import { Snapshotter } from "../../dist/worker/snapshot/index.js";

const [storeRoot, name] = process.argv.slice(2);
if (!storeRoot || !name) throw new Error("usage: sbom-scan.ts STORE IMAGE");
const store = await openStore(storeRoot);
const record = await store.images.get(name);
if (!record) throw new Error(`no image ${name}`);
const layers = await new Snapshotter(store.root, store.content).prepareImage(
  await readImage(store.content, record.descriptor),
);
const scan = await scanFilesystem(layersFilesystem(layers));
const document = spdxDocument([{ name, kind: "image", scan }], {
  name,
  toolVersion: "test",
  created: new Date(0),
});
process.stdout.write(JSON.stringify({ warnings: scan.warnings, packages: scan.packages, document }));
