/**
 * The minimal runtime behind `tbuild run`, `ps`, `rm` and `commit`: a container is an image's
 * unpacked layers (the worker's snapshots, shared with builds) under a writable overlay, one
 * process in the worker's sandbox (runc), and a record in the store (`<storeRoot>/containers/ID/`)
 * kept until `rm` unless it ran with `--rm`. Named volumes live in `<storeRoot>/volumes/NAME/_data`.
 * Everything that touches snapshots needs worker privileges: root, or tbuild's user namespace.
 */
export { type CommitOptions, type CommittedImage, commitContainer } from "./commit.js";
export {
  containerConfig,
  mergeEnv,
  NoCommandError,
  parseEnvFile,
  parseEnvFlags,
  processArgs,
  type RunRequest,
} from "./config.js";
export {
  Container,
  type ContainerExit,
  type ContainerIO,
  type ContainerOptions,
  ContainerRunningError,
  ContainerStartError,
  removeContainer,
} from "./container.js";
export {
  ContainerNameInUseError,
  ContainerNotFoundError,
  type ContainerRecord,
  type ContainerState,
  type ContainerStatus,
  ContainerStore,
  currentState,
} from "./containers.js";
export { findInit, INIT_MOUNT, InitNotFoundError } from "./init.js";
export {
  DEFAULT_LOG_OPTIONS,
  followLog,
  type LogEntry,
  type LogOptions,
  type LogStream,
  LogWriter,
  parseLogOptions,
  readLog,
} from "./logs.js";
export { type MountRequest, parseVolumeFlag } from "./mounts.js";
export { VolumeStore } from "./volumes.js";
