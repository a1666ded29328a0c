/**
 * The OCI vocabulary, spelled as in the specs: image-spec 1.1 (descriptor, manifest, index,
 * config, layout), Docker's schema2 media types and config extensions (`Healthcheck`, `OnBuild`,
 * `Shell`, `ArgsEscaped`), distribution error bodies, and the runtime-spec `config.json` types.
 */
import type { Platform } from "./platform.js";

/**
 * Docker's PATH for a process whose environment sets none (BuildKit's DefaultPathEnvUnix): the
 * sandbox adds it when a step runs, and a stage's image config gets it when its base has none.
 */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export const MediaType = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ociEmpty: "application/vnd.oci.empty.v1+json",
  /** An attestation's blob: an in-toto statement (BuildKit's attestation storage), never unpacked. */
  inToto: "application/vnd.in-toto+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

export const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";
export const ANNOTATION_CREATED = "org.opencontainers.image.created";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  data?: string;
  platform?: Platform;
  artifactType?: string;
}

export interface Manifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface Index {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** The `oci-layout` file of an image layout. */
export interface ImageLayout {
  imageLayoutVersion: "1.0.0";
}

/** A registry's error body (distribution spec). */
export interface DistributionErrors {
  errors?: { code: string; message?: string; detail?: unknown }[];
}

export function isIndexMediaType(mediaType: string | undefined): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerManifestList;
}

export function isManifestMediaType(mediaType: string | undefined): boolean {
  return mediaType === MediaType.ociManifest || mediaType === MediaType.dockerManifest;
}

export interface HealthConfig {
  /** `["NONE"]`, `["CMD", ...argv]` or `["CMD-SHELL", command]`. */
  Test: string[];
  /** Nanoseconds; 0 or absent means inherit. */
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, Record<string, never>>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  ArgsEscaped?: boolean;
  Healthcheck?: HealthConfig;
  OnBuild?: string[] | null;
  Shell?: string[];
}

export interface History {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  "os.version"?: string;
  "os.features"?: string[];
  variant?: string;
  config: ContainerConfig;
  rootfs: { type: "layers"; diff_ids: string[] };
  history?: History[];
}

/** OCI runtime-spec `config.json`: the part tbuild's sandbox writes for runc. */
export interface RuntimeSpec {
  ociVersion: string;
  process?: RuntimeProcess;
  root?: { path: string; readonly?: boolean };
  hostname?: string;
  mounts?: RuntimeMount[];
  annotations?: Record<string, string>;
  linux?: RuntimeLinux;
}

export interface RuntimeProcess {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user: { uid: number; gid: number; umask?: number; additionalGids?: number[] };
  args: string[];
  env?: string[];
  cwd: string;
  capabilities?: {
    bounding?: string[];
    effective?: string[];
    inheritable?: string[];
    permitted?: string[];
    ambient?: string[];
  };
  rlimits?: { type: string; hard: number; soft: number }[];
  noNewPrivileges?: boolean;
  apparmorProfile?: string;
  oomScoreAdj?: number;
  selinuxLabel?: string;
}

export interface RuntimeMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
  uidMappings?: RuntimeIdMapping[];
  gidMappings?: RuntimeIdMapping[];
}

export interface RuntimeIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface RuntimeLinux {
  uidMappings?: RuntimeIdMapping[];
  gidMappings?: RuntimeIdMapping[];
  sysctl?: Record<string, string>;
  resources?: Record<string, unknown>;
  cgroupsPath?: string;
  namespaces?: {
    type: "pid" | "network" | "mount" | "ipc" | "uts" | "user" | "cgroup" | "time";
    path?: string;
  }[];
  devices?: {
    path: string;
    type: string;
    major?: number;
    minor?: number;
    fileMode?: number;
    uid?: number;
    gid?: number;
  }[];
  seccomp?: RuntimeSeccomp;
  rootfsPropagation?: string;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
}

export interface RuntimeSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  syscalls?: {
    names: string[];
    action: string;
    errnoRet?: number;
    args?: { index: number; value: number; valueTwo?: number; op: string }[];
  }[];
}
