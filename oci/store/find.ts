/**
 * Images found by what a user types: a name (`busybox`, normalized), or an image ID as `tbuild
 * images` shows it (a digest, or a unique prefix of its hex).
 */
import { TbuildError } from "../../errors/index.js";
import { InvalidReferenceError, parseReference, repositoryName } from "../reference.js";
import { ImageNotFoundError, type ImageRecord, normalizeImageName } from "./images.js";
import type { Store } from "./index.js";

const ID_PREFIX = /^(?:sha256:)?([a-f0-9]{4,64})$/;

/** The 12 hex digits of a digest, as `tbuild images` shows an image ID. */
export function shortId(digest: string): string {
  return digest.slice(digest.indexOf(":") + 1, digest.indexOf(":") + 13);
}

/**
 * The images `text` names: the one image of that name, or every name of the image whose ID
 * (descriptor digest) `text` is or begins with. Throws ImageNotFoundError, or
 * InvalidReferenceError when `text` is neither a valid name nor an ID.
 */
export async function findLocalImages(store: Store, text: string): Promise<ImageRecord[]> {
  let nameError: InvalidReferenceError | undefined;
  try {
    const record = await store.images.get(text);
    if (record !== undefined) {
      const stored = await store.images.list();
      if (stored.some((r) => r.name === record.name)) return [record];
      // `name@digest` found by digest: the names it is stored under, in that repository.
      const repository = repositoryName(parseReference(record.name));
      return stored.filter(
        (r) =>
          r.descriptor.digest === record.descriptor.digest &&
          repositoryName(parseReference(r.name)) === repository,
      );
    }
  } catch (err) {
    if (!(err instanceof InvalidReferenceError)) throw err;
    nameError = err;
  }
  const id = ID_PREFIX.exec(text)?.[1];
  if (id !== undefined) {
    const records = await store.images.list();
    const matches = records.filter((r) => r.descriptor.digest.startsWith(`sha256:${id}`));
    const digests = new Set(matches.map((r) => r.descriptor.digest));
    if (digests.size > 1) {
      throw new TbuildError(
        "E_AMBIGUOUS_ID",
        `image ID ${text} is the start of several images' IDs (${[...digests].map(shortId).join(", ")}): give more of it`,
      );
    }
    if (matches.length > 0) return matches;
  }
  if (nameError !== undefined) throw nameError;
  throw new ImageNotFoundError(normalizeImageName(text));
}

/** The one image `text` names; an ID shared by several names gives the first (they are one image). */
export async function findLocalImage(store: Store, text: string): Promise<ImageRecord> {
  return (await findLocalImages(store, text))[0]!;
}
