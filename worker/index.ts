/**
 * The worker: what runs a build step on this machine. Rootless ids (a user namespace over the
 * user's subordinate ids), layers unpacked into snapshots, writable overlay mounts over them, and
 * diffs of those mounts back into layer tars.
 */

export { InvalidTarError, readTarEntries, type TarReadEntry } from "../oci/archive/tar-reader.js";
export { copyChanges, type DiffOptions, overlayChanges, writeChanges } from "./diff.js";
export {
  chainIds,
  isMountPoint,
  isWhiteout,
  type LowerEntry,
  LowerView,
  MountError,
  type SnapshotMode,
  Snapshotter,
  type SnapshotterOptions,
  type WritableMount,
} from "./snapshot/index.js";
export { HostileLayerError, InvalidLayerError, type UnpackOptions, unpackLayer } from "./unpack.js";
export {
  checkRootlessSetup,
  hasWorkerPrivileges,
  type IdMapping,
  inUserNamespace,
  parseSubordinateIds,
  type RootlessPiece,
  RootlessSetupError,
  readGidMap,
  readUidMap,
  reexecInUserNamespace,
  type SubordinateRange,
} from "./userns.js";
