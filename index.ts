/**
 * tbuild as a library: build, pull, push and run images from Node, with the store, config and
 * credentials the CLI uses (docs/api.md shows each entry point). The CLI is this library's first
 * user: its `build`, `pull`, `push` and `run` commands call these functions.
 *
 * Events are the objects `tbuild build --progress=rawjson` prints (BuildEvent); errors are
 * TbuildError subclasses, each with a stable `code` (docs/errors.md).
 */
export { type BuildOptions, build } from "./api/build.js";
export { BuildCanceledError } from "./api/errors.js";
export { type PullResult, type PushResult, pull, push, type RegistryCallOptions } from "./api/registry.js";
export { type RunOptions, type RunResult, run } from "./api/run.js";
export { Store, type StoredImage } from "./api/store.js";
export type { BuildEvent, BuildSummary } from "./build/events.js";
export { BuildStepFailedError, type StepFailure } from "./build/failure.js";
export type { BuildRequest, SecretRequest, SshRequest } from "./build/request.js";
export { BadBuildRequestError } from "./build/request.js";
export type { BuildResult } from "./build/run.js";
export { TbuildError, UsageError } from "./errors/index.js";
