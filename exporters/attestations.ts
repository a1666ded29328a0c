/**
 * Attestations beside an image, as BuildKit's attestation storage document says
 * (moby/buildkit docs/attestations/attestation-storage.md): per platform one attestation manifest,
 * listed in the image index after the image manifests, with platform `unknown/unknown` and the
 * annotations `vnd.docker.reference.type: attestation-manifest` and `vnd.docker.reference.digest`
 * (the image manifest it is about); each statement a layer of `application/vnd.in-toto+json`
 * annotated with its `in-toto.io/predicate-type`.
 *
 * Two forms, chosen by the output's `oci-artifact=`: the OCI artifact (the default, as BuildKit
 * makes since it moved to it: `artifactType`, a `subject` naming the image manifest, the empty
 * config), and the legacy form (an image config of platform unknown/unknown, no subject), for
 * registries that refuse a subject.
 *
 * A filesystem output (`type=local`, `type=tar`) gets each statement as a file at its root
 * (`provenance.json`), about the output's regular files, each with its sha256, as BuildKit's
 * local exporter names them.
 */
import { createHash } from "node:crypto";
import type { Attestation, InTotoSubject } from "../attest/attestation.js";
import { IN_TOTO_MEDIA_TYPE } from "../attest/attestation.js";
import { imagePurl } from "../attest/provenance.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import { type Descriptor, type Manifest, MediaType } from "../oci/spec.js";
import type { ContentStore } from "../oci/store/content.js";
import type { FsEntry } from "./filesystem.js";

export const ATTESTATION_MANIFEST_ARTIFACT_TYPE = "application/vnd.docker.attestation.manifest.v1+json";
export const ANNOTATION_REFERENCE_TYPE = "vnd.docker.reference.type";
export const ANNOTATION_REFERENCE_DIGEST = "vnd.docker.reference.digest";
export const ANNOTATION_PREDICATE_TYPE = "in-toto.io/predicate-type";
/** The OCI empty descriptor: the config of an artifact, `{}`. */
export const EMPTY_CONFIG: Descriptor = {
  mediaType: MediaType.ociEmpty,
  digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  size: 2,
  data: "e30=",
};

/** Whether an index entry is an attestation manifest (not an image to run). */
export function isAttestationManifest(descriptor: Descriptor): boolean {
  return descriptor.annotations?.[ANNOTATION_REFERENCE_TYPE] === "attestation-manifest";
}

/** The in-toto subjects of a platform's image: one per name (`pkg:docker/NAME@TAG?platform=`), or `_`. */
export function imageSubjects(names: readonly string[], platform: Platform, digest: string): InTotoSubject[] {
  const sha256 = digest.replace(/^sha256:/, "");
  if (names.length === 0) return [{ name: "_", digest: { sha256 } }];
  return names.map((name) => ({ name: imagePurl(name, formatPlatform(platform)), digest: { sha256 } }));
}

/**
 * Writes the attestation manifest of `image` (its statements, their layers, its config) to the
 * content store; gives its index entry and every blob it wrote (for a layout or an archive).
 */
export async function writeAttestationManifest(
  content: ContentStore,
  image: { descriptor: Descriptor; platform: Platform; attestations: readonly Attestation[] },
  names: readonly string[],
  ociArtifact: boolean,
): Promise<{ entry: Descriptor; blobs: Descriptor[] }> {
  const subject = imageSubjects(names, image.platform, image.descriptor.digest);
  const layers: Descriptor[] = [];
  for (const attestation of image.attestations) {
    const statement = await attestation.statement(subject);
    const written = await content.writeBytes(Buffer.from(JSON.stringify(statement)));
    layers.push({
      mediaType: IN_TOTO_MEDIA_TYPE,
      ...written,
      annotations: { [ANNOTATION_PREDICATE_TYPE]: attestation.predicateType },
    });
  }
  let config: Descriptor;
  if (ociArtifact) {
    await content.writeBytes(Buffer.from("{}"));
    config = EMPTY_CONFIG;
  } else {
    const legacy = {
      architecture: "unknown",
      os: "unknown",
      config: {},
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
    };
    const written = await content.writeBytes(Buffer.from(JSON.stringify(legacy)));
    config = { mediaType: MediaType.ociConfig, ...written };
  }
  const { mediaType, digest, size } = image.descriptor;
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    ...(ociArtifact ? { artifactType: ATTESTATION_MANIFEST_ARTIFACT_TYPE } : {}),
    config,
    layers,
    ...(ociArtifact ? { subject: { mediaType, digest, size } } : {}),
  };
  const written = await content.writeBytes(Buffer.from(JSON.stringify(manifest)));
  const entry: Descriptor = {
    mediaType: MediaType.ociManifest,
    ...written,
    ...(ociArtifact ? { artifactType: ATTESTATION_MANIFEST_ARTIFACT_TYPE } : {}),
    annotations: {
      [ANNOTATION_REFERENCE_DIGEST]: digest,
      [ANNOTATION_REFERENCE_TYPE]: "attestation-manifest",
    },
    platform: { architecture: "unknown", os: "unknown" },
  };
  const { data: _data, ...configBlob } = config;
  return { entry, blobs: [...layers, configBlob, { mediaType: MediaType.ociManifest, ...written }] };
}

/**
 * The entries of a filesystem output with its attestations' files at the end, at its root: each
 * statement is about the output's regular files, hashed as they flow by (BuildKit's subjects of a
 * local export). An entry of the image under the same name as an attestation file (and all below
 * it, when it is a directory) is left out, with a warning: the output's file is the attestation.
 */
export async function* withAttestationFiles(
  entries: AsyncIterable<FsEntry>,
  attestations: readonly Attestation[],
  warn: (message: string) => void,
): AsyncGenerator<FsEntry> {
  if (attestations.length === 0) {
    yield* entries;
    return;
  }
  const files = new Set(attestations.map((a) => a.file));
  const subjects: InTotoSubject[] = [];
  for await (const entry of entries) {
    const top = entry.path.split("/")[0]!;
    if (files.has(top)) {
      if (top === entry.path) warn(`the image's /${top} is replaced by the build's attestation of that name`);
      for await (const _ of entry.body ?? []);
      continue;
    }
    if (entry.type !== "File" || entry.body === undefined) {
      yield entry;
      continue;
    }
    const hash = createHash("sha256");
    const body = entry.body;
    async function* hashed(): AsyncGenerator<Buffer> {
      for await (const chunk of body) {
        hash.update(chunk);
        yield chunk;
      }
      subjects.push({ name: entry.path, digest: { sha256: hash.digest("hex") } });
    }
    yield { ...entry, body: hashed() };
  }
  for (const attestation of attestations) {
    const statement = await attestation.statement(subjects);
    const bytes = Buffer.from(`${JSON.stringify(statement, null, 2)}\n`);
    yield {
      path: attestation.file,
      type: "File",
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: bytes.length,
      mtime: new Date(0),
      xattrs: new Map(),
      body: (async function* () {
        yield bytes;
      })(),
    };
  }
}
