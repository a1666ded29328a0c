/**
 * The worker: what runs a build step on this machine. Rootless ids (a user namespace over the
 * user's subordinate ids), layers unpacked into snapshots, writable overlay mounts over them, and
 * diffs of those mounts back into layer tars.
 */
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
