/**
 * Moving build cache between stores: export a CacheDescription with its layer blobs to a registry
 * (a manifest pushed under a tag) or to a directory (an OCI image layout, readable by
 * `skopeo inspect oci:DIR`), and import descriptions from either, or from an image carrying inline
 * cache. An import reads only the small descriptions; a layer is fetched into the content store
 * when the solver needs that step's result, and never otherwise.
 */

import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../errors/index.js";
import { replaceFile, writeFileAtomic } from "../oci/atomic-file.js";
import { makeDirectories } from "../oci/make-directories.js";
import { formatReference, parseReference } from "../oci/reference.js";
import {
  pullEndpoints,
  RegistryImageNotFoundError,
  type RegistryOptions,
  RegistrySession,
  registryEndpoint,
} from "../oci/registry/index.js";
import { ANNOTATION_REF_NAME, type Descriptor, type Index, type Manifest, MediaType } from "../oci/spec.js";
import type { ContentStore } from "../oci/store/content.js";
import {
  CACHE_CONFIG_MEDIA_TYPE,
  type CacheDescription,
  describedLayers,
  type ExportedRecord,
  encodeCacheDescription,
  INLINE_CACHE_FIELD,
  parseCacheDescription,
} from "./cache-description.js";
import type { FsResult } from "./worker.js";

/** Where imported records' blobs come from. */
export interface CacheSource {
  description: CacheDescription;
  /** Streams one blob; `name` says where, for messages. */
  blob(descriptor: Descriptor): AsyncIterable<Uint8Array> | NodeJS.ReadableStream;
  name: string;
}

/** The cache manifest for a description: its config blob's bytes and the manifest itself. */
function cacheManifest(description: CacheDescription): { config: Buffer; manifest: Manifest } {
  const config = Buffer.from(JSON.stringify(encodeCacheDescription(description)));
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: {
      mediaType: CACHE_CONFIG_MEDIA_TYPE,
      digest: sha256(config),
      size: config.length,
    },
    layers: describedLayers(description).map((layer) => layer.descriptor),
  };
  return { config, manifest };
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Pushes the description's layers (those the registry lacks), its config, then the manifest under `ref`. */
export async function exportCacheToRegistry(
  content: ContentStore,
  description: CacheDescription,
  reference: string,
  options: RegistryOptions,
): Promise<Descriptor> {
  const ref = parseReference(reference);
  const session = new RegistrySession([registryEndpoint(ref.domain, options.hosts)], options);
  const client = session.clients[0]!;
  try {
    const { config, manifest } = cacheManifest(description);
    const upload = async (digest: string, size: number, body: () => NodeJS.ReadableStream) => {
      if (await client.hasBlob(ref.path, digest, [`repository:${ref.path}:pull,push`])) return;
      const location = await client.startUpload(ref.path);
      await client.uploadMonolithic(ref.path, location, digest, size, body);
    };
    for (const layer of manifest.layers) {
      await upload(layer.digest, layer.size, () => createReadStream(content.blobPath(layer.digest)));
    }
    await upload(manifest.config.digest, config.length, () => Readable.from([config]));
    const bytes = Buffer.from(JSON.stringify(manifest));
    await client.putManifest(ref.path, ref.tag ?? ref.digest ?? "latest", bytes, MediaType.ociManifest);
    return { mediaType: MediaType.ociManifest, digest: sha256(bytes), size: bytes.length };
  } finally {
    session.close();
  }
}

/** Writes (or adds to) an OCI image layout in `dir`: blobs, then index.json naming the manifest `tag`. */
export async function exportCacheToDir(
  content: ContentStore,
  description: CacheDescription,
  dir: string,
  tag = "latest",
): Promise<Descriptor> {
  const blobs = path.join(dir, "blobs", "sha256");
  await makeDirectories(blobs).catch((err: NodeJS.ErrnoException) => {
    throw new TbuildError(
      "E_CACHE_EXPORT",
      `--cache-to type=local,dest=${dir}: cannot make the cache's directory there (${err.code ?? err.message}); name a directory you can write`,
      { cause: err },
    );
  });
  const place = async (digest: string, write: (temp: string) => Promise<void>) => {
    const file = path.join(blobs, digest.slice("sha256:".length));
    if (
      await stat(file).then(
        () => true,
        () => false,
      )
    )
      return;
    // Renamed into place whole, so a killed export never leaves a short blob under its digest.
    await replaceFile(file, write);
  };
  const { config, manifest } = cacheManifest(description);
  for (const layer of manifest.layers) {
    await place(layer.digest, (temp) => pipeline(content.open(layer.digest), createWriteStream(temp)));
  }
  await place(manifest.config.digest, (temp) => writeFile(temp, config));
  const bytes = Buffer.from(JSON.stringify(manifest));
  const descriptor: Descriptor = {
    mediaType: MediaType.ociManifest,
    digest: sha256(bytes),
    size: bytes.length,
  };
  await place(descriptor.digest, (temp) => writeFile(temp, bytes));
  await writeFile(path.join(dir, "oci-layout"), `${JSON.stringify({ imageLayoutVersion: "1.0.0" })}\n`);
  const indexFile = path.join(dir, "index.json");
  const previous = await readFile(indexFile, "utf8").then(
    (text) => JSON.parse(text) as Index,
    () => undefined,
  );
  const others = (previous?.manifests ?? []).filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== tag);
  const index: Index = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [...others, { ...descriptor, annotations: { [ANNOTATION_REF_NAME]: tag } }],
  };
  await writeFileAtomic(indexFile, `${JSON.stringify(index, null, 2)}\n`);
  return descriptor;
}

/**
 * Reads the cache an OCI layout directory holds: every manifest index.json names, or only the one
 * `tag` (its ref name) or `digest` selects, as `--cache-from type=local,tag=…|digest=…` asks.
 */
export async function loadCacheFromDir(
  dir: string,
  select: { tag?: string; digest?: string } = {},
): Promise<CacheSource> {
  const blobFile = (digest: string) => path.join(dir, "blobs", ...digest.split(":"));
  let index: Index;
  try {
    index = JSON.parse(await readFile(path.join(dir, "index.json"), "utf8")) as Index;
  } catch (err) {
    throw new TbuildError(
      "E_CACHE_IMPORT",
      `--cache-from type=local,src=${dir}: no readable OCI layout there (${(err as Error).message})`,
      { cause: err },
    );
  }
  const records: ExportedRecord[] = [];
  const selected = (index.manifests ?? []).filter(
    (entry) =>
      (select.tag === undefined || entry.annotations?.[ANNOTATION_REF_NAME] === select.tag) &&
      (select.digest === undefined || entry.digest === select.digest),
  );
  if (selected.length === 0 && (select.tag !== undefined || select.digest !== undefined)) {
    const wanted = select.tag !== undefined ? `tag ${select.tag}` : `digest ${select.digest}`;
    throw new TbuildError(
      "E_CACHE_IMPORT",
      `--cache-from type=local,src=${dir}: the layout there has no cache of ${wanted}`,
    );
  }
  for (const entry of selected) {
    const manifest = JSON.parse(await readFile(blobFile(entry.digest), "utf8")) as Manifest;
    const config = JSON.parse(await readFile(blobFile(manifest.config.digest), "utf8")) as unknown;
    records.push(...descriptionIn(manifest, config).records);
  }
  return {
    name: dir,
    description: { records },
    blob: (descriptor) => createReadStream(blobFile(descriptor.digest)),
  };
}

/** A cache manifest's description, or the inline cache of an image config; none otherwise. */
function descriptionIn(manifest: Manifest, config: unknown): CacheDescription {
  if (manifest.config?.mediaType === CACHE_CONFIG_MEDIA_TYPE) return parseCacheDescription(config);
  return parseCacheDescription((config as Record<string, unknown> | undefined)?.[INLINE_CACHE_FIELD]);
}

/**
 * Reads the cache at a registry reference: a cache manifest (`--cache-to type=registry`) or an
 * image with inline cache. A reference that is not there is no cache (a first build), with a warning.
 */
export async function loadCacheFromRegistry(
  reference: string,
  options: RegistryOptions & { platform?: { os: string; architecture: string } },
): Promise<CacheSource | undefined> {
  const ref = parseReference(reference);
  const name = formatReference(ref);
  const session = new RegistrySession(pullEndpoints(ref.domain, options.hosts), options);
  const client = session.clients[session.clients.length - 1]!;
  let description: CacheDescription;
  try {
    let fetched = await client.getManifest(ref.path, ref.digest ?? ref.tag ?? "latest");
    let parsed = JSON.parse(fetched.bytes.toString("utf8")) as Manifest & Index;
    if (Array.isArray(parsed.manifests)) {
      const wanted = options.platform;
      const entry =
        parsed.manifests.find(
          (m) =>
            wanted !== undefined &&
            m.platform?.os === wanted.os &&
            m.platform?.architecture === wanted.architecture,
        ) ?? parsed.manifests[0];
      if (!entry) return undefined;
      fetched = await client.getManifest(ref.path, entry.digest);
      parsed = JSON.parse(fetched.bytes.toString("utf8")) as Manifest & Index;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of client.blobChunks(ref.path, parsed.config.digest))
      chunks.push(Buffer.from(chunk));
    description = descriptionIn(parsed, JSON.parse(Buffer.concat(chunks).toString("utf8")));
  } catch (err) {
    session.close();
    if (err instanceof RegistryImageNotFoundError) {
      options.warn?.(`--cache-from ${name}: not found, importing no cache from it`);
      return undefined;
    }
    throw err;
  }
  // The session stays open for the blobs fetched on demand; the transport's sockets are unref'd by undici.
  return { name, description, blob: (descriptor) => client.blobChunks(ref.path, descriptor.digest) };
}

/**
 * The records of every `--cache-from`, looked up by key. `get` fetches a record's missing layers
 * into the content store (verified by digest) before answering, so a result it returns is usable
 * at once; several steps sharing a layer fetch it once.
 */
export class ImportedCache {
  private readonly records = new Map<string, { record: ExportedRecord; source: CacheSource }>();
  private readonly fetching = new Map<string, Promise<void>>();
  private readonly content: ContentStore;

  constructor(content: ContentStore, sources: CacheSource[]) {
    this.content = content;
    for (const source of sources) {
      for (const record of source.description.records) {
        if (!this.records.has(record.key)) this.records.set(record.key, { record, source });
      }
    }
  }

  get size(): number {
    return this.records.size;
  }

  /** The record of `key`, without fetching anything (for re-exporting what is already local). */
  record(key: string): ExportedRecord | undefined {
    return this.records.get(key)?.record;
  }

  async get(key: string, signal?: AbortSignal): Promise<FsResult | undefined> {
    const found = this.records.get(key);
    if (!found) return undefined;
    for (const layer of found.record.layers) await this.fetch(layer.descriptor, found.source, signal);
    return { layers: found.record.layers };
  }

  private fetch(descriptor: Descriptor, source: CacheSource, signal?: AbortSignal): Promise<void> {
    let pending = this.fetching.get(descriptor.digest);
    if (!pending) {
      pending = (async () => {
        if (await this.content.has(descriptor.digest)) return;
        try {
          await this.content.write(
            source.blob(descriptor),
            { digest: descriptor.digest, size: descriptor.size },
            signal,
          );
        } catch (err) {
          throw new TbuildError(
            "E_CACHE_IMPORT",
            `cannot fetch layer ${descriptor.digest} of the imported cache from ${source.name}: ${(err as Error).message}`,
            { cause: err },
          );
        }
      })();
      this.fetching.set(descriptor.digest, pending);
    }
    return pending;
  }
}
