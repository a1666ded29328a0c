import { pipeline } from "node:stream/promises";
import { TbuildError } from "../errors/index.js";
import { readTarEntries, type TarReadEntry } from "../oci/archive/tar-reader.js";
import { decompressor, layerCompression } from "../oci/layer.js";
import { entryComponents, HostileLayerError, hardLinkTarget, whiteoutOf } from "../oci/layer-entry.js";
import type { ContentStore } from "../oci/store/content.js";
import type { LayerRef } from "../solver/worker.js";

export type FsEntryType =
  | "File"
  | "Link"
  | "Directory"
  | "SymbolicLink"
  | "CharacterDevice"
  | "BlockDevice"
  | "FIFO";

/** One entry of the final filesystem. */
export interface FsEntry {
  /** Relative, `/`-separated, normalized, no trailing slash. */
  path: string;
  type: FsEntryType;
  /** Permission bits with setuid, setgid and sticky. */
  mode: number;
  uid: number;
  gid: number;
  /** Regular files: the content length. */
  size: number;
  mtime: Date;
  /** Symbolic links: the target as written; hard links (`Link`): the path of the file, emitted earlier. */
  linkpath?: string;
  devmaj?: number;
  devmin?: number;
  xattrs: Map<string, Buffer>;
  /** Regular files: the content, to be read before asking for the next entry. */
  body?: AsyncIterable<Buffer>;
}

interface Metadata {
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  xattrs: Map<string, Buffer>;
}

/** A regular file's content and metadata: shared by every path that is a hard link to it. */
interface Inode {
  layer: number;
  /** The entry's position in its layer's tar. */
  ordinal: number;
  size: number;
  meta: Metadata;
  /** Filled when the final tree is walked: the surviving paths, in walk order. */
  paths: string[];
}

interface Node {
  kind: Exclude<FsEntryType, "Link">;
  meta: Metadata;
  /** The latest layer that wrote this node or anything below it (for whiteouts' lower-layers-only rule). */
  touched: number;
  children?: Map<string, Node>;
  inode?: Inode;
  linkpath?: string;
  devmaj?: number;
  devmin?: number;
}

/** Linux's limit on symbolic links followed while resolving one path. */
const MAX_SYMLINK_HOPS = 40;
/** Parent directories a layer did not declare are made as containerd makes them. */
const IMPLICIT_DIRECTORY: Metadata = { mode: 0o755, uid: 0, gid: 0, mtime: new Date(0), xattrs: new Map() };

/** A layer that cannot be applied (a hard link to nothing, a file where a directory must be). */
export class LayerApplyError extends TbuildError {
  constructor(layer: LayerRef, index: number, reason: string) {
    super("E_INVALID_LAYER", `layer ${index + 1} (${layer.descriptor.digest}) cannot be applied: ${reason}`);
  }
}

export interface FlattenOptions {
  signal?: AbortSignal;
  /** Entries of kinds no filesystem holds (sparse files, GNU dump dirs), which are left out. */
  warn?(message: string): void;
}

/** The final filesystem of `layers` (lowest first), as entries; each File's body must be read (or left) before the next. */
export async function* flattenLayers(
  content: ContentStore,
  layers: readonly LayerRef[],
  options: FlattenOptions = {},
): AsyncGenerator<FsEntry> {
  const root: Node = newDirectory(IMPLICIT_DIRECTORY, -1);
  for (let index = 0; index < layers.length; index++) {
    await applyLayer(content, layers, index, root, options);
  }

  const survivors = new Map<number, Map<number, Inode>>();
  yield* metadataEntries(root, "", survivors);

  for (let index = 0; index < layers.length; index++) {
    const inodes = survivors.get(index);
    if (inodes === undefined) continue;
    let ordinal = -1;
    let left = inodes.size;
    const tar = openLayerTar(content, layers[index]!, index, options);
    try {
      for await (const entry of tar.entries) {
        ordinal++;
        const inode = inodes.get(ordinal);
        if (inode === undefined) continue;
        const [first, ...others] = inode.paths as [string, ...string[]];
        yield { ...fileEntry(first, inode), body: entry.body };
        for (const other of others) {
          yield { ...fileEntry(other, inode), type: "Link", size: 0, linkpath: first };
        }
        if (--left === 0) break;
      }
    } finally {
      tar.close();
    }
    if (left > 0) {
      throw new LayerApplyError(layers[index]!, index, "it changed between two readings");
    }
  }
}

function fileEntry(filePath: string, inode: Inode): FsEntry {
  const { meta } = inode;
  return {
    path: filePath,
    type: "File",
    mode: meta.mode,
    uid: meta.uid,
    gid: meta.gid,
    size: inode.size,
    mtime: meta.mtime,
    xattrs: meta.xattrs,
  };
}

/** Everything without content, parents first, names in byte order; regular files' paths are gathered on their inodes. */
function* metadataEntries(
  dir: Node,
  prefix: string,
  survivors: Map<number, Map<number, Inode>>,
): Generator<FsEntry> {
  const names = [...dir.children!.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  for (const name of names) {
    const node = dir.children!.get(name)!;
    const nodePath = prefix + name;
    if (node.kind === "File") {
      const inode = node.inode!;
      if (inode.paths.length === 0) {
        let byOrdinal = survivors.get(inode.layer);
        if (byOrdinal === undefined) {
          byOrdinal = new Map();
          survivors.set(inode.layer, byOrdinal);
        }
        byOrdinal.set(inode.ordinal, inode);
      }
      inode.paths.push(nodePath);
      continue;
    }
    const { meta } = node;
    yield {
      path: nodePath,
      type: node.kind,
      mode: meta.mode,
      uid: meta.uid,
      gid: meta.gid,
      size: 0,
      mtime: meta.mtime,
      xattrs: meta.xattrs,
      ...(node.linkpath !== undefined ? { linkpath: node.linkpath } : {}),
      ...(node.kind === "CharacterDevice" || node.kind === "BlockDevice"
        ? { devmaj: node.devmaj ?? 0, devmin: node.devmin ?? 0 }
        : {}),
    };
    if (node.kind === "Directory") yield* metadataEntries(node, `${nodePath}/`, survivors);
  }
}

function openLayerTar(content: ContentStore, layer: LayerRef, index: number, options: FlattenOptions) {
  const source = content.open(layer.descriptor.digest);
  const decompress = decompressor(layerCompression(layer.descriptor.mediaType));
  // An error on either side destroys both; the reader sees it.
  pipeline(source, decompress, options.signal ? { signal: options.signal } : {}).catch(() => {});
  const what = `layer ${index + 1} (${layer.descriptor.digest})`;
  return {
    entries: readTarEntries(decompress, {
      what,
      onSkip: (entryPath, reason) => options.warn?.(`${what}: ${entryPath} is left out: ${reason}`),
    }),
    close: () => {
      decompress.destroy();
      (source as unknown as { destroy?(): void }).destroy?.();
    },
  };
}

/** Reads one layer's entries (not their content) into the tree. */
async function applyLayer(
  content: ContentStore,
  layers: readonly LayerRef[],
  index: number,
  root: Node,
  options: FlattenOptions,
): Promise<void> {
  const layer = layers[index]!;
  const fail = (reason: string) => new LayerApplyError(layer, index, reason);
  const tar = openLayerTar(content, layer, index, options);
  let ordinal = -1;
  try {
    for await (const entry of tar.entries) {
      ordinal++;
      options.signal?.throwIfAborted();
      const parts = entryComponents(entry.path);
      if (parts.length === 0) {
        // `./`: the root's own metadata; the root itself is never written out.
        continue;
      }
      const name = parts.pop()!;
      const whiteout = whiteoutOf(name, entry.path);
      if (whiteout) {
        const dir = resolveDirectory(root, parts, index, false, fail);
        if (dir === undefined || whiteout.kind === "aufs") continue;
        if (whiteout.kind === "opaque") {
          for (const [childName, child] of dir.children!)
            if (hideLower(child, index)) dir.children!.delete(childName);
        } else {
          const child = dir.children!.get(whiteout.name);
          if (child !== undefined && hideLower(child, index)) dir.children!.delete(whiteout.name);
        }
        continue;
      }
      const dir = resolveDirectory(root, parts, index, true, fail)!;
      const existing = dir.children!.get(name);
      const node = nodeFor(entry, existing, index, ordinal, root, fail);
      dir.children!.set(name, node);
    }
  } catch (err) {
    const what = `layer ${index + 1} (${layer.descriptor.digest})`;
    if (err instanceof HostileLayerError) throw new HostileLayerError(err.entry, err.reason, what);
    throw err;
  } finally {
    tar.close();
  }
}

function nodeFor(
  entry: TarReadEntry,
  existing: Node | undefined,
  layer: number,
  ordinal: number,
  root: Node,
  fail: (reason: string) => Error,
): Node {
  const meta: Metadata = {
    mode: entry.mode & 0o7777,
    uid: entry.uid,
    gid: entry.gid,
    mtime: entry.mtime,
    xattrs: entry.xattrs,
  };
  switch (entry.type) {
    case "Directory":
      if (existing?.kind === "Directory") {
        existing.meta = meta;
        existing.touched = layer;
        return existing;
      }
      return newDirectory(meta, layer);
    case "File":
      return {
        kind: "File",
        meta,
        touched: layer,
        inode: { layer, ordinal, size: entry.size, meta, paths: [] },
      };
    case "Link": {
      const parts = hardLinkTarget(entry.path, entry.linkpath);
      const name = parts.pop()!;
      const target = resolveDirectory(root, parts, layer, false, fail)?.children?.get(name);
      if (target === undefined)
        throw fail(`${entry.path} is a hard link to ${entry.linkpath}, which is not there`);
      if (target.kind === "Directory")
        throw fail(`${entry.path} is a hard link to the directory ${entry.linkpath}`);
      // The same inode under another name; a link to a symlink or a device is another such node.
      return { ...target, touched: layer };
    }
    case "SymbolicLink":
      return { kind: "SymbolicLink", meta, touched: layer, linkpath: entry.linkpath };
    case "CharacterDevice":
    case "BlockDevice":
      return { kind: entry.type, meta, touched: layer, devmaj: entry.devmaj, devmin: entry.devmin };
    case "FIFO":
      return { kind: "FIFO", meta, touched: layer };
  }
}

function newDirectory(meta: Metadata, layer: number): Node {
  return { kind: "Directory", meta, touched: layer, children: new Map() };
}

/**
 * Removes from `node` what lower layers wrote; true when nothing of it remains (the caller drops
 * it). A directory the current layer also wrote into keeps that layer's part.
 */
function hideLower(node: Node, layer: number): boolean {
  if (node.touched < layer) return true;
  if (node.kind === "Directory") {
    for (const [name, child] of node.children!) if (hideLower(child, layer)) node.children!.delete(name);
  }
  return false;
}

/**
 * The directory at `parts`, following symbolic links (inside the root, as containerd's RootPath
 * does). With `create`, missing directories are made and every directory on the way is marked as
 * written by `layer`; without, undefined when a part is missing.
 */
function resolveDirectory(
  root: Node,
  parts: readonly string[],
  layer: number,
  create: boolean,
  fail: (reason: string) => Error,
): Node | undefined {
  if (create) root.touched = layer;
  return walk(root, parts, layer, create, fail, { left: MAX_SYMLINK_HOPS })?.at(-1)?.node;
}

interface Step {
  name: string;
  node: Node;
}

/**
 * The directories from the root to `parts`, component by component: a symbolic link is replaced by
 * the walk to its target (relative to where it is, or to the root), and `..` steps back, never
 * above the root.
 */
function walk(
  root: Node,
  parts: readonly string[],
  layer: number,
  create: boolean,
  fail: (reason: string) => Error,
  hops: { left: number },
  from: Step[] = [{ name: "", node: root }],
): Step[] | undefined {
  let steps = from;
  for (const part of parts) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (steps.length > 1) steps = steps.slice(0, -1);
      continue;
    }
    const dir = steps.at(-1)!.node;
    let child = dir.children!.get(part);
    if (child === undefined) {
      if (!create) return undefined;
      child = newDirectory(IMPLICIT_DIRECTORY, layer);
      dir.children!.set(part, child);
    }
    if (child.kind === "SymbolicLink") {
      const where = `/${[...steps.slice(1).map((s) => s.name), part].join("/")}`;
      if (--hops.left < 0) throw fail(`too many symbolic links at ${where}`);
      const target = child.linkpath!;
      const start = target.startsWith("/") ? [steps[0]!] : steps;
      const resolved = walk(root, target.split("/"), layer, create, fail, hops, start);
      if (resolved === undefined) return undefined;
      steps = resolved;
      continue;
    }
    if (child.kind !== "Directory") {
      if (!create) return undefined;
      throw fail(
        `/${[...steps.slice(1).map((s) => s.name), part].join("/")} is not a directory, but the layer writes below it`,
      );
    }
    if (create) child.touched = layer;
    steps = [...steps, { name: part, node: child }];
  }
  return steps;
}
