/**
 * `--build-context NAME=oci-layout://DIR[:TAG]` with `--worker`: DIR is a directory of the
 * client's, and the worker needs the image it names for the build's platform. Both halves are here.
 *
 * - The client reads DIR's index.json and chooses the image as a local build does (contexts.ts
 *   `chooseLayoutImage`), before anything travels, and tells the worker the image's descriptor.
 * - The worker, planning the build, walks from that descriptor to its platform's manifest (in an
 *   index, the best match among the manifests either end holds, as a local build picks among what
 *   its store holds once the layout is read) and asks the client for each blob its store lacks:
 *   the first build sends that platform's manifest, config and layers; a second one sends nothing.
 *   The image the build gets is the one a local build gets (`resolveStoredImage`, same name).
 *
 * The layout may be hostile (a download, a pull request's artifact). The client serves only the
 * blobs the chosen image names (through its indexes and manifest), reads each only from
 * DIR/blobs/ALG/HEX as a regular file reached through no symbolic link (checked on the open file,
 * not its path), and sends its bytes only once they hash to the digest asked for: no other file of
 * the client's machine can reach the worker, whatever DIR's links say. The worker checks each blob
 * again as it stores it, and each layer against its diff_id, as a local import checks them
 * (oci/archive/load.ts).
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { type FileHandle, open, readlink, realpath } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../errors/index.js";
import type { ResolvedImage } from "../frontend/resolver.js";
import { layoutImages } from "../oci/archive/index.js";
import {
  InvalidImageError,
  MAX_CONFIG_BYTES,
  manifestForPlatform,
  parseIndex,
  parseManifest,
  readImage,
} from "../oci/image.js";
import { LayerContentError, verifyLayer } from "../oci/layer.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import { type Descriptor, isIndexMediaType, isManifestMediaType, MediaType } from "../oci/spec.js";
import { openStore, parseDigest, type Store } from "../oci/store/index.js";
import type { Handler, IncomingCall } from "../worker/remote/protocol.js";
import { chooseLayoutImage, type LayoutImages, layoutSource } from "./contexts.js";
import { resolveStoredImage } from "./resolver.js";

/** What the worker is told of a layout context (in the build call's params). */
export interface RemoteLayout {
  /** The context's name (`--build-context NAME=…`). */
  name: string;
  /** How messages name the layout: `the OCI layout DIR`, DIR as the client has it. */
  what: string;
  /** The name the build gives the image, as a local build names it (its first name, or NAME). */
  ref: string;
  /** The chosen image: a manifest, or an index to choose the platform's manifest from. */
  descriptor: Descriptor;
}

/** A layout context as the client serves it: its directory, with every link in its path resolved. */
export interface ClientLayout extends RemoteLayout {
  dir: string;
}

/** A manifest or index bigger than this is not one (the registry client's limit). */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Indexes within indexes, at most. */
const MAX_INDEX_DEPTH = 8;
/** Layout contexts of one build, at most. */
const MAX_LAYOUTS = 64;
/** Digests asked about in one `layout-has` call. */
const HAS_BATCH = 4096;
const READ_CHUNK = 1024 * 1024;

// ---- the client's half ----

/** `oci-layout://DIR[:TAG]` of this machine, read for a remote build: the image chosen, nothing sent yet. */
export async function readClientLayout(name: string, source: string, cwd: string): Promise<ClientLayout> {
  const { dir, tag, what } = await layoutSource(name, source, cwd);
  const layout = { name, what, dir: await realpath(dir) };
  const marker = await openInLayout(layout, "oci-layout");
  if (marker === undefined)
    throw layoutError(layout, "has no oci-layout file: it is not an OCI image layout");
  await marker.close();
  const index = await openInLayout(layout, "index.json");
  if (index === undefined) throw layoutError(layout, "has no index.json: it is not an OCI image layout");
  let bytes: Buffer;
  try {
    const size = (await index.stat()).size;
    if (size > MAX_MANIFEST_BYTES)
      throw layoutError(layout, `has an index.json of ${size} bytes, too big to be one`);
    bytes = await index.readFile();
  } finally {
    await index.close();
  }
  const chosen = chooseLayoutImage(name, what, layoutImages(bytes, what), tag);
  const descriptor = checkedDescriptor(chosen.descriptor);
  if (descriptor === undefined)
    throw layoutError(layout, "names its image in index.json with an invalid descriptor");
  return { ...layout, ref: chosen.names[0] ?? name, descriptor };
}

/**
 * What the worker may ask of the client's layouts during the build: which of some blobs a layout
 * holds (`layout-has`, for choosing a platform's manifest), and a blob's bytes (`layout-blob`).
 * Only blobs the chosen image names are served; a worker asking for another gets an error.
 */
export function layoutHandlers(layouts: readonly ClientLayout[]): Record<string, Handler> {
  if (layouts.length === 0) return {};
  const served = new Map(layouts.map((layout) => [layout.name, new NamedBlobs(layout)]));
  const find = (context: unknown) => {
    const blobs = typeof context === "string" ? served.get(context) : undefined;
    if (blobs === undefined) {
      throw new TbuildError(
        "E_WORKER_PROTOCOL",
        `the worker asked for the OCI layout of a context this build does not have (${JSON.stringify(context)})`,
      );
    }
    return blobs;
  };
  return {
    "layout-has": async (params) => {
      const { context, digests } = params as { context: unknown; digests: unknown };
      const blobs = find(context);
      if (!Array.isArray(digests) || digests.length > HAS_BATCH) {
        throw new TbuildError(
          "E_WORKER_PROTOCOL",
          `the worker asked about ${blobs.layout.what} in a malformed call`,
        );
      }
      const held: string[] = [];
      for (const digest of digests) {
        if (typeof digest !== "string" || (await blobs.named(digest)) === undefined) continue;
        // As a local build's import, a blob that is a link (or missing) is one the layout lacks.
        const handle = await openBlob(blobs.layout, digest).catch(() => undefined);
        if (handle === undefined) continue;
        await handle.close();
        held.push(digest);
      }
      return { held };
    },
    "layout-blob": async (params, call) => {
      const { context, digest } = params as { context: unknown; digest: unknown };
      const blobs = find(context);
      const descriptor = typeof digest === "string" ? await blobs.named(digest) : undefined;
      if (descriptor === undefined) {
        throw new TbuildError(
          "E_WORKER_PROTOCOL",
          `the worker asked for ${String(digest).slice(0, 80)} of ${blobs.layout.what}, which the image it names does not name`,
        );
      }
      await sendBlob(blobs.layout, descriptor, call);
    },
  };
}

/**
 * The blobs a layout's chosen image names: its descriptor, what its indexes and manifests name,
 * read from the layout (each checked against its digest) as far as needed to answer. Independent
 * of what the worker already holds, which it does not ask for.
 */
class NamedBlobs {
  readonly layout: ClientLayout;
  private readonly found: Map<string, Descriptor>;
  /** Indexes and manifests named and not read yet, in the order they were named. */
  private readonly unread: Descriptor[];

  constructor(layout: ClientLayout) {
    this.layout = layout;
    this.found = new Map([[layout.descriptor.digest, layout.descriptor]]);
    this.unread = [layout.descriptor];
  }

  /** Reads of the layout, one at a time: calls at once (a layer each) must not miss each other's finds. */
  private reading: Promise<unknown> = Promise.resolve();

  /** The descriptor that names `digest`, if the chosen image names it (through its indexes). */
  named(digest: string): Promise<Descriptor | undefined> {
    const answer = this.reading.then(() => this.find(digest));
    this.reading = answer.catch(() => {});
    return answer;
  }

  private async find(digest: string): Promise<Descriptor | undefined> {
    while (!this.found.has(digest) && this.unread.length > 0) {
      const parent = this.unread.shift()!;
      if (!isIndexMediaType(parent.mediaType) && !isManifestMediaType(parent.mediaType)) continue;
      // One the layout lacks, or damaged, names nothing; asked for, it fails with the reason.
      const bytes = await readVerified(this.layout, parent).catch(() => undefined);
      for (const child of bytes ? childrenOf(parent.mediaType, bytes) : []) {
        if (this.found.has(child.digest)) continue;
        this.found.set(child.digest, child);
        this.unread.push(child);
      }
    }
    return this.found.get(digest);
  }
}

/** A small blob (an index or manifest) of the layout, whole, checked against its digest. */
async function readVerified(layout: ClientLayout, descriptor: Descriptor): Promise<Buffer | undefined> {
  if (descriptor.size > MAX_MANIFEST_BYTES) return undefined;
  const handle = await openBlob(layout, descriptor.digest);
  if (handle === undefined) return undefined;
  try {
    const bytes = await handle.readFile();
    const { algorithm } = parseDigest(descriptor.digest);
    const digest = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
    return digest === descriptor.digest ? bytes : undefined;
  } finally {
    await handle.close();
  }
}

/** What an index (its manifests) or a manifest (its config and layers) names, as valid descriptors. */
function childrenOf(mediaType: string, bytes: Buffer): Descriptor[] {
  let children: unknown[] = [];
  try {
    const value = JSON.parse(bytes.toString("utf8")) as Record<string, unknown>;
    children = isIndexMediaType(mediaType)
      ? Array.isArray(value.manifests)
        ? value.manifests
        : []
      : [value.config, ...(Array.isArray(value.layers) ? value.layers : [])];
  } catch {
    // Not JSON: the worker, which parses it too, says so.
  }
  return children.map(checkedDescriptor).filter((d) => d !== undefined);
}

/**
 * One blob of the layout to the worker: checked to be the size the image says, hashed whole
 * before a byte goes, then sent (and hashed again: a file changed in between fails the call).
 */
async function sendBlob(layout: ClientLayout, descriptor: Descriptor, call: IncomingCall): Promise<void> {
  const { algorithm, hex } = parseDigest(descriptor.digest);
  const file = `blobs/${algorithm}/${hex}`;
  const handle = await openBlob(layout, descriptor.digest);
  if (handle === undefined) throw layoutError(layout, `lacks ${file}, which its image needs`);
  try {
    const size = (await handle.stat()).size;
    if (size !== descriptor.size) {
      throw layoutError(layout, `has ${file} of ${size} bytes, where its image says ${descriptor.size}`);
    }
    const before = createHash(algorithm);
    for await (const chunk of chunksOf(handle, size)) before.update(chunk);
    if (`${algorithm}:${before.digest("hex")}` !== descriptor.digest) {
      throw layoutError(
        layout,
        `has ${file}, whose content does not hash to its name: the layout is damaged`,
      );
    }
    const sent = createHash(algorithm);
    async function* checked() {
      for await (const chunk of chunksOf(handle!, size)) {
        sent.update(chunk);
        yield chunk;
      }
      if (`${algorithm}:${sent.digest("hex")}` !== descriptor.digest) {
        throw layoutError(layout, `had ${file} changed while it was being sent`);
      }
    }
    await pipeline(Readable.from(checked()), call.writable, { end: false });
  } finally {
    await handle.close();
  }
}

function openBlob(layout: ClientLayout, digest: string): Promise<FileHandle | undefined> {
  const { algorithm, hex } = parseDigest(digest);
  return openInLayout(layout, `blobs/${algorithm}/${hex}`);
}

/**
 * A regular file of the layout directory, opened; undefined when there is none. Whether it was
 * reached through a symbolic link (in any part of its path) is judged on the open file, by the
 * path the kernel gives it, so a link swapped in meanwhile cannot lead elsewhere. Opened without
 * blocking, so that a FIFO does not hang the build.
 */
async function openInLayout(
  layout: { name: string; what: string; dir: string },
  relative: string,
): Promise<FileHandle | undefined> {
  const expected = path.join(layout.dir, relative);
  let handle: FileHandle;
  try {
    handle = await open(expected, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    if (code === "ELOOP") throw outsideLayout(layout, relative);
    throw layoutError(layout, `has ${relative}, which cannot be read (${code ?? String(err)})`);
  }
  try {
    if ((await readlink(`/proc/self/fd/${handle.fd}`)) !== expected) throw outsideLayout(layout, relative);
    if (!(await handle.stat()).isFile())
      throw layoutError(layout, `has ${relative}, which is not a regular file`);
    return handle;
  } catch (err) {
    await handle.close();
    throw err;
  }
}

async function* chunksOf(handle: FileHandle, size: number): AsyncGenerator<Buffer> {
  for (let position = 0; position < size; ) {
    const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK, size - position));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
    if (bytesRead === 0) return;
    position += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
}

function outsideLayout(layout: { name: string; what: string }, relative: string): TbuildError {
  return layoutError(
    layout,
    `has ${relative} as a symbolic link (or under one); tbuild sends a layout's own files only: copy the layout with its files in place (cp -rL)`,
  );
}

function layoutError(layout: { name: string; what: string }, message: string): TbuildError {
  return new TbuildError("E_BUILD_CONTEXT", `--build-context ${layout.name}: ${layout.what} ${message}`);
}

/** A plain descriptor (media type, digest, size) when `value` is a valid one. */
function checkedDescriptor(value: unknown): Descriptor | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { mediaType, digest, size } = value as Record<string, unknown>;
  if (typeof mediaType !== "string" || typeof digest !== "string") return undefined;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) return undefined;
  try {
    parseDigest(digest);
  } catch {
    return undefined;
  }
  return { mediaType, digest, size };
}

// ---- the worker's half ----

/** The layouts a build call names, checked as anything a client sends is. */
export function checkLayouts(value: unknown): RemoteLayout[] {
  if (value === undefined) return [];
  const malformed = () =>
    new TbuildError("E_WORKER_PROTOCOL", "a build call names its OCI layouts malformed");
  if (!Array.isArray(value) || value.length > MAX_LAYOUTS) throw malformed();
  const layouts: RemoteLayout[] = [];
  for (const item of value as Array<Record<string, unknown>>) {
    const { name, what, ref } = item ?? {};
    const descriptor = checkedDescriptor(item?.descriptor);
    if (
      typeof name !== "string" ||
      name === "" ||
      name === "context" ||
      typeof what !== "string" ||
      what.length > 4096 ||
      typeof ref !== "string" ||
      ref.length > 4096 ||
      descriptor === undefined ||
      layouts.some((l) => l.name === name)
    ) {
      throw malformed();
    }
    layouts.push({ name, what, ref, descriptor });
  }
  return layouts;
}

/**
 * The worker's side: each `oci-layout://` context's image for the platform being planned,
 * fetched from the client into the store `storeRoot` by need (call.connection calls back).
 */
export function layoutsFromClient(
  call: IncomingCall,
  storeRoot: string,
  layouts: readonly RemoteLayout[],
): LayoutImages {
  return async (name, platform, signal) => {
    const layout = layouts.find((l) => l.name === name);
    if (layout === undefined) {
      throw new TbuildError(
        "E_WORKER_PROTOCOL",
        `the client names the context ${name} an OCI layout of its own but does not serve it`,
      );
    }
    const store = await openStore(storeRoot);
    try {
      return await fetchForPlatform(call, store, layout, platform, signal ?? call.signal);
    } catch (err) {
      // As a local build's import names a broken image: by its layout.
      if (err instanceof InvalidImageError || err instanceof LayerContentError) {
        throw new TbuildError("E_BUILD_CONTEXT", `--build-context ${name}: ${layout.what}: ${err.message}`, {
          cause: err,
        });
      }
      throw err;
    }
  };
}

async function fetchForPlatform(
  call: IncomingCall,
  store: Store,
  layout: RemoteLayout,
  platform: Platform,
  signal: AbortSignal,
): Promise<ResolvedImage> {
  const what = `${layout.what} for ${formatPlatform(platform)}`;
  const fetch = async (descriptor: Descriptor) => {
    if (await store.content.has(descriptor.digest)) return;
    const blob = call.connection.openStream(
      "layout-blob",
      { context: layout.name, digest: descriptor.digest },
      { signal },
    );
    blob.writable.end();
    await store.content.write(blob.readable, { digest: descriptor.digest, size: descriptor.size }, signal);
    await blob.result;
  };
  const small = async (descriptor: Descriptor, kind: string) => {
    if (descriptor.size > MAX_MANIFEST_BYTES) {
      throw new InvalidImageError(
        `image ${descriptor.digest}`,
        `its ${kind} is ${descriptor.size} bytes, more than one can be`,
      );
    }
    await fetch(descriptor);
    return store.content.readBytes(descriptor.digest);
  };

  let descriptor = layout.descriptor;
  for (let depth = 0; isIndexMediaType(descriptor.mediaType); depth++) {
    if (depth === MAX_INDEX_DEPTH) {
      throw new InvalidImageError(
        `image ${layout.descriptor.digest}`,
        `its indexes nest deeper than ${MAX_INDEX_DEPTH}`,
      );
    }
    const index = parseIndex(await small(descriptor, "index"), `image ${descriptor.digest}`);
    const withPlatform = index.manifests.filter((m) => m.platform !== undefined);
    const held = await heldBy(call, store, layout, withPlatform, signal);
    const candidates = withPlatform.filter((m) => held.has(m.digest));
    descriptor = manifestForPlatform(candidates, platform, what);
  }
  if (!isManifestMediaType(descriptor.mediaType)) {
    throw new InvalidImageError(
      `image ${descriptor.digest}`,
      `media type ${descriptor.mediaType} is not an image manifest`,
    );
  }
  const manifest = parseManifest(await small(descriptor, "manifest"), `image ${descriptor.digest}`);
  // A config too big to be one is refused by readImage, unread.
  if (manifest.config.size <= MAX_CONFIG_BYTES) await fetch(manifest.config);
  const image = await readImage(store.content, descriptor);
  const layers = image.layers.filter(
    (layer) => layer.descriptor.mediaType !== MediaType.dockerForeignLayerGzip,
  );
  await Promise.all(layers.map((layer) => fetch(layer.descriptor)));
  // Every layer, fetched now or held already, is what its diff_id says, as a local import checks.
  for (const layer of layers) {
    await verifyLayer(
      store.content.open(layer.descriptor.digest) as AsyncIterable<Uint8Array>,
      { mediaType: layer.descriptor.mediaType, diffId: layer.diffId },
      `layer ${layer.descriptor.digest}`,
    );
  }
  return resolveStoredImage(store, layout.ref, descriptor, platform, what);
}

/** Which of an index's manifests this store or the client's layout holds: one call for all the client is asked. */
async function heldBy(
  call: IncomingCall,
  store: Store,
  layout: RemoteLayout,
  manifests: readonly Descriptor[],
  signal: AbortSignal,
): Promise<Set<string>> {
  const held = new Set<string>();
  const asked = new Set<string>();
  for (const { digest } of manifests) {
    if (await store.content.has(digest)) held.add(digest);
    else asked.add(digest);
  }
  const ask = [...asked];
  for (let i = 0; i < ask.length; i += HAS_BATCH) {
    const answer = (await call.connection.request(
      "layout-has",
      { context: layout.name, digests: ask.slice(i, i + HAS_BATCH) },
      { signal },
    )) as { held?: unknown };
    for (const digest of Array.isArray(answer.held) ? answer.held : []) {
      if (asked.has(digest)) held.add(digest);
    }
  }
  return held;
}
