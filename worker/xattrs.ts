/**
 * Extended attributes, which tbuild does not keep yet (README, "Not supported yet"; docs/compat.md,
 * `xattrs-not-kept`): a context file's `user.*` attribute, or the `security.capability` a RUN
 * step's `setcap` set, does not reach the layer. BuildKit keeps them. Until tbuild does, it says
 * so: the context's source layer and every layer the differ writes check each entry, and one
 * warning per layer names how many carried attributes and one example.
 *
 * Node has no calls for extended attributes; `@napi-rs/xattr` (prebuilt N-API binaries) lists
 * them, about 5 µs an entry. Where it cannot load (a platform without a binary), nothing can be
 * checked and nothing is said.
 */
import { createRequire } from "node:module";

type ListAttributes = (path: string) => string[];

let lister: ListAttributes | null | undefined;

function listAttributes(): ListAttributes | null {
  if (lister === undefined) {
    try {
      const xattr = createRequire(import.meta.url)("@napi-rs/xattr") as {
        listAttributesSync: ListAttributes;
      };
      lister = xattr.listAttributesSync;
    } catch {
      lister = null;
    }
  }
  return lister;
}

/**
 * Overlayfs's own bookkeeping in an upper directory (`trusted.overlay.*` as root,
 * `user.overlay.*` with `userxattr` in a user namespace): never an image's content.
 */
function ofTheImage(name: string): boolean {
  return !name.startsWith("trusted.overlay.") && !name.startsWith("user.overlay.");
}

/** The entries of one layer that carried extended attributes a layer would have kept. */
export class DroppedXattrs {
  private count = 0;
  private example = "";

  /** Checks `file` itself (a symbolic link's own attributes, not its target's), shown as `rel`. */
  check(file: string, rel: string): void {
    const list = listAttributes();
    if (list === null) return;
    let names: string[];
    try {
      names = list(file).filter(ofTheImage);
    } catch {
      return; // Gone, or a file system without them: nothing was dropped that could be told.
    }
    if (names.length === 0) return;
    this.count++;
    this.example ||= `${names.join(", ")} on ${rel}`;
  }

  /** The warning for what was checked, `where` naming the layer; undefined when nothing was dropped. */
  warning(where: string): string | undefined {
    if (this.count === 0) return undefined;
    const entries = this.count === 1 ? "1 entry" : `${this.count} entries`;
    return `extended attributes left out of ${where}: ${entries} carried them (${this.example}); tbuild does not keep extended attributes yet`;
  }
}
