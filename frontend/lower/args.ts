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
 * The environment RUN steps get from proxy build args, as BuildKit's ProxyEnv: `http_proxy`,
 * `https_proxy`, `ftp_proxy`, `no_proxy` and `all_proxy`, given in either case, each set in both
 * cases. It stays out of the build graph, so that a changed proxy never re-runs a step.
 */
export function proxyEnv(buildArgs: Record<string, string>): string[] {
  const values = new Map<string, string>();
  // Sorted as BuildKit reads them: given both ways, the lowercase name wins.
  for (const key of Object.keys(buildArgs).sort()) {
    if (PROXY_ARGS.has(key)) values.set(key.toUpperCase(), buildArgs[key]!);
  }
  return [...values].flatMap(([name, value]) => [`${name}=${value}`, `${name.toLowerCase()}=${value}`]);
}

/**
 * The automatic ARGs, in the global scope: usable in FROM lines directly, and inside a stage once
 * redeclared without a value (`ARG TARGETARCH`). TARGETSTAGE is the stage being built: `--target`,
 * else the last stage's name, else `default`, as in BuildKit.
 */
export function automaticArgs(
  buildPlatform: Platform,
  targetPlatform: Platform,
  targetStage: string,
): [string, string][] {
  return [
    ["BUILDPLATFORM", formatPlatform(buildPlatform)],
    ["BUILDOS", buildPlatform.os],
    ["BUILDARCH", buildPlatform.architecture],
    ["BUILDVARIANT", buildPlatform.variant ?? ""],
    ["TARGETPLATFORM", formatPlatform(targetPlatform)],
    ["TARGETOS", targetPlatform.os],
    ["TARGETARCH", targetPlatform.architecture],
    ["TARGETVARIANT", targetPlatform.variant ?? ""],
    ["TARGETSTAGE", targetStage],
  ];
}

export const AUTOMATIC_ARG_NAMES = new Set(
  automaticArgs({ os: "", architecture: "" }, { os: "", architecture: "" }, "").map(([k]) => k),
);
