/**
 * `tbuild pull`: resolve a reference on a registry (its mirrors first), pick the platform from an
 * index, stream every missing blob through the content store's verification (layers in parallel,
 * bounded), store the manifest bytes exactly as served, and only then name the image. A failure
 * anywhere leaves no name behind, and no blob that did not verify.
 */
import PQueue from "p-queue";
import { formatPlatform, type Platform, selectPlatform } from "../platform.js";
import { formatReference, type ImageReference, parseReference } from "../reference.js";
import {
  type Descriptor,
  type ImageConfig,
  type Index,
  isIndexMediaType,
  isManifestMediaType,
  type Manifest,
  MediaType,
} from "../spec.js";
import { DigestMismatchError } from "../store/content.js";
import type { Store } from "../store/index.js";
import { BlobSources } from "./blob-sources.js";
import { BlobRestartError, type FetchedManifest, type RegistryClient } from "./client.js";
import { RegistryError, RegistryNotSupportedError } from "./errors.js";
import { pullEndpoints } from "./hosts.js";
import { firstThatWorks, type RegistryOptions, RegistrySession } from "./session.js";

export interface PullOptions extends RegistryOptions {
  /** The platform picked from an index. */
  platform: Platform;
  /** Blobs fetched at once. */
  concurrency?: number;
}

export interface PullResult {
  /** The name the image is stored under: `127.0.0.1:5000/app:1`. */
  name: string;
  /** The platform manifest, as stored in the image store. */
  descriptor: Descriptor;
  /** The index the manifest was picked from, stored too, when the reference named one. */
  index?: Descriptor;
  /** The host the manifest came from (a mirror's, or the registry's API host). */
  source: string;
  /** Blobs fetched, and blobs already in the store. */
  fetched: number;
  present: number;
  bytesFetched: number;
}

/** A blob whose download restarted (Range not honoured) more often than this fails. */
const MAX_BLOB_RESTARTS = 3;
const DEFAULT_CONCURRENCY = 4;

export async function pullImage(
  store: Store,
  reference: ImageReference | string,
  options: PullOptions,
): Promise<PullResult> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const name = formatReference(ref);
  // One failing blob stops the others: no point finishing a pull that cannot be named.
  const controller = new AbortController();
  const onAbort = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const session = new RegistrySession(pullEndpoints(ref.domain, options.hosts), options, controller.signal);
  try {
    const clients = session.clients;
    const top = await firstThatWorks(
      clients,
      0,
      (client) => client.getManifest(ref.path, ref.digest ?? ref.tag!),
      options.warn,
    );
    let chosen = top.index;
    let manifest = top.value;
    let indexDescriptor: Descriptor | undefined;
    let platform: Platform | undefined;
    const kind = manifestKind(manifest, clients[chosen]!.name);
    if (kind === "index") {
      const index = JSON.parse(manifest.bytes.toString("utf8")) as Index;
      const entry = selectPlatform(options.platform, index.manifests ?? [], (d) =>
        isManifestMediaType(d.mediaType) || d.mediaType === undefined ? d.platform : undefined,
      );
      if (!entry) {
        const offered = (index.manifests ?? [])
          .map((d) => (d.platform ? formatPlatform(d.platform) : undefined))
          .filter((p) => p !== undefined);
        throw new RegistryError(
          "E_NO_MATCHING_PLATFORM",
          clients[chosen]!.name,
          `${name} has no image for platform ${formatPlatform(options.platform)} (it has: ${offered.join(", ") || "none"}); choose one with --platform`,
        );
      }
      indexDescriptor = {
        mediaType: manifest.mediaType,
        digest: manifest.digest,
        size: manifest.bytes.length,
      };
      platform = entry.platform;
      const child = await firstThatWorks(
        clients,
        chosen,
        (client) => client.getManifest(ref.path, entry.digest),
        options.warn,
      );
      chosen = child.index;
      manifest = child.value;
      if (manifestKind(manifest, clients[chosen]!.name) !== "manifest") {
        throw new RegistryNotSupportedError(clients[chosen]!.name, "an index inside an index");
      }
    }

    const parsed = JSON.parse(manifest.bytes.toString("utf8")) as Manifest;
    const blobs = uniqueBlobs([parsed.config, ...(parsed.layers ?? [])]);
    const queue = new PQueue({ concurrency: options.concurrency ?? DEFAULT_CONCURRENCY });
    let fetched = 0;
    let present = 0;
    let bytesFetched = 0;
    const tasks = blobs.map((blob) =>
      queue.add(async () => {
        if (await store.content.has(blob.digest)) {
          present++;
          return;
        }
        await firstThatWorks(
          clients,
          chosen,
          (client) => fetchBlob(store, client, ref.path, blob, controller.signal),
          options.warn,
        );
        fetched++;
        bytesFetched += blob.size;
      }),
    );
    try {
      await Promise.all(tasks);
    } catch (err) {
      controller.abort(err);
      queue.clear();
      await Promise.allSettled(tasks);
      throw err;
    }

    if (platform === undefined) {
      const config = await store.content.readJson<ImageConfig>(parsed.config.digest);
      platform = {
        os: config.os,
        architecture: config.architecture,
        ...(config.variant ? { variant: config.variant } : {}),
      };
      if (config.os !== options.platform.os || config.architecture !== options.platform.architecture) {
        options.warn?.(
          `${name} is for ${formatPlatform(platform)}, not the requested ${formatPlatform(options.platform)}`,
        );
      }
    }
    await store.content.writeBytes(manifest.bytes, { digest: manifest.digest, size: manifest.bytes.length });
    if (indexDescriptor) {
      await store.content.writeBytes(top.value.bytes, {
        digest: indexDescriptor.digest,
        size: indexDescriptor.size,
      });
    }
    const descriptor: Descriptor = {
      mediaType: manifest.mediaType,
      digest: manifest.digest,
      size: manifest.bytes.length,
      platform,
    };
    await store.images.put(name, descriptor);
    const registry = clients[0]!.endpoint.registry;
    await new BlobSources(store.root).record(
      registry,
      ref.path,
      blobs.map((b) => b.digest),
    );
    return {
      name,
      descriptor,
      ...(indexDescriptor ? { index: indexDescriptor } : {}),
      source: clients[chosen]!.endpoint.host,
      fetched,
      present,
      bytesFetched,
    };
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    session.close();
  }
}

/** Streams one blob into the store; a registry that cannot resume makes it start over, a few times. */
async function fetchBlob(
  store: Store,
  client: RegistryClient,
  repository: string,
  blob: Descriptor,
  signal: AbortSignal,
): Promise<void> {
  for (let restart = 0; ; restart++) {
    try {
      await store.content.write(
        client.blobChunks(repository, blob.digest),
        { digest: blob.digest, size: blob.size },
        signal,
      );
      return;
    } catch (err) {
      if (err instanceof BlobRestartError && restart < MAX_BLOB_RESTARTS) continue;
      if (err instanceof DigestMismatchError) {
        const got = err.actual ? `bytes with digest ${err.actual}` : `more than ${blob.size} bytes`;
        throw new RegistryError(
          "E_DIGEST_MISMATCH",
          client.name,
          `digest mismatch: registry ${client.name} sent ${got} for blob ${blob.digest} of repository "${repository}"; nothing was stored`,
          { cause: err },
        );
      }
      if (err instanceof BlobRestartError) {
        throw new RegistryError(
          "E_NETWORK",
          client.name,
          `${err.message}, ${MAX_BLOB_RESTARTS + 1} times; giving up`,
        );
      }
      throw err;
    }
  }
}

function uniqueBlobs(descriptors: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return descriptors.filter((d) => {
    if (seen.has(d.digest)) return false;
    seen.add(d.digest);
    return true;
  });
}

/** Whether the bytes are an index or an image manifest, by media type and, failing that, by shape. */
function manifestKind(manifest: FetchedManifest, registry: string): "index" | "manifest" {
  if (isIndexMediaType(manifest.mediaType)) return "index";
  if (isManifestMediaType(manifest.mediaType)) return "manifest";
  let parsed: { schemaVersion?: number; manifests?: unknown; config?: unknown; layers?: unknown };
  try {
    parsed = JSON.parse(manifest.bytes.toString("utf8")) as typeof parsed;
  } catch {
    throw new RegistryError(
      "E_BAD_MANIFEST",
      registry,
      `registry ${registry} sent a manifest that is not JSON`,
    );
  }
  if (parsed.schemaVersion === 1) {
    throw new RegistryNotSupportedError(registry, "Docker image manifest schema 1 (a deprecated format)");
  }
  if (Array.isArray(parsed.manifests)) {
    manifest.mediaType = MediaType.ociIndex;
    return "index";
  }
  if (parsed.config !== undefined && Array.isArray(parsed.layers)) {
    manifest.mediaType = MediaType.ociManifest;
    return "manifest";
  }
  throw new RegistryNotSupportedError(registry, `manifest media type ${JSON.stringify(manifest.mediaType)}`);
}
