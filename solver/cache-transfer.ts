/**
 * Moving build cache between stores: export a CacheDescription with its layer blobs to a registry
 * (a manifest pushed under a tag) or to a directory (an OCI image layout, readable by
 * `skopeo inspect oci:DIR`), and import descriptions from either, or from an image carrying inline
 * cache. An import reads only the small descriptions; a layer is fetched into the content store
 * when the solver needs that step's result, and never otherwise. A registry ref is shared by
 * several writers, each under a tag of its own and merged at the ref (see cache-writers.ts).
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
  type RegistryClient,
  RegistryError,
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
  type CachedMount,
  describedLayers,
  describedMountBlobs,
  type ExportedRecord,
  encodeCacheDescription,
  INLINE_CACHE_FIELD,
  parseCacheDescription,
} from "./cache-description.js";
import {
  checkCacheRef,
  isWriterTagOf,
  MAX_CACHE_WRITERS,
  mergeCacheDescriptions,
  writersAnnotations,
  writersIn,
  writerTag,
} from "./cache-writers.js";
import type { FsResult } from "./worker.js";

/** Told, for each cache mount an export carries, whether its blob was sent or the destination had it. */
export type MountExportReport = (mount: CachedMount, sent: boolean) => void;

/** Where imported records' blobs come from. */
export interface CacheSource {
  description: CacheDescription;
  /** Streams one blob; `name` says where, for messages. */
  blob(descriptor: Descriptor): AsyncIterable<Uint8Array> | NodeJS.ReadableStream;
  name: string;
}

/** The cache manifest for a description: its config blob's bytes and the manifest itself. */
function cacheManifest(
  description: CacheDescription,
  annotations?: Record<string, string>,
): { config: Buffer; manifest: Manifest } {
  const config = Buffer.from(JSON.stringify(encodeCacheDescription(description)));
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: {
      mediaType: CACHE_CONFIG_MEDIA_TYPE,
      digest: sha256(config),
      size: config.length,
    },
    // Mount blobs are listed too, so that registries keep them (they are never layers: see describedLayers).
    layers: manifestBlobs(description),
    ...(annotations ? { annotations } : {}),
  };
  return { config, manifest };
}

/** A cache manifest's blobs: the layers, then the cache mounts' blobs, each digest once. */
function manifestBlobs(description: CacheDescription): Descriptor[] {
  const blobs = new Map<string, Descriptor>();
  for (const layer of describedLayers(description)) blobs.set(layer.descriptor.digest, layer.descriptor);
  for (const blob of describedMountBlobs(description))
    if (!blobs.has(blob.digest)) blobs.set(blob.digest, blob);
  return [...blobs.values()];
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** How many times a writer re-reads and rewrites the index that concurrent writers keep replacing. */
const MAX_INDEX_ATTEMPTS = 5;
/** A cache description read from a registry is at most this large (its config blob). */
const MAX_DESCRIPTION_BYTES = 256 * 1024 * 1024;

/**
 * Pushes the description under this writer's own tag of `reference` (its layers the registry
 * lacks, its config, its manifest), then merges it into the cache at `reference` with the other
 * writers' (see cache-writers.ts). The writer's own cache is the export; a merge that cannot be
 * written is a warning, as importers find the writer's tag through the tag list.
 */
export async function exportCacheToRegistry(
  content: ContentStore,
  description: CacheDescription,
  reference: string,
  writer: string,
  options: RegistryOptions,
  onMount?: MountExportReport,
): Promise<Descriptor> {
  const ref = parseReference(reference);
  const name = formatReference(ref);
  checkCacheRef(reference, `type=registry,ref=${reference}`);
  const tag = ref.tag ?? "latest";
  const own = writerTag(tag, writer);
  const session = new RegistrySession([registryEndpoint(ref.domain, options.hosts)], options);
  const client = session.clients[0]!;
  try {
    const { config, manifest } = cacheManifest(description);
    const mounts = new Map((description.mounts ?? []).map((mount) => [mount.blob.digest, mount]));
    for (const blob of manifest.layers) {
      const sent = await uploadBlob(client, ref.path, blob.digest, blob.size, () =>
        createReadStream(content.blobPath(blob.digest)),
      );
      const mount = mounts.get(blob.digest);
      if (mount) onMount?.(mount, sent);
    }
    const pushed = await putCacheManifest(client, ref.path, own, config, manifest);
    await mergeIntoRef(client, ref.path, tag, { tag: own, digest: pushed.digest, description }, (message) =>
      options.warn?.(`--cache-to ${name}: ${message}`),
    );
    return pushed;
  } finally {
    session.close();
  }
}

async function uploadBlob(
  client: RegistryClient,
  repository: string,
  digest: string,
  size: number,
  body: () => NodeJS.ReadableStream,
): Promise<boolean> {
  if (await client.hasBlob(repository, digest, [`repository:${repository}:pull,push`])) return false;
  const location = await client.startUpload(repository);
  await client.uploadMonolithic(repository, location, digest, size, body);
  return true;
}

/** Uploads a cache manifest's config and puts the manifest under `reference`; its descriptor. */
async function putCacheManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  config: Buffer,
  manifest: Manifest,
): Promise<Descriptor> {
  await uploadBlob(client, repository, manifest.config.digest, config.length, () => Readable.from([config]));
  const bytes = Buffer.from(JSON.stringify(manifest));
  await client.putManifest(repository, reference, bytes, MediaType.ociManifest);
  return { mediaType: MediaType.ociManifest, digest: sha256(bytes), size: bytes.length };
}

/**
 * Replaces the cache at `repository:tag` with the merge of this writer's cache and every other
 * writer's (those its index names and those the tag list shows), then reads the index again:
 * when a concurrent writer replaced it with an index that lacks this writer, starts over.
 */
async function mergeIntoRef(
  client: RegistryClient,
  repository: string,
  tag: string,
  own: { tag: string; digest: string; description: CacheDescription },
  warn: (message: string) => void,
): Promise<void> {
  for (let attempt = 0; attempt < MAX_INDEX_ATTEMPTS; attempt++) {
    const index = await readCacheIndex(client, repository, tag);
    const others = (await writerTags(client, repository, tag, index?.writers, warn)).filter(
      (t) => t !== own.tag,
    );
    const writers = new Map([[own.tag, own.digest]]);
    const descriptions = [own.description];
    for (const other of others.slice(0, MAX_CACHE_WRITERS - 1)) {
      try {
        const fetched = await client.getManifest(repository, other);
        descriptions.push(await writerDescription(client, repository, fetched.bytes));
        writers.set(other, fetched.digest);
      } catch (err) {
        if (isAbort(err)) throw err;
        warn(`the cache of writer ${other} is left out of the merge (${(err as Error).message})`);
      }
    }
    const { config, manifest } = cacheManifest(
      mergeCacheDescriptions(descriptions),
      writersAnnotations(writers),
    );
    let written: Descriptor;
    try {
      written = await putCacheManifest(client, repository, tag, config, manifest);
    } catch (err) {
      if (isAbort(err)) throw err;
      warn(
        `the merged cache was not written (${(err as Error).message}); this writer's cache is at tag ${own.tag}, where importers find it`,
      );
      return;
    }
    const after = await readCacheIndex(client, repository, tag);
    if (after?.digest === written.digest || after?.writers.get(own.tag) === own.digest) return;
  }
  warn(
    `other writers kept replacing the merged cache; this writer's cache is at tag ${own.tag}, where importers find it`,
  );
}

/** The manifest digest and writers index at `repository:tag`; undefined when nothing is there. */
async function readCacheIndex(
  client: RegistryClient,
  repository: string,
  tag: string,
): Promise<{ digest: string; writers: Map<string, string> } | undefined> {
  try {
    const fetched = await client.getManifest(repository, tag);
    // Whatever else is there (an image, bytes that are no manifest) names no writers: it is replaced.
    const parsed = parseJson(fetched.bytes) as Partial<Manifest> | null | undefined;
    const isCache = parsed?.config?.mediaType === CACHE_CONFIG_MEDIA_TYPE;
    return { digest: fetched.digest, writers: isCache ? writersIn(parsed?.annotations, tag) : new Map() };
  } catch (err) {
    if (err instanceof RegistryImageNotFoundError) return undefined;
    throw err;
  }
}

/**
 * The writers' tags of `repository:tag`: those the index names, then those only the tag list
 * shows (an index that lost a race). A tag list the registry refuses leaves the index's.
 */
async function writerTags(
  client: RegistryClient,
  repository: string,
  tag: string,
  indexed: Map<string, string> | undefined,
  warn: (message: string) => void,
): Promise<string[]> {
  let listed: string[] = [];
  try {
    listed = (await client.listTags(repository)).filter((candidate) => isWriterTagOf(tag, candidate)).sort();
  } catch (err) {
    if (isAbort(err)) throw err;
    warn(
      `cannot list the tags of ${repository} (${(err as Error).message}); only the writers its index names are merged`,
    );
  }
  return [...new Set([...(indexed?.keys() ?? []), ...listed])];
}

/** The description of a writer's own tag: a tbuild cache manifest, or an error saying what it is instead. */
async function writerDescription(
  client: RegistryClient,
  repository: string,
  manifestBytes: Buffer,
): Promise<CacheDescription> {
  let parsed: Partial<Manifest> | null;
  try {
    parsed = JSON.parse(manifestBytes.toString("utf8")) as Partial<Manifest> | null;
  } catch {
    throw new Error("its manifest is not JSON");
  }
  if (parsed?.config?.mediaType !== CACHE_CONFIG_MEDIA_TYPE)
    throw new Error("it is not a tbuild cache manifest");
  return parseCacheDescription(await readConfigBlob(client, repository, parsed.config));
}

/** A manifest's config blob as JSON: bounded, and checked against its digest. */
async function readConfigBlob(
  client: RegistryClient,
  repository: string,
  config: Descriptor,
): Promise<unknown> {
  const algorithm = /^(sha256|sha512):[0-9a-f]+$/.exec(String(config?.digest))?.[1];
  if (algorithm === undefined)
    throw new Error(`its config digest ${JSON.stringify(config?.digest)} is not valid`);
  if (!(Number.isSafeInteger(config.size) && config.size >= 0 && config.size <= MAX_DESCRIPTION_BYTES)) {
    throw new Error(
      `its config is ${config.size} bytes, more than the ${MAX_DESCRIPTION_BYTES} tbuild reads`,
    );
  }
  const hash = createHash(algorithm);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of client.blobChunks(repository, config.digest)) {
    size += chunk.length;
    if (size > config.size) throw new Error(`its config blob is larger than its manifest says`);
    hash.update(chunk);
    chunks.push(Buffer.from(chunk));
  }
  if (`${algorithm}:${hash.digest("hex")}` !== config.digest)
    throw new Error("its config blob does not match its digest");
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new Error("its config blob is not JSON");
  }
}

/** JSON from a registry, or undefined when it is not JSON. */
function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
}

const isAbort = (err: unknown) => (err as Error | undefined)?.name === "AbortError";

/** Writes (or adds to) an OCI image layout in `dir`: blobs, then index.json naming the manifest `tag`. */
export async function exportCacheToDir(
  content: ContentStore,
  description: CacheDescription,
  dir: string,
  tag = "latest",
  onMount?: MountExportReport,
): Promise<Descriptor> {
  const blobs = manifestBlobs(description);
  const lacking = new Set(
    await cacheDirLacks(
      dir,
      blobs.map((blob) => blob.digest),
    ),
  );
  for (const blob of blobs) {
    if (lacking.has(blob.digest)) await placeCacheBlob(dir, blob, content.open(blob.digest));
  }
  for (const mount of description.mounts ?? []) onMount?.(mount, lacking.has(mount.blob.digest));
  return writeCacheDirIndex(dir, description, tag);
}

/** The blob file of `digest` in the layout at `dir`; a digest that is no sha256 digest is refused. */
function cacheDirBlob(dir: string, digest: string): string {
  if (!DIGEST.test(digest)) {
    throw new TbuildError("E_CACHE_EXPORT", `a cache blob's digest ${JSON.stringify(digest)} is not valid`);
  }
  return path.join(dir, "blobs", "sha256", digest.slice("sha256:".length));
}
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** The layout's blob directory, made when missing. */
async function makeCacheDir(dir: string): Promise<void> {
  await makeDirectories(path.join(dir, "blobs", "sha256")).catch((err: NodeJS.ErrnoException) => {
    throw new TbuildError(
      "E_CACHE_EXPORT",
      `--cache-to type=local,dest=${dir}: cannot make the cache's directory there (${err.code ?? err.message}); name a directory you can write`,
      { cause: err },
    );
  });
}

const exists = (file: string) =>
  stat(file).then(
    () => true,
    () => false,
  );

/** Which of `digests` the layout at `dir` lacks (all of them where there is no layout yet). */
export async function cacheDirLacks(dir: string, digests: readonly string[]): Promise<string[]> {
  const lacking: string[] = [];
  for (const digest of new Set(digests)) if (!(await exists(cacheDirBlob(dir, digest)))) lacking.push(digest);
  return lacking;
}

/**
 * Writes one blob into the layout at `dir`, renamed into place whole (a killed export never
 * leaves a short blob under its digest); with `verify`, only when its bytes match the descriptor's
 * digest and size (bytes from elsewhere: a remote worker). A blob already there is kept.
 */
export async function placeCacheBlob(
  dir: string,
  descriptor: Descriptor,
  source: AsyncIterable<Uint8Array> | NodeJS.ReadableStream,
  { verify = false, signal }: { verify?: boolean; signal?: AbortSignal } = {},
): Promise<void> {
  const file = cacheDirBlob(dir, descriptor.digest);
  await makeCacheDir(dir);
  if (await exists(file)) {
    // Read to its end all the same: it may be a part of a longer stream.
    for await (const _ of source as AsyncIterable<Uint8Array>);
    return;
  }
  const hash = createHash("sha256");
  let size = 0;
  async function* counted(chunks: AsyncIterable<Uint8Array>) {
    for await (const chunk of chunks) {
      size += chunk.length;
      if (verify && size > descriptor.size) break;
      hash.update(chunk);
      yield chunk;
    }
  }
  await replaceFile(file, async (temp) => {
    await pipeline(
      counted(source as AsyncIterable<Uint8Array>),
      createWriteStream(temp),
      signal ? { signal } : {},
    );
    if (verify && (size !== descriptor.size || `sha256:${hash.digest("hex")}` !== descriptor.digest)) {
      throw new TbuildError(
        "E_CACHE_EXPORT",
        `the cache blob ${descriptor.digest} that came for ${dir} does not match its digest and size (${descriptor.size} bytes); nothing was written under its name`,
      );
    }
  });
}

/**
 * Writes the cache manifest of `description` into the layout at `dir`, whose layer blobs are
 * there already: its config, the manifest, `oci-layout`, and index.json naming it `tag` (beside
 * the other tags it names).
 */
export async function writeCacheDirIndex(
  dir: string,
  description: CacheDescription,
  tag = "latest",
): Promise<Descriptor> {
  const { config, manifest } = cacheManifest(description);
  await makeCacheDir(dir);
  for (const layer of manifest.layers) {
    if (!(await exists(cacheDirBlob(dir, layer.digest)))) {
      throw new TbuildError(
        "E_CACHE_EXPORT",
        `--cache-to type=local,dest=${dir}: the cache's blob ${layer.digest} did not arrive there; build again`,
      );
    }
  }
  const bytes = Buffer.from(JSON.stringify(manifest));
  const descriptor: Descriptor = {
    mediaType: MediaType.ociManifest,
    digest: sha256(bytes),
    size: bytes.length,
  };
  for (const [digest, data] of [
    [manifest.config.digest, config],
    [descriptor.digest, bytes],
  ] as const) {
    const file = cacheDirBlob(dir, digest);
    if (!(await exists(file))) await replaceFile(file, (temp) => writeFile(temp, data));
  }
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
  const descriptions: CacheDescription[] = [];
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
    descriptions.push(descriptionIn(manifest, config));
  }
  return {
    name: dir,
    description: mergeCacheDescriptions(descriptions),
    blob: (descriptor) => createReadStream(blobFile(descriptor.digest)),
  };
}

/** A cache manifest's description, or the inline cache of an image config; none otherwise. */
function descriptionIn(manifest: Manifest, config: unknown): CacheDescription {
  if (manifest.config?.mediaType === CACHE_CONFIG_MEDIA_TYPE) return parseCacheDescription(config);
  return parseCacheDescription((config as Record<string, unknown> | undefined)?.[INLINE_CACHE_FIELD]);
}

/**
 * Reads the cache at a registry reference: a cache manifest (`--cache-to type=registry`) merged
 * with the writers' own tags it does not hold yet, or an image with inline cache. A reference
 * that is not there is no cache (a first build), and a writer's tag that is missing or broken is
 * left out, each with a warning.
 */
export async function loadCacheFromRegistry(
  reference: string,
  options: RegistryOptions & { platforms?: CachePlatform[] },
): Promise<CacheSource | undefined> {
  const ref = parseReference(reference);
  const name = formatReference(ref);
  const warn = (message: string) => options.warn?.(`--cache-from ${name}: ${message}`);
  const session = new RegistrySession(pullEndpoints(ref.domain, options.hosts), options);
  const client = session.clients[session.clients.length - 1]!;
  const descriptions: CacheDescription[] = [];
  let unreadable = false;
  try {
    const at = await readRegistryCache(
      client,
      ref.path,
      ref.digest ?? ref.tag ?? "latest",
      options.platforms ?? [],
    ).catch((err: unknown) => {
      // What the registry answered is not a cache: a warning, as a writer's broken tag is.
      if (err instanceof RegistryError || isAbort(err)) throw err;
      unreadable = true;
      warn(`the cache there is left out (${(err as Error).message})`);
      return undefined;
    });
    // Writers' tags belong to a tag's cache manifest (or to a tag not written yet): not to an
    // image, nor to a digest, which names exactly one manifest.
    if (ref.digest === undefined && (at === undefined || at.isCacheManifest)) {
      const tag = ref.tag ?? "latest";
      const writers = await writerTags(client, ref.path, tag, at?.writers, warn);
      if (writers.length > MAX_CACHE_WRITERS) {
        warn(`${writers.length} writers' caches are there; importing ${MAX_CACHE_WRITERS} of them`);
      }
      for (const writer of writers.slice(0, MAX_CACHE_WRITERS)) {
        try {
          const fetched = await client.getManifest(ref.path, writer);
          // Already merged at the ref, as it is now.
          if (at?.writers.get(writer) === fetched.digest) continue;
          descriptions.push(await writerDescription(client, ref.path, fetched.bytes));
        } catch (err) {
          if (isAbort(err)) throw err;
          warn(`the cache of writer ${writer} is left out (${(err as Error).message})`);
        }
      }
    }
    if (at) descriptions.push(at.description);
  } catch (err) {
    session.close();
    throw err;
  }
  if (descriptions.length === 0) {
    session.close();
    if (!unreadable) warn("not found, importing no cache from it");
    return undefined;
  }
  // The session stays open for the blobs fetched on demand; the transport's sockets are unref'd by undici.
  return {
    name,
    description: mergeCacheDescriptions(descriptions),
    blob: (descriptor) => client.blobChunks(ref.path, descriptor.digest),
  };
}

/** A platform whose image's inline cache an import reads from an index. */
export interface CachePlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/**
 * The cache at a tag or digest (a cache manifest, or an image's inline cache), or undefined when
 * it is not there. Of an index, the images of `platforms` are read (their inline caches merged:
 * each record's key names its platform), or its first image when none is theirs.
 */
async function readRegistryCache(
  client: RegistryClient,
  repository: string,
  reference: string,
  platforms: CachePlatform[],
): Promise<
  { description: CacheDescription; writers: Map<string, string>; isCacheManifest: boolean } | undefined
> {
  try {
    const manifestOf = (bytes: Buffer) => {
      const value = parseJson(bytes) as (Manifest & Index) | null | undefined;
      if (value === null || typeof value !== "object") throw new Error("its manifest is not JSON");
      return value;
    };
    const fetched = await client.getManifest(repository, reference);
    const parsed = manifestOf(fetched.bytes);
    if (Array.isArray(parsed.manifests)) {
      // One image per platform (the first that is its), so a hostile index costs a fetch per platform at most.
      const entries = platforms.flatMap((p) => {
        const entry = parsed.manifests.find(
          (m) =>
            m.platform?.os === p.os &&
            m.platform?.architecture === p.architecture &&
            (p.variant === undefined ||
              m.platform?.variant === undefined ||
              m.platform.variant === p.variant),
        );
        return entry ? [entry] : [];
      });
      if (entries.length === 0 && parsed.manifests[0]) entries.push(parsed.manifests[0]);
      if (entries.length === 0) return undefined;
      const descriptions: CacheDescription[] = [];
      for (const digest of new Set(entries.map((entry) => entry.digest))) {
        const image = manifestOf((await client.getManifest(repository, digest)).bytes);
        descriptions.push(descriptionIn(image, await readConfigBlob(client, repository, image.config)));
      }
      return {
        description: mergeCacheDescriptions(descriptions),
        writers: new Map(),
        isCacheManifest: false,
      };
    }
    const isCacheManifest = parsed.config?.mediaType === CACHE_CONFIG_MEDIA_TYPE;
    return {
      description: descriptionIn(parsed, await readConfigBlob(client, repository, parsed.config)),
      writers: isCacheManifest ? writersIn(parsed.annotations, reference) : new Map(),
      isCacheManifest,
    };
  } catch (err) {
    if (err instanceof RegistryImageNotFoundError) return undefined;
    throw err;
  }
}

/**
 * The records of every `--cache-from`, looked up by key. `get` fetches a record's missing layers
 * into the content store (verified by digest) before answering, so a result it returns is usable
 * at once; several steps sharing a layer fetch it once. The cache mounts the sources carry
 * (`mounts=true`) are looked up by mount key, and their blobs fetched the same way.
 */
export class ImportedCache {
  private readonly records = new Map<string, { record: ExportedRecord; source: CacheSource }>();
  private readonly mounts = new Map<string, { mount: CachedMount; source: CacheSource }>();
  private readonly fetching = new Map<string, Promise<void>>();
  private readonly content: ContentStore;

  constructor(content: ContentStore, sources: CacheSource[]) {
    this.content = content;
    for (const source of sources) {
      for (const record of source.description.records) {
        if (!this.records.has(record.key)) this.records.set(record.key, { record, source });
      }
      for (const mount of source.description.mounts ?? []) {
        if (!this.mounts.has(mount.record.key)) this.mounts.set(mount.record.key, { mount, source });
      }
    }
  }

  /** The imported cache mount of `key`, and the name of the cache it came from. */
  mount(key: string): { mount: CachedMount; from: string } | undefined {
    const found = this.mounts.get(key);
    return found ? { mount: found.mount, from: found.source.name } : undefined;
  }

  /** Fetches the blob of the imported mount `key` into the content store (verified by digest and size). */
  async fetchMount(key: string, signal?: AbortSignal): Promise<Descriptor | undefined> {
    const found = this.mounts.get(key);
    if (!found) return undefined;
    await this.fetch(found.mount.blob, found.source, signal, `cache mount ${found.mount.record.id}`);
    return found.mount.blob;
  }

  get size(): number {
    return this.records.size;
  }

  /** The record of `key`, without fetching anything (for re-exporting what is already local). */
  record(key: string): ExportedRecord | undefined {
    return this.records.get(key)?.record;
  }

  async get(key: string, signal?: AbortSignal): Promise<{ result: FsResult; created?: number } | undefined> {
    const found = this.records.get(key);
    if (!found) return undefined;
    for (const layer of found.record.layers) await this.fetch(layer.descriptor, found.source, signal);
    const { created } = found.record;
    return { result: { layers: found.record.layers }, ...(created !== undefined ? { created } : {}) };
  }

  private fetch(
    descriptor: Descriptor,
    source: CacheSource,
    signal?: AbortSignal,
    what = `layer ${descriptor.digest}`,
  ): Promise<void> {
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
            `cannot fetch ${what} of the imported cache from ${source.name}: ${(err as Error).message}`,
            { cause: err },
          );
        }
      })();
      this.fetching.set(descriptor.digest, pending);
    }
    return pending;
  }
}
