import { UsageError } from "../errors/index.js";
import type { ExecOp } from "../solver/graph.js";

/** The values of `tbuild build --network` (and `debug graph`'s), as docker buildx takes them. */
export const BUILD_NETWORK_MODES = ["default", "none", "host"] as const;

/**
 * `--network default|none|host`: the network of every RUN without its own `--network`. `default`
 * and `host` share the host's network (BuildKit's OCI worker without CNI); `none` is loopback only.
 */
export function parseBuildNetwork(value: string | undefined): ExecOp["network"] {
  if (value === undefined) return "default";
  const mode = BUILD_NETWORK_MODES.find((m) => m === value);
  if (!mode) {
    throw new UsageError(
      `--network must be default, none or host, not "${value}" (bridges and named networks are not supported)`,
    );
  }
  return mode;
}
