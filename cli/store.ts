/**
 * The store as commands use it: opened from the environment (`$TBUILD_ROOT`, `$XDG_DATA_HOME`,
 * `~/.local/share`), and images found by what a user types: a name (`busybox`, normalized), or an
 * image ID as `tbuild images` shows it (a digest, or a unique prefix of its hex).
 */
import { defaultStoreRoot, openStore, type Store } from "../oci/store/index.js";

export { findLocalImage, findLocalImages, shortId } from "../oci/store/find.js";

/** Opens (creating on first use) the store this command's environment names. */
export function openCommandStore(ctx: { env: NodeJS.ProcessEnv }): Promise<Store> {
  return openStore(defaultStoreRoot(ctx.env));
}

/** Sizes as docker prints them: powers of 1000, three significant digits (`4.26MB`). */
export function formatSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const shown = unit === 0 ? String(value) : String(Number(value.toPrecision(3)));
  return `${shown}${units[unit]}`;
}

/** `5 minutes ago`, as docker's CREATED column reads. */
export function timeAgo(created: string | number): string {
  const seconds = Math.max(
    0,
    (Date.now() - (typeof created === "number" ? created : Date.parse(created))) / 1000,
  );
  if (Number.isNaN(seconds)) return "N/A";
  const units: [number, string][] = [
    [365 * 86400, "year"],
    [30 * 86400, "month"],
    [7 * 86400, "week"],
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
  ];
  for (const [size, unit] of units) {
    const n = Math.floor(seconds / size);
    if (n >= 1) return `${n} ${unit}${n > 1 ? "s" : ""} ago`;
  }
  return "Less than a minute ago";
}
