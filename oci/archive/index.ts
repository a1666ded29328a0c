/**
 * Where images live outside the store, as adapters: OCI archives and docker archives (written from
 * an `Image`, read into a content store), and root filesystems (a directory or a tar) imported as
 * one-layer images. `tar.ts` is the deterministic tar writer they share.
 */
export { type DockerArchiveImage, type DockerArchiveManifestEntry, dockerArchive } from "./docker-archive.js";
export { ArchiveError, type LoadedArchive, type LoadedImage, layoutImages, loadArchive } from "./load.js";
export { ANNOTATION_CONTAINERD_NAME, type ArchiveImage, archiveIndex, ociArchive } from "./oci-archive.js";
export {
  detectCompression,
  type ImportedImage,
  type ImportOptions,
  importRootfs,
  openTarArchive,
  packDirectory,
  RootfsError,
  type RootfsSource,
} from "./rootfs.js";
export { encodeTarHeader, TAR_END, type TarEntry, type TarEntryType, tarEntry } from "./tar.js";
