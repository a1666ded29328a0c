/**
 * Reading attestations back (`tbuild inspect --provenance`): from an image index as BuildKit's
 * attestation storage lays them out, each platform's attestation manifest found by its
 * `vnd.docker.reference.digest`, its statements by their layers' `in-toto.io/predicate-type`.
 * Where the bytes come from (the store, a registry) is the caller's: `read` gives a manifest or a
 * blob (a registry serves them apart).
 */
import type { InTotoStatement } from "./attestation.js";

interface Descriptor {
  mediaType: string;
  digest: string;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
}

/** Each platform's statements whose predicate type starts with `predicatePrefix`, by `os/arch[/variant]`. */
export async function readAttestations(
  read: { manifest(digest: string): Promise<Buffer>; blob(digest: string): Promise<Buffer> },
  top: { mediaType: string; digest: string },
  predicatePrefix: string,
): Promise<Record<string, InTotoStatement[]>> {
  const parse = <T>(bytes: Buffer) => JSON.parse(bytes.toString("utf8")) as T;
  const found: Record<string, InTotoStatement[]> = {};
  if (!top.mediaType.includes("index") && !top.mediaType.includes("manifest.list")) return found;
  const index = parse<{ manifests?: Descriptor[] }>(await read.manifest(top.digest));
  const manifests = Array.isArray(index.manifests) ? index.manifests : [];
  for (const entry of manifests) {
    if (entry.annotations?.["vnd.docker.reference.type"] !== "attestation-manifest") continue;
    const subject = manifests.find((m) => m.digest === entry.annotations?.["vnd.docker.reference.digest"]);
    const p = subject?.platform;
    const platform = p ? [p.os, p.architecture, p.variant].filter(Boolean).join("/") : "unknown";
    const manifest = parse<{ layers?: Descriptor[] }>(await read.manifest(entry.digest));
    for (const layer of manifest.layers ?? []) {
      const type = layer.annotations?.["in-toto.io/predicate-type"] ?? "";
      if (!type.startsWith(predicatePrefix)) continue;
      const statements = found[platform] ?? [];
      statements.push(parse<InTotoStatement>(await read.blob(layer.digest)));
      found[platform] = statements;
    }
  }
  return found;
}
