/**
 * The rules of a layer tar's entries that hold however the layer is applied: unpacked to a
 * directory overlayfs stacks (worker/unpack.ts) or stacked in memory for an export
 * (exporters/filesystem.ts). A layer is untrusted input, so both refuse the same entries: a path
 * that is absolute, holds a NUL byte or climbs with `..`; a whiteout of no name or of a parent; a
 * hard link out of the layer or to its root. And both read whiteouts the same way: `.wh.NAME`
 * hides NAME of the layers below, `.wh..wh..opq` everything below its directory, and other
 * `.wh..wh.` names are aufs bookkeeping, meaningless here; none of them hides what the same layer
 * writes (image-spec: "whiteout files MUST only apply to resources in lower/parent layers").
 *
 * And both place an entry the same way, as overlayfs stacks a layer unpacked on its own (Docker's
 * overlay2 and BuildKit's containerd overlay apply do the same): a layer's paths are its own, and
 * no symbolic link is followed to place an entry. A parent the layer does not list is a directory
 * it implies; where the layers below hold a symbolic link or a file at that path, the layer's
 * directory replaces it (an image with `lib -> usr/lib` and a layer writing `lib/x` ends with a
 * directory `lib`, as `docker run` shows it). A parent the layer itself made a symbolic link is
 * refused as hostile, one it made a file as invalid. A hard link's target is looked up the same
 * way: in this layer, else at the same path below, never through a link.
 * `test/exporters/layer-rules.test.ts` proves the unpacker and the exporters' flattening agree.
 */
import { TbuildError } from "../errors/index.js";

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_WHITEOUT = ".wh..wh..opq";

/** An entry's path as shown in a message: a path of thousands of characters is cut. */
function shownEntry(entry: string): string {
  return entry.length <= 200
    ? JSON.stringify(entry)
    : `${JSON.stringify(entry.slice(0, 100))}… (${entry.length} characters)`;
}

/** A layer entry that would write outside the layer: the message names the entry and why. */
export class HostileLayerError extends TbuildError {
  readonly entry: string;
  readonly reason: string;

  constructor(entry: string, reason: string, layer = "a layer") {
    super(
      "E_HOSTILE_LAYER",
      `refused to unpack ${layer}: its entry ${shownEntry(entry)} ${reason}; nothing of the layer was unpacked`,
    );
    this.entry = entry;
    this.reason = reason;
  }
}

/** A layer that is broken rather than hostile (a file where a directory must be, a missing link target). */
export class InvalidLayerError extends TbuildError {
  readonly entry: string;
  readonly reason: string;

  constructor(entry: string, reason: string, layer = "a layer") {
    super("E_INVALID_LAYER", `cannot unpack ${layer}: its entry ${shownEntry(entry)} ${reason}`);
    this.entry = entry;
    this.reason = reason;
  }
}

/** An entry's path as checked components; [] is the layer's root. */
export function entryComponents(raw: string): string[] {
  if (raw.startsWith("/")) throw new HostileLayerError(raw, "has an absolute path");
  if (raw.includes("\0")) throw new HostileLayerError(raw, "has a NUL byte in its path");
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes(".."))
    throw new HostileLayerError(raw, "has a '..' component, which would leave the layer");
  return parts;
}

/** What a whiteout entry's name means; undefined for an entry that is no whiteout. */
export type Whiteout = { kind: "opaque" } | { kind: "hide"; name: string } | { kind: "aufs" };

export function whiteoutOf(name: string, raw: string): Whiteout | undefined {
  if (!name.startsWith(WHITEOUT_PREFIX)) return undefined;
  if (name === OPAQUE_WHITEOUT) return { kind: "opaque" };
  if (name.startsWith(`${WHITEOUT_PREFIX}${WHITEOUT_PREFIX}`)) return { kind: "aufs" };
  const hidden = name.slice(WHITEOUT_PREFIX.length);
  if (hidden === "" || hidden === "." || hidden === "..") {
    throw new HostileLayerError(raw, "is a whiteout of no file, or of a parent directory");
  }
  return { kind: "hide", name: hidden };
}

/** A hard link's target as checked components: inside the layer, never its root. */
export function hardLinkTarget(raw: string, linkpath: string): string[] {
  let parts: string[];
  try {
    if (linkpath.startsWith("/")) throw new Error("absolute");
    parts = entryComponents(linkpath);
  } catch {
    throw new HostileLayerError(raw, `is a hard link to ${JSON.stringify(linkpath)}, outside the layer`);
  }
  if (parts.length === 0) throw new HostileLayerError(raw, "is a hard link to the layer's root");
  return parts;
}

/** What a layer itself has put at one of an entry's parents, when that is not a directory. */
export type OwnParent = "symlink" | "other";

/**
 * The refusal of an entry below a non-directory the same layer put at `parent`; with `linkpath`,
 * of a hard link whose target's parent that is.
 */
export function ownParentError(raw: string, parent: string, own: OwnParent, linkpath?: string): TbuildError {
  const shown = JSON.stringify(parent);
  if (own === "symlink") {
    return new HostileLayerError(
      raw,
      `${linkpath === undefined ? "goes through" : "is a hard link through"} ${shown}, a symbolic link the layer planted`,
    );
  }
  return linkpath === undefined
    ? new InvalidLayerError(raw, `needs ${shown} to be a directory, but the layer made it a file`)
    : hardLinkMissing(raw, linkpath);
}

/** A hard link whose target is not there (or is hidden, or is below a file). */
export function hardLinkMissing(raw: string, linkpath: string): InvalidLayerError {
  return new InvalidLayerError(raw, `is a hard link to ${JSON.stringify(linkpath)}, which does not exist`);
}

/** A hard link to a directory, which no file system holds. */
export function hardLinkToDirectory(raw: string): InvalidLayerError {
  return new InvalidLayerError(raw, "is a hard link to a directory");
}

/** The layer's root (`./`) as anything but a directory. */
export function rootNotDirectory(raw: string): InvalidLayerError {
  return new InvalidLayerError(raw, "makes the layer's root a non-directory");
}
