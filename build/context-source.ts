/**
 * What kind of source a `--build-context NAME=SRC` names, as buildx reads it: an image
 * (`docker-image://REF`), an image in an OCI layout directory (`oci-layout://DIR[:TAG]`), some
 * other URL, or a directory. Read by the local build (contexts.ts) and by a remote build's client,
 * which syncs directories to the worker and passes the rest on.
 */
import { UsageError } from "../errors/index.js";

export type ContextSource =
  | { kind: "image"; ref: string }
  | { kind: "oci-layout"; layout: string }
  | { kind: "url" }
  | { kind: "directory"; path: string };

export function contextSource(name: string, source: string): ContextSource {
  if (name === "" || source === "")
    throw new UsageError(
      `--build-context "${name}=${source}" must be NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://DIR`,
    );
  // The build's own context is the local source `context`: a named one may not shadow it.
  if (name === "context")
    throw new UsageError(`--build-context cannot be named "context": choose another name`);
  if (source.startsWith("docker-image://"))
    return { kind: "image", ref: source.slice("docker-image://".length) };
  if (source.startsWith("oci-layout://"))
    return { kind: "oci-layout", layout: source.slice("oci-layout://".length) };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source)) return { kind: "url" };
  return { kind: "directory", path: source };
}
