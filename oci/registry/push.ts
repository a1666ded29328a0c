/**
 * `tbuild push`: send a stored image to a registry. Each blob is skipped when the repository has
 * it (HEAD), mounted from another repository of the same registry when tbuild saw it there, or
 * uploaded (one PUT for small blobs, PATCH chunks for large ones). The manifest goes last, byte
 * for byte as stored, so the pushed digest is the stored digest.
 */
import { createReadStream } from "node:fs";
import PQueue from "p-queue";
import { TbuildError } from "../../errors/index.js";
import { formatReference, type ImageReference, parseReference } from "../reference.js";
import { type Descriptor, type Index, isIndexMediaType, type Manifest } from "../spec.js";
import { ImageNotFoundError, type Store } from "../store/index.js";
import { BlobSources } from "./blob-sources.js";
import type { RegistryClient } from "./client.js";
import { RegistryNetworkError, RegistryNotSupportedError, RegistryResponseError } from "./errors.js";
import { registryEndpoint } from "./hosts.js";
import { backoffDelay, defaultRetryPolicy, isRetryableStatus, wait } from "./retry.js";
import { type RegistryOptions, RegistrySession } from "./session.js";

export interface PushOptions extends RegistryOptions {
  /** Blobs sent at once. */
  concurrency?: number;
  /** Blobs up to this size go in one PUT; larger ones in PATCH chunks. */
  monolithicLimit?: number;
  /** The size of each PATCH of a chunked upload. */
  chunkSize?: number;
}

export interface PushResult {
  name: string;
  /** The manifest (or index) pushed: the stored one, unchanged. */
  descriptor: Descriptor;
  uploaded: number;
  mounted: number;
  present: number;
}

const DEFAULT_MONOLITHIC_LIMIT = 64 * 1024 * 1024;
const DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024;
const DEFAULT_CONCURRENCY = 4;

type BlobOutcome = "uploaded" | "mounted" | "present";

export async function pushImage(
  store: Store,
  reference: ImageReference | string,
  options: PushOptions = {},
): Promise<PushResult> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const name = formatReference(ref);
  const record = await store.images.get(name);
  if (!record) throw new ImageNotFoundError(name);
  return pushDescriptor(store, ref, record.descriptor, options);
}

/**
 * Pushes a manifest or an index of the store's content, named in the store or not, to the
 * repository of `reference`: under its tag, or with `byDigest` under its digest alone (BuildKit's
 * push-by-digest: a remote worker pushes one platform's image so, and the client pushes the index
 * of them by tag). An index's manifests must be in the store; their blobs need be there only when
 * the repository lacks them.
 */
export async function pushDescriptor(
  store: Store,
  reference: ImageReference | string,
  descriptor: Descriptor,
  options: PushOptions & { byDigest?: boolean } = {},
): Promise<PushResult> {
  const ref = typeof reference === "string" ? parseReference(reference) : reference;
  const name = formatReference(ref);
  const endpoint = registryEndpoint(ref.domain, options.hosts);
  const session = new RegistrySession([endpoint], options);
  const client = session.clients[0]!;
  const sources = new BlobSources(store.root);
  const counts = { uploaded: 0, mounted: 0, present: 0 };
  const pusher = new ImagePusher(store, client, ref.path, sources, options, counts);
  try {
    if (isIndexMediaType(descriptor.mediaType)) {
      const index = await store.content.readJson<Index>(descriptor.digest);
      for (const child of index.manifests) {
        if (!(await store.content.has(child.digest))) {
          throw new RegistryNotSupportedError(
            client.name,
            `pushing an index whose manifest ${child.digest} is not in the local store`,
          );
        }
        await pusher.pushManifest(child, child.digest);
      }
    }
    const tag = options.byDigest === true ? descriptor.digest : (ref.tag ?? ref.digest!);
    await pusher.pushManifest(descriptor, tag);
    return { name, descriptor, ...counts };
  } finally {
    session.close();
  }
}

class ImagePusher {
  private readonly queue: PQueue;
  private readonly registry: string;
  private readonly store: Store;
  private readonly client: RegistryClient;
  private readonly repository: string;
  private readonly sources: BlobSources;
  private readonly options: PushOptions;
  private readonly counts: Record<BlobOutcome, number>;

  constructor(
    store: Store,
    client: RegistryClient,
    repository: string,
    sources: BlobSources,
    options: PushOptions,
    counts: Record<BlobOutcome, number>,
  ) {
    this.store = store;
    this.client = client;
    this.repository = repository;
    this.sources = sources;
    this.options = options;
    this.counts = counts;
    this.queue = new PQueue({ concurrency: options.concurrency ?? DEFAULT_CONCURRENCY });
    this.registry = client.endpoint.registry;
  }

  /** Pushes a manifest's blobs, then the manifest's stored bytes under `reference`. */
  async pushManifest(descriptor: Descriptor, reference: string): Promise<void> {
    const bytes = await this.store.content.readBytes(descriptor.digest);
    if (!isIndexMediaType(descriptor.mediaType)) {
      const manifest = JSON.parse(bytes.toString("utf8")) as Manifest;
      const blobs = [manifest.config, ...manifest.layers];
      const seen = new Set<string>();
      const unique = blobs.filter((b) => !seen.has(b.digest) && seen.add(b.digest));
      const outcomes = await Promise.all(unique.map((blob) => this.queue.add(() => this.pushBlob(blob))));
      for (const outcome of outcomes) this.counts[outcome]++;
      await this.sources.record(
        this.registry,
        this.repository,
        unique.map((b) => b.digest),
      );
    }
    await this.client.putManifest(this.repository, reference, bytes, descriptor.mediaType);
  }

  private async pushBlob(blob: Descriptor): Promise<BlobOutcome> {
    if (
      await this.client.hasBlob(this.repository, blob.digest, [`repository:${this.repository}:pull,push`])
    ) {
      return "present";
    }
    const elsewhere = await this.sources.repositoriesHolding(blob.digest, this.registry);
    for (const from of elsewhere) {
      if (from === this.repository) continue;
      if (await this.client.mountBlob(this.repository, blob.digest, from)) return "mounted";
      await this.sources.forget(this.registry, from, blob.digest);
    }
    const size = await this.store.content.size(blob.digest);
    if (size === undefined) {
      throw new TbuildError(
        "E_BLOB_MISSING",
        `blob ${blob.digest} of the image is missing from the local store`,
      );
    }
    await this.upload(blob.digest, size);
    return "uploaded";
  }

  /** An upload that fails in flight is started over, with a new session, a few times. */
  private async upload(digest: string, size: number): Promise<void> {
    const policy = this.options.retry ?? defaultRetryPolicy;
    const file = this.store.content.blobPath(digest);
    const limit = this.options.monolithicLimit ?? DEFAULT_MONOLITHIC_LIMIT;
    const chunkSize = this.options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    for (let attempt = 0; ; attempt++) {
      try {
        const location = await this.client.startUpload(this.repository);
        if (size <= limit) {
          await this.client.uploadMonolithic(this.repository, location, digest, size, () =>
            createReadStream(file),
          );
        } else {
          await this.client.uploadChunked(
            this.repository,
            location,
            digest,
            size,
            chunkSize,
            (offset, length) => createReadStream(file, { start: offset, end: offset + length - 1 }),
          );
        }
        return;
      } catch (err) {
        const transient =
          err instanceof RegistryNetworkError ||
          (err instanceof RegistryResponseError && isRetryableStatus(err.status));
        if (!transient || attempt + 1 >= policy.attempts) throw err;
        await wait(backoffDelay(policy, attempt), this.options.signal);
      }
    }
  }
}
