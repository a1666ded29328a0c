import { formatPlatform, type Platform } from "../../oci/platform.js";

/** Build args every Dockerfile may use without declaring them; kept out of the image history. */
export const PROXY_ARGS = new Set([
  "HTTP_PROXY",
  "http_proxy",
  "HTTPS_PROXY",
  "https_proxy",
  "FTP_PROXY",
  "ftp_proxy",
  "NO_PROXY",
  "no_proxy",
  "ALL_PROXY",
  "all_proxy",
]);

/**
 * The automatic platform ARGs, in the global scope: usable in FROM lines directly, and inside a
 * stage once redeclared without a value (`ARG TARGETARCH`).
 */
export function platformArgs(buildPlatform: Platform, targetPlatform: Platform): [string, string][] {
  return [
    ["BUILDPLATFORM", formatPlatform(buildPlatform)],
    ["BUILDOS", buildPlatform.os],
    ["BUILDARCH", buildPlatform.architecture],
    ["BUILDVARIANT", buildPlatform.variant ?? ""],
    ["TARGETPLATFORM", formatPlatform(targetPlatform)],
    ["TARGETOS", targetPlatform.os],
    ["TARGETARCH", targetPlatform.architecture],
    ["TARGETVARIANT", targetPlatform.variant ?? ""],
  ];
}

export const PLATFORM_ARG_NAMES = new Set(
  platformArgs({ os: "", architecture: "" }, { os: "", architecture: "" }).map(([k]) => k),
);
