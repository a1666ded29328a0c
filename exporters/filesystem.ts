import { pipeline } from "node:stream/promises";
import { TbuildError } from "../errors/index.js";
import type { TarEntry, TarEntryType } from "../oci/archive/tar.js";
import { readTarEntries, type TarReadEntry } from "../oci/archive/tar-reader.js";
import { decompressor, layerCompression } from "../oci/layer.js";
import {
  entryComponents,
  HostileLayerError,
  hardLinkMissing,
  hardLinkTarget,
  hardLinkToDirectory,
  InvalidLayerError,
  ownParentError,
  rootNotDirectory,
  whiteoutOf,
} from "../oci/layer-entry.js";
import type { ContentStore } from "../oci/store/content.js";
import type { LayerRef } from "../solver/worker.js";

/** The kinds of entry a layer's tar holds, which are the kinds a filesystem holds. */
export type FsEntryType = TarEntryType;

/**
 * One entry of the final filesystem: a tar entry's fields (for a hard link, `linkpath` is the
 * path of the file, emitted earlier), with the extended attributes and a regular file's content.
 */
export interface FsEntry extends Omit<TarEntry, "path"> {
  /** Relative, `/`-separated, normalized, no trailing slash. */
  path: string;
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
  children?: Map<string, Node>;
  inode?: Inode;
  linkpath?: string;
  devmaj?: number;
  devmin?: number;
  /** In a layer's own tree: this directory hides everything the layers below hold in it. */
  opaque?: boolean;
  /** In a layer's own tree: the names of this directory the layer whited out and did not write again. */
  whiteouts?: Set<string>;
}

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
  const root: Node = newDirectory(IMPLICIT_DIRECTORY);
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

/**
 * Reads one layer's entries (not their content) into a tree of its own, as the unpacker fills an
 * empty directory, then stacks that tree on `root` as overlayfs stacks the directory.
 */
async function applyLayer(
  content: ContentStore,
  layers: readonly LayerRef[],
  index: number,
  root: Node,
  options: FlattenOptions,
): Promise<void> {
  const layer = layers[index]!;
  const tar = openLayerTar(content, layer, index, options);
  const own: Node = newDirectory(root.meta);
  let ordinal = -1;
  try {
    for await (const entry of tar.entries) {
      ordinal++;
      options.signal?.throwIfAborted();
      const parts = entryComponents(entry.path);
      if (parts.length === 0) {
        // `./`: the root's own metadata; the root itself is never written out.
        if (entry.type !== "Directory") throw rootNotDirectory(entry.path);
        continue;
      }
      const name = parts.pop()!;
      const whiteout = whiteoutOf(name, entry.path);
      // An entry's directory, whiteouts' too, is one the layer implies (containerd makes it too).
      const dir = ownDirectory(own, root, parts, entry.path);
      if (whiteout) {
        if (whiteout.kind === "opaque") dir.opaque = true;
        else if (whiteout.kind === "hide") {
          // What the layer wrote there stays; a directory of its own hides what is below it.
          const written = dir.children!.get(whiteout.name);
          if (written === undefined) {
            dir.whiteouts ??= new Set();
            dir.whiteouts.add(whiteout.name);
          } else if (written.kind === "Directory") written.opaque = true;
        }
        continue;
      }
      const rewritten = dir.whiteouts?.delete(name) ?? false;
      const node = nodeFor(entry, dir.children!.get(name), index, ordinal, own, root);
      // Whited out, then written again by the same layer: a directory is new, hiding what was below.
      if (rewritten && node.kind === "Directory") node.opaque = true;
      dir.children!.set(name, node);
    }
  } catch (err) {
    const what = `layer ${index + 1} (${layer.descriptor.digest})`;
    if (err instanceof HostileLayerError) throw new HostileLayerError(err.entry, err.reason, what);
    if (err instanceof InvalidLayerError) throw new InvalidLayerError(err.entry, err.reason, what);
    throw err;
  } finally {
    tar.close();
  }
  stack(root, own);
}

function nodeFor(
  entry: TarReadEntry,
  existing: Node | undefined,
  layer: number,
  ordinal: number,
  own: Node,
  below: Node,
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
        return existing;
      }
      return newDirectory(meta);
    case "File":
      return { kind: "File", meta, inode: { layer, ordinal, size: entry.size, meta, paths: [] } };
    case "Link": {
      const target = linkTarget(own, below, hardLinkTarget(entry.path, entry.linkpath), entry);
      if (target.kind === "Directory") throw hardLinkToDirectory(entry.path);
      // The same inode under another name; a link to a symlink or a device is another such node.
      return { ...target };
    }
    case "SymbolicLink":
      return { kind: "SymbolicLink", meta, linkpath: entry.linkpath };
    case "CharacterDevice":
    case "BlockDevice":
      return { kind: entry.type, meta, devmaj: entry.devmaj, devmin: entry.devmin };
    case "FIFO":
      return { kind: "FIFO", meta };
  }
}

function newDirectory(meta: Metadata): Node {
  return { kind: "Directory", meta, children: new Map() };
}

/**
 * The directory at `parts` of a layer's own tree, made where the layer implies it (oci/layer-entry.ts
 * has the rule): a part the layer has not written becomes a directory of the layer, whatever the
 * layers below hold there; one it made a symbolic link or a file is refused. A directory it
 * implies takes the metadata of the directory at the same path below (`below`), as the unpacker's
 * does, unless the layer whited that out first.
 */
function ownDirectory(own: Node, below: Node, parts: readonly string[], raw: string): Node {
  let dir = own;
  let belowDir: Node | undefined = below;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    belowDir = belowDir?.kind === "Directory" ? belowDir.children!.get(part) : undefined;
    let child = dir.children!.get(part);
    if (child !== undefined && child.kind !== "Directory") {
      const kind = child.kind === "SymbolicLink" ? "symlink" : "other";
      throw ownParentError(raw, parts.slice(0, i + 1).join("/"), kind);
    }
    if (child === undefined) {
      if (dir.whiteouts?.delete(part)) {
        // Whited out, then written into: the directory is new, and what was below stays hidden.
        child = { ...newDirectory(IMPLICIT_DIRECTORY), opaque: true };
      } else {
        child = newDirectory(belowDir?.kind === "Directory" ? belowDir.meta : IMPLICIT_DIRECTORY);
      }
      dir.children!.set(part, child);
    }
    dir = child;
  }
  return dir;
}

/**
 * What a hard link links to: the node at `parts` in the layer's own tree, else at the same path
 * below unless the layer hid it there; never through a symbolic link.
 */
function linkTarget(own: Node, below: Node, parts: readonly string[], entry: TarReadEntry): Node {
  let ownNode: Node | undefined = own;
  let belowNode: Node | undefined = below;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (ownNode !== undefined) {
      if (ownNode.kind !== "Directory") {
        const own = ownNode.kind === "SymbolicLink" ? "symlink" : "other";
        throw ownParentError(entry.path, parts.slice(0, i).join("/"), own, entry.linkpath);
      }
      if (ownNode.opaque || ownNode.whiteouts?.has(part)) belowNode = undefined;
    }
    belowNode = belowNode?.kind === "Directory" ? belowNode.children!.get(part) : undefined;
    ownNode = ownNode?.children?.get(part);
  }
  const target = ownNode ?? belowNode;
  if (target === undefined) throw hardLinkMissing(entry.path, entry.linkpath);
  return target;
}

/**
 * Stacks a layer's own directory `upper` on `lower`, as overlayfs shows it: an opaque directory
 * hides all of `lower`, a whiteout one name of it; a directory over a directory merges with it,
 * with its metadata; anything else replaces what was there.
 */
function stack(lower: Node, upper: Node): void {
  lower.meta = upper.meta;
  if (upper.opaque) lower.children!.clear();
  for (const name of upper.whiteouts ?? []) lower.children!.delete(name);
  for (const [name, node] of upper.children!) {
    const there = lower.children!.get(name);
    if (node.kind === "Directory" && there?.kind === "Directory") stack(there, node);
    else lower.children!.set(name, settled(node));
  }
}

/** A node of a layer's own tree as it stands in the final one: no marks left, implied directories as made. */
function settled(node: Node): Node {
  if (node.kind !== "Directory") return node;
  const children = new Map<string, Node>();
  for (const [name, child] of node.children!) children.set(name, settled(child));
  return { kind: "Directory", meta: node.meta, children };
}
