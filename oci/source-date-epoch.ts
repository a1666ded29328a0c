/**
 * `SOURCE_DATE_EPOCH` (reproducible-builds.org): whole seconds since 1970 that a build, `import`
 * and `commit` write as the image's `created` (and clamp new layers' times to) instead of now, as
 * BuildKit honours it. Read and checked here only, so that every command takes and refuses the
 * same values with the same words.
 */
import { UsageError } from "../errors/index.js";

/** The seconds `text` gives; undefined when it is absent or empty (unset, as BuildKit reads it). */
export function parseSourceDateEpoch(text: string | undefined): number | undefined {
  if (text === undefined || text === "") return undefined;
  if (!/^\d+$/.test(text)) throw badEpoch(JSON.stringify(text));
  return checkSourceDateEpoch(Number(text));
}

/** `epoch` itself, when it is a whole number of seconds a date can hold. */
export function checkSourceDateEpoch(epoch: number): number {
  // Beyond this, Date cannot represent the time (and a layer's tar header could not hold it).
  if (!Number.isSafeInteger(epoch) || epoch < 0 || epoch > 8_640_000_000_000) throw badEpoch(String(epoch));
  return epoch;
}

/** RFC 3339 in whole seconds, as Go writes a time without fractions: the epoch's, else `now`. */
export function creationTime(epoch: number | undefined, now: Date = new Date()): string {
  const date = epoch !== undefined ? new Date(checkSourceDateEpoch(epoch) * 1000) : now;
  return date.toISOString().replace(/\.\d+Z$/, "Z");
}

function badEpoch(shown: string): UsageError {
  return new UsageError(`SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, not ${shown}`);
}
