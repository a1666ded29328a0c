/**
 * The sandbox: one process run the way Docker runs it, in a runc container over a prepared root
 * filesystem: new mount, pid, ipc and uts namespaces (and a network namespace with only loopback
 * for `network: "none"`), Docker's default capabilities, seccomp profile, masked and read-only
 * paths, the image's user and groups, rlimits under the host's hard limits. As real root runc
 * also puts the container in cgroups; inside tbuild's user namespace (rootless) the config is
 * shaped as runc needs it there: no cgroups, and the host's /sys bound read-only when the host's
 * network is shared.
 */

export { DEFAULT_PATH } from "../../oci/spec.js";
export { removeAbandonedRuns } from "./abandoned.js";
export { SandboxError } from "./errors.js";
export { findRunc, type HostFacts, parseHardLimits, probeHost, type RlimitName } from "./host.js";
export { runInSandbox, type SandboxProcess, type SandboxResult, type SandboxRunOptions } from "./run.js";
export { convertSeccompProfile, type DockerSeccompProfile, dockerDefaultSeccompProfile } from "./seccomp.js";
export {
  buildRuntimeSpec,
  DOCKER_DEFAULT_CAPABILITIES,
  DOCKER_MASKED_PATHS,
  DOCKER_READONLY_PATHS,
  type SandboxMount,
  type SandboxRootOverlay,
  type SandboxSpec,
} from "./spec.js";
export { type ResolvedUser, resolveUser } from "./user.js";
