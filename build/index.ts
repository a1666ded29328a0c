/**
 * build/: a BuildRequest (plain data, from CLI flags or the library) → a plan (planBuild: the
 * BuildGraph and the image config) → a run (runBuild: solve on the local worker, export), told as
 * BuildEvents. What the CLI's `build` and `debug graph` and the library's `build()` share, so
 * that they cannot drift apart; BuildKit's control/ with buildx's build/.
 */
export { loadConfig, registryOptions, type TbuildConfig } from "./config.js";
export { readRequestDockerfile } from "./dockerfile.js";
export { type BuildEvent, type BuildSummary, internalStepId } from "./events.js";
export type { StepFailure } from "./failure.js";
export { type BuildPlan, type PlanContext, planBuild } from "./plan.js";
export {
  type BuildRequest,
  checkBuildRequest,
  type SecretRequest,
  type SshRequest,
  targetPlatformOf,
} from "./request.js";
export { type BuildResult, epochOf, type RunContext, runBuild } from "./run.js";
