/**
 * The SBOM generator (issue 17): the packages in an image's filesystem, as an SPDX 2.3 document in
 * an in-toto statement, made natively (no scanner image, no network).
 *
 * - `layersFilesystem(layers)`: the read-only view of unpacked layers (lowest first) or a directory;
 * - `scanFilesystem(fs)`: the packages found, with warnings for bad entries;
 * - `spdxDocument(sources, options)`: one document of one or several scanned sources;
 * - `sbomAttestation(sources, options)`: the Attestation (attest/attestation.ts) of that document.
 */
import {
  type Attestation,
  IN_TOTO_STATEMENT_V01,
  type InTotoStatement,
  type InTotoSubject,
  SPDX_DOCUMENT,
} from "../attestation.js";
import type { ImageFilesystem } from "./filesystem.js";
import { scanFilesystem } from "./scan.js";
import { type SbomSource, type SpdxDocument, type SpdxOptions, spdxDocument } from "./spdx.js";

export { type ImageEntry, type ImageFilesystem, layersFilesystem } from "./filesystem.js";
export type { FoundPackage, PackageType } from "./package.js";
export { type ScanResult, scanFilesystem } from "./scan.js";
export { type SbomSource, type SpdxDocument, type SpdxOptions, spdxDocument } from "./spdx.js";

/** A filesystem to scan, named as the document names it: the image, an extra stage, the context. */
export interface SbomInput {
  name: string;
  kind: SbomSource["kind"];
  files: ImageFilesystem;
}

/** The SBOM file's name in a filesystem output, as BuildKit writes it. */
export const SBOM_FILE = "sbom.spdx.json";

/**
 * The SBOM attestation of `inputs` (the image first; then the stages and context BuildKit's
 * BUILDKIT_SBOM_SCAN_STAGE / BUILDKIT_SBOM_SCAN_CONTEXT add), all in one document. The scan runs
 * once, at the first `statement()`: the filesystems must stay readable until then. The statement's
 * `_type` is in-toto v0.1, as BuildKit writes its SBOM statements.
 */
export function sbomAttestation(inputs: readonly SbomInput[], options: SpdxOptions): Attestation {
  let document: Promise<SpdxDocument> | undefined;
  const make = async () => {
    const sources: SbomSource[] = [];
    for (const input of inputs) {
      sources.push({ name: input.name, kind: input.kind, scan: await scanFilesystem(input.files) });
    }
    return spdxDocument(sources, options);
  };
  return {
    kind: "sbom",
    predicateType: SPDX_DOCUMENT,
    file: SBOM_FILE,
    async statement(subject: InTotoSubject[]): Promise<InTotoStatement> {
      document ??= make();
      return {
        _type: IN_TOTO_STATEMENT_V01,
        subject,
        predicateType: SPDX_DOCUMENT,
        predicate: await document,
      };
    },
  };
}
