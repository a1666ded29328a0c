/**
 * Attestations of a built image (issue 17): in-toto statements about one platform's image, made
 * natively by tbuild: SLSA provenance from what the build knows (attest/provenance.ts) and an SPDX
 * SBOM from the package databases in the image (attest/sbom/). They are stored beside the image as
 * BuildKit's attestation storage says (an attestation manifest per platform in the image index),
 * or as files in a filesystem output (`provenance.json`, `sbom.spdx.json`).
 *
 * The seam between making and storing: an Attestation is made once the image's manifest digest,
 * its subject, is known (after the layers are compressed for the output), so it is a function of
 * the subject.
 */

/** in-toto's statement type, as BuildKit writes it. */
export const IN_TOTO_STATEMENT_V01 = "https://in-toto.io/Statement/v0.1";
export const IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1";
export const SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1";
export const SLSA_PROVENANCE_V02 = "https://slsa.dev/provenance/v0.2";
export const SPDX_DOCUMENT = "https://spdx.dev/Document";
/** The media type of an attestation layer (BuildKit's attestation storage). */
export const IN_TOTO_MEDIA_TYPE = "application/vnd.in-toto+json";

export interface InTotoSubject {
  /** BuildKit's form for an image: `pkg:docker/NAME@TAG?platform=linux%2Famd64`, or `_` when unnamed. */
  name: string;
  digest: { sha256: string } & Record<string, string>;
}

export interface InTotoStatement<Predicate = unknown> {
  _type: string;
  subject: InTotoSubject[];
  predicateType: string;
  predicate: Predicate;
}

export type AttestationKind = "provenance" | "sbom";

/** One attestation of one platform's image. */
export interface Attestation {
  kind: AttestationKind;
  predicateType: string;
  /** Its file name in a filesystem output (`type=local`, `type=tar`): `provenance.json`, `sbom.spdx.json`. */
  file: string;
  /** The statement about `subject` (the platform's image manifest). Deterministic for a given input. */
  statement(subject: InTotoSubject[]): Promise<InTotoStatement>;
}

/** What a build is asked to attest (`--provenance`, `--sbom`, `--attest`), plain data in a BuildRequest. */
export interface AttestationRequest {
  /** false: none (`--provenance=false`); absent: buildx's default (mode=min for a pushed image). */
  provenance?: false | { mode: "min" | "max"; version: "v1" | "v0.2" };
  /** false or absent: none. */
  sbom?: false | { scanStage?: boolean; scanContext?: boolean };
}
