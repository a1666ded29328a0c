/**
 * `tbuild pull`: resolve a reference on a registry (its mirrors first), pick the platform from an
 * index, stream every missing blob through the content store's verification (layers in parallel,
 * bounded), store the manifest bytes exactly as served, and only then name the image. A failure
 * anywhere leaves no name behind, and no blob that did not verify.
 */
import { once } from "node:events";
import { PassThrough } from "node:stream";
import PQueue from "p-queue";
import {
  InvalidImageError,
  MAX_CONFIG_BYTES,
  parseImageConfig,
  parseIndex,
  parseManifest,
} from "../image.js";
import { LayerContentError, verifyLayer } from "../layer.js";
import { formatPlatform, type Platform, selectPlatform } from "../platform.js";
import { formatReference, type ImageReference, parseReference } from "../reference.js";
import { type Descriptor, isIndexMediaType, isManifestMediaType, MediaType } from "../spec.js";
import { DigestMismatchError } from "../store/content.js";
import { ANNOTATION_PULLED_INDEX, type Store } from "../store/index.js";
import { BlobSources } from "./blob-sources.js";
import { BlobRestartError, type FetchedManifest, type RegistryClient } from "./client.js";
import {
  DockerHubUnreachableError,
  isUnreachable,
  RegistryError,
  RegistryNotSupportedError,
} from "./errors.js";
import { DOCKER_HUB, pullEndpoints } from "./hosts.js";
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
    ).catch((err: unknown) => {
      // The first contact with Docker Hub failed for want of a route: say how to use a mirror.
      if (ref.domain === DOCKER_HUB && isUnreachable(err)) {
        throw new DockerHubUnreachableError(
          err,
          options.hosts?.[DOCKER_HUB]?.mirrors ?? [],
          options.configPath,
        );
      }
      throw err;
    });
    let chosen = top.index;
    let manifest = top.value;
    let indexDescriptor: Descriptor | undefined;
    let platform: Platform | undefined;
    // Every answer is checked before anything trusts it: a bad one is an error naming the image.
    const invalid = (reason: string, cause?: unknown) =>
      new RegistryError(
        "E_INVALID_IMAGE",
        clients[chosen]!.name,
        `cannot pull ${name}: registry ${clients[chosen]!.name} sent ${reason}; nothing was stored`,
        cause === undefined ? {} : { cause },
      );
    const checked = <T>(parse: () => T): T => {
      try {
        return parse();
      } catch (err) {
        if (err instanceof InvalidImageError) throw invalid(`an invalid image: ${err.reason}`, err);
        throw err;
      }
    };
    const kind = manifestKind(manifest, clients[chosen]!.name, name);
    if (kind === "index") {
      const index = checked(() => parseIndex(manifest.bytes, name));
      const isImage = (d: Descriptor) => isManifestMediaType(d.mediaType) || d.mediaType === undefined;
      const entry = selectPlatform(options.platform, index.manifests, (d) =>
        isImage(d) ? d.platform : undefined,
      );
      if (!entry) {
        // An index of indexes: a platform it offers, but only one level further down.
        const nested = selectPlatform(options.platform, index.manifests, (d) =>
          isIndexMediaType(d.mediaType) ? d.platform : undefined,
        );
        if (nested) {
          throw new RegistryNotSupportedError(
            clients[chosen]!.name,
            `${name}: its index lists another index (${nested.digest}) for platform ${formatPlatform(options.platform)}; an index inside an index`,
          );
        }
        const offered = index.manifests
          .filter(isImage)
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
      if (manifestKind(manifest, clients[chosen]!.name, name) !== "manifest") {
        throw new RegistryNotSupportedError(
          clients[chosen]!.name,
          `${name}: its index's entry ${entry.digest} for ${formatPlatform(options.platform)} is another index; an index inside an index`,
        );
      }
    }

    const parsed = checked(() => parseManifest(manifest.bytes, name));
    if (parsed.config.size > MAX_CONFIG_BYTES) {
      throw invalid(`a manifest whose config is ${parsed.config.size} bytes, more than a config can be`);
    }
    const queue = new PQueue({ concurrency: options.concurrency ?? DEFAULT_CONCURRENCY });
    let fetched = 0;
    let present = 0;
    let bytesFetched = 0;
    const fetch = async (blob: Descriptor, check?: (bytes: AsyncIterable<Uint8Array>) => Promise<void>) => {
      if (await store.content.has(blob.digest)) {
        present++;
        return;
      }
      await firstThatWorks(
        clients,
        chosen,
        (client) => fetchBlob(store, client, ref.path, blob, controller.signal, check),
        options.warn,
      );
      fetched++;
      bytesFetched += blob.size;
    };
    // The config first: its diff_ids are what each layer is checked against as it arrives.
    await fetch(parsed.config);
    const rawConfig = await store.content.readBytes(parsed.config.digest);
    const config = checked(() => parseImageConfig(rawConfig, name, parsed.layers.length));
    const diffIds = new Map<string, string>();
    for (const [i, layer] of parsed.layers.entries()) {
      const known = diffIds.get(layer.digest);
      if (known !== undefined && known !== config.rootfs.diff_ids[i]) {
        throw invalid(`an invalid image: its layer ${layer.digest} is listed twice with different diff_ids`);
      }
      diffIds.set(layer.digest, config.rootfs.diff_ids[i]!);
    }
    const layers = uniqueBlobs(parsed.layers);
    const tasks = layers.map((layer) =>
      queue.add(() =>
        fetch(layer, async (bytes) => {
          try {
            await verifyLayer(
              bytes,
              { mediaType: layer.mediaType, diffId: diffIds.get(layer.digest)! },
              `layer ${layer.digest}`,
            );
          } catch (err) {
            if (err instanceof LayerContentError)
              throw invalid(`layer ${layer.digest}, which ${err.reason}`, err);
            throw err;
          }
        }),
      ),
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
    // Named as the platform's image; which index it came from is noted, for another platform's
    // image of the same name (a build of several platforms: build/resolver.ts).
    await store.images.put(
      name,
      indexDescriptor
        ? { ...descriptor, annotations: { [ANNOTATION_PULLED_INDEX]: indexDescriptor.digest } }
        : descriptor,
    );
    const registry = clients[0]!.endpoint.registry;
    await new BlobSources(store.root).record(
      registry,
      ref.path,
      [parsed.config, ...layers].map((b) => b.digest),
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
  check?: (bytes: AsyncIterable<Uint8Array>) => Promise<void>,
): Promise<void> {
  for (let restart = 0; ; restart++) {
    const chunks = client.blobChunks(repository, blob.digest);
    const checking = check ? checkedAsItFlows(chunks, check) : undefined;
    try {
      await store.content.write(checking?.chunks ?? chunks, { digest: blob.digest, size: blob.size }, signal);
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
    // The bytes are the ones the manifest names, yet they may not be the layer its config says.
    await checking?.checked;
    return;
  }
}

/**
 * `source` passed on unchanged, while `check` reads the same bytes beside it (at the pace of the
 * slower of the two: nothing piles up). A failed check fails the stream, so the content store
 * drops the blob it was writing.
 */
function checkedAsItFlows(
  source: AsyncIterable<Uint8Array>,
  check: (bytes: AsyncIterable<Uint8Array>) => Promise<void>,
): { chunks: AsyncGenerator<Uint8Array>; checked: Promise<void> } {
  const bridge = new PassThrough({ highWaterMark: 1024 * 1024 });
  bridge.on("error", () => {});
  const checked = check(bridge);
  // Once the check is over (failed, most likely), the blob still arrives whole: a digest
  // mismatch, found at its end, is the truer error, and only a blob that matched its digest is
  // reported as a bad layer.
  let checking = true;
  const over = checked.then(
    () => {
      checking = false;
    },
    () => {
      checking = false;
    },
  );
  async function* chunks(): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of source) {
        if (checking && !bridge.write(chunk)) await Promise.race([once(bridge, "drain"), over]);
        yield chunk;
      }
      if (checking) bridge.end();
    } finally {
      if (!bridge.writableEnded) bridge.destroy();
    }
  }
  return { chunks: chunks(), checked };
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
function manifestKind(manifest: FetchedManifest, registry: string, name: string): "index" | "manifest" {
  if (isIndexMediaType(manifest.mediaType)) return "index";
  if (isManifestMediaType(manifest.mediaType)) return "manifest";
  let parsed: { schemaVersion?: number; manifests?: unknown; config?: unknown; layers?: unknown };
  try {
    parsed = JSON.parse(manifest.bytes.toString("utf8")) as typeof parsed;
  } catch {
    return "manifest"; // whose own check says what is wrong with it
  }
  if (typeof parsed !== "object" || parsed === null) return "manifest";
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
  throw new RegistryNotSupportedError(
    registry,
    `${name}: manifest media type ${JSON.stringify(manifest.mediaType)}`,
  );
}
