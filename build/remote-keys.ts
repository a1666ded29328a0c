/**
 * How a client and its workers name what a remote build is of: the client's context (the key of
 * its synced copy on a worker) and the Dockerfile (a pool's scheduler asks each worker for the
 * cache of that pair). Both halves use them; the client loads nothing of the builder for them.
 */
import { createHash } from "node:crypto";
import { digestOf } from "../oci/store/content.js";

/** How a pool's scheduler and a worker name a build's Dockerfile: the digest of its bytes. */
export function dockerfileDigest(source: Buffer): string {
  return digestOf(source);
}

/**
 * The key a client names its context by: its host, user and the context's path there; a named
 * context (`--build-context NAME=DIR`) by its name too, as its own `.dockerignore` may select
 * other files of the same directory than the build context's.
 */
export function contextKey(host: string, user: string, dir: string, named?: string): string {
  return createHash("sha256")
    .update(JSON.stringify(named === undefined ? [host, user, dir] : [host, user, dir, named]))
    .digest("hex")
    .slice(0, 32);
}
