/**
 * A build's SBOM attestation (`--sbom`, `--attest type=sbom`): the target's filesystem scanned
 * natively (attest/sbom/), with what BuildKit's BUILDKIT_SBOM_SCAN_STAGE and
 * BUILDKIT_SBOM_SCAN_CONTEXT add (frontend/lower: LoweredStage's sbomScanStage, sbomScanContext):
 * the other stages the target needed that ask to be scanned, and the build context. One SPDX
 * document names each as a source.
 *
 * Filesystems are read from the worker's unpacked layers (the snapshotter unpacks any it does not
 * have yet), inside tbuild's user namespace when rootless, as the build runs.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Attestation } from "../attest/attestation.js";
import type { SbomInput } from "../attest/sbom/index.js";
import type { LoweredBuild } from "../frontend/lower/index.js";
import type { Image } from "../oci/image.js";
import { normalizeImageName } from "../oci/store/images.js";
import type { Store } from "../oci/store/index.js";
import type { FsResult } from "../solver/worker.js";
import type { Snapshotter } from "../worker/snapshot/index.js";
import type { BuildRequest } from "./request.js";

export type SbomRequest = Exclude<NonNullable<BuildRequest["attestations"]>["sbom"], false | undefined>;

/** The SBOM a request asks for; none unless asked (buildx makes none by default). */
export function sbomOf(request: BuildRequest): SbomRequest | undefined {
  const asked = request.attestations?.sbom;
  return asked ? asked : undefined;
}

/** The document's name: the image's first name as a full reference, else the target stage's. */
export function sbomName(request: BuildRequest, stage: string): string {
  const name = request.tags?.[0];
  return name === undefined ? stage : normalizeImageName(name);
}

export interface SbomBuild {
  store: Store;
  snapshotter: Snapshotter;
  lowered: LoweredBuild;
  /** The target's filesystem. */
  result: FsResult;
  /** Every vertex's result of the solve (the scanned stages' among them). */
  results: Map<string, FsResult>;
  /** The build context's directory. */
  contextDir: string;
  /** The document's name: the image's first name, else the Dockerfile's stage. */
  name: string;
  /** SOURCE_DATE_EPOCH: the document's time; else now. */
  epoch?: number;
  signal?: AbortSignal;
}

/** The SBOM attestation of one platform's image. */
export async function collectSbom(build: SbomBuild): Promise<Attestation> {
  const { layersFilesystem, sbomAttestation } = await import("../attest/sbom/index.js");
  const filesOf = async (result: FsResult) =>
    layersFilesystem(await build.snapshotter.prepareImage(imageOf(build.store, result), build.signal));
  const inputs: SbomInput[] = [{ name: build.name, kind: "image", files: await filesOf(build.result) }];
  const { lowered } = build;
  for (const stage of lowered.stages) {
    // Only a stage the target needed, and not the target itself: BuildKit's rule.
    if (stage.index === lowered.target.index || !stage.sbomScanStage || stage.root === undefined) continue;
    const result = build.results.get(stage.root);
    if (result !== undefined) inputs.push({ name: stage.name, kind: "stage", files: await filesOf(result) });
  }
  if (lowered.target.sbomScanContext) {
    inputs.push({ name: "context", kind: "context", files: layersFilesystem([build.contextDir]) });
  }
  return sbomAttestation(inputs, {
    name: build.name,
    toolVersion: tbuildVersion(),
    ...(build.epoch !== undefined ? { created: new Date(build.epoch * 1000) } : {}),
  });
}

/** A filesystem result as the snapshotter's prepareImage takes an image: its layers, from the store. */
function imageOf(store: Store, result: FsResult): Pick<Image, "layers"> {
  return {
    layers: result.layers.map((layer) => ({
      descriptor: layer.descriptor,
      diffId: layer.diffId,
      open: () => store.content.open(layer.descriptor.digest),
    })),
  };
}

let version: string | undefined;

/** tbuild's version, from the package.json above this module (in dist/ or the bundle). */
function tbuildVersion(): string {
  version ??= findVersion();
  return version;
}

function findVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const file = path.join(dir, "package.json");
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
      if (pkg.name === "tbuild" && pkg.version) return pkg.version;
    }
    dir = path.dirname(dir);
  }
  return "unknown";
}
