/**
 * Paths inside a root filesystem, seen from the host: the one place tbuild resolves a path that
 * came from a Dockerfile, a context or an image. Any of those is untrusted: `/etc` may be a symlink
 * to `/`, `/app` to `/proc/self/root`, a context's `d` to the user's home. Every path is resolved
 * component by component, with symlinks followed as the container would follow them (absolute
 * targets and `..` stay inside the root), never by the host's own resolution; this is
 * containerd's `fs.RootPath`, which BuildKit uses for file ops, mounts and the context.
 *
 * The result names a path the host may then open. Whoever hands it to something that resolves
 * paths again (runc's bind mount source, `cp`) must make sure no symlink is left in it: a fully
 * followed path has none, save what the tree's owner changes meanwhile (a build's own roots do not
 * change under it).
 */
import { lstatSync, readlinkSync } from "node:fs";
import path from "node:path";
import { TbuildError } from "../errors/index.js";

/** Linux's own limit on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 40;

/** ENOENT or ENOTDIR: the path names nothing (a missing component, or one that is a file). */
export function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/** What resolving a path needs of a tree. Paths are relative to its root, `/` separated, "" for the root. */
export interface PathTree {
  /** The entry at `rel`, undefined when there is none. */
  lstat(rel: string): { isSymbolicLink(): boolean } | undefined;
  readlink(rel: string): string;
}

/** A tree that is a directory of the host (mounted, or plain). Its calls are synchronous: a lstat is quicker than a thread-pool round trip. */
export function directoryTree(root: string) {
  const at = (rel: string) => (rel === "" ? root : path.join(root, rel));
  return {
    lstat(rel: string) {
      try {
        return lstatSync(at(rel));
      } catch (err) {
        if (isMissing(err)) return undefined;
        throw err;
      }
    },
    readlink: (rel: string) => readlinkSync(at(rel)),
    hostPath: (rel: string) => at(rel),
    changes: root,
  };
}

export interface ResolveOptions {
  /** Follow a symlink in the last component (default). `false` is what `rm`, `lstat` and a copy without `followSymlinks` need. */
  followFinal?: boolean;
  /**
   * Told of each symlink followed: the link's path, and the whole path it leads the walk to (the
   * link's target in its place, `..` applied, not yet resolved further). Relative, "" for the root.
   */
  onLink?(link: string, leadsTo: string): void;
}

/**
 * Where `inside` (a path as the container sees it) is in `tree`, relative to its root, "" for the
 * root itself. Components that do not exist are kept as they are, so the result also names where
 * a missing path would be created.
 */
export function resolveInTree(tree: PathTree, inside: string, options: ResolveOptions = {}): string {
  const followFinal = options.followFinal ?? true;
  const pending = inside.split("/").filter((c) => c !== "" && c !== ".");
  const resolved: string[] = [];
  let followed = 0;
  while (pending.length > 0) {
    const component = pending.shift() as string;
    if (component === "..") {
      resolved.pop();
      continue;
    }
    const candidate = resolved.length === 0 ? component : `${resolved.join("/")}/${component}`;
    if ((!followFinal && pending.length === 0) || !tree.lstat(candidate)?.isSymbolicLink()) {
      resolved.push(component);
      continue;
    }
    if (++followed > MAX_SYMLINKS) {
      throw new TbuildError("E_SYMLINK_LOOP", `too many levels of symbolic links resolving ${inside}`);
    }
    const target = tree.readlink(candidate);
    if (target.startsWith("/")) resolved.length = 0;
    pending.unshift(...target.split("/").filter((c) => c !== "" && c !== "."));
    if (options.onLink) {
      const leadsTo: string[] = [];
      for (const part of [...resolved, ...pending]) {
        if (part === "..") leadsTo.pop();
        else leadsTo.push(part);
      }
      options.onLink(candidate, leadsTo.join("/"));
    }
  }
  return resolved.join("/");
}

/** The host path of `inside` under the directory `root`, resolved as `resolveInTree` does. */
export function rootPath(root: string, inside: string, options: ResolveOptions = {}): string {
  const rel = resolveInTree(directoryTree(root), inside, options);
  return rel === "" ? root : path.join(root, rel);
}
