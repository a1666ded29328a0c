/**
 * The BuildGraph: the one contract between the frontend and everything that runs a build. Plain,
 * JSON-serializable data (no classes), so it can be printed, hashed, cached and shipped to a remote
 * worker unchanged. Each vertex produces one filesystem; its digest is the sha256 of the canonical
 * JSON of its op and inputs, so the same step reached from two stages is one vertex.
 */
import type { Platform } from "../oci/platform.js";

/** `sha256:<hex>` of a vertex's canonical JSON. */
export type VertexDigest = string;

export interface Vertex {
  op: Op;
  /** The vertices whose filesystems the op reads, referred to by position from the op. */
  inputs: VertexDigest[];
}

/** What progress output calls a vertex; kept beside the graph so it does not change digests. */
export interface VertexInfo {
  /** `[build 2/4] RUN make` */
  name: string;
  /** The Dockerfile lines the vertex came from, for error excerpts. */
  location?: { file: string; startLine: number; endLine: number };
  /** Lowering-internal helpers (heredoc files, context reads) are shown dimmed or hidden. */
  internal?: boolean;
}

export type Op = ImageOp | LocalOp | ExecOp | FileOp | MergeOp | HttpOp | GitOp;

/** A base image, pinned to the manifest digest the resolver found. */
export interface ImageOp {
  kind: "image";
  /** Normalized reference, e.g. `docker.io/library/busybox:latest`. */
  ref: string;
  /** Manifest digest for `platform`. */
  digest: string;
  platform: Platform;
}

/** The build context (or a named local context), filtered as the build needs it. */
export interface LocalOp {
  kind: "local";
  /** `context`, or the name of a `--build-context`. */
  name: string;
  /** `.dockerignore` patterns, applied before any COPY glob. */
  excludePatterns: string[];
  /** Only these paths (and what is under them) are read; empty means the whole context. */
  followPaths: string[];
}

export type MountType = "bind" | "cache" | "tmpfs" | "secret" | "ssh";

export interface ExecMount {
  type: MountType;
  target: string;
  /** Position in `inputs` of the filesystem to mount (bind, and cache with `from`); absent for scratch. */
  input?: number;
  /** Path inside the input to mount. */
  selector?: string;
  readonly: boolean;
  /** The root mount's changes become the vertex's output; other mounts' writes are discarded. */
  output: boolean;
  cache?: { id: string; sharing: "shared" | "private" | "locked" };
  secret?: { id: string; env?: string; required: boolean };
  ssh?: { id: string; required: boolean };
  tmpfs?: { size?: number };
  uid?: number;
  gid?: number;
  mode?: number;
}

export interface ExecOp {
  kind: "exec";
  args: string[];
  /** `K=V`, in order. */
  env: string[];
  cwd: string;
  /** As written in USER (`name`, `uid`, `name:group`); resolved in the container's passwd at run time. */
  user: string;
  network: "default" | "none" | "host";
  security: "sandbox" | "insecure";
  /** `--build-arg BUILDKIT_SANDBOX_HOSTNAME=NAME`: the step's hostname (absent: the sandbox's own). */
  hostname?: string;
  /** The first mount is always `/`, from input 0 (absent: scratch). */
  mounts: ExecMount[];
  platform: Platform;
}

export interface Chown {
  user: string;
  group?: string;
}

export type FileAction =
  | {
      action: "copy";
      /** Position in `inputs` of the source filesystem. */
      input: number;
      /** Absolute path or glob inside the source. */
      src: string;
      /** Absolute destination; a trailing `/` means "into this directory". */
      dest: string;
      chown?: Chown;
      /** Octal mode as written in `--chmod`, or symbolic (`u+x`) as BuildKit accepts. */
      chmod?: string;
      followSymlinks: boolean;
      copyDirContentsOnly: boolean;
      /** ADD: unpack local tar archives into dest. */
      attemptUnpack: boolean;
      createDestPath: boolean;
      allowWildcard: boolean;
      allowEmptyWildcard: boolean;
      /** `--parents`: keep the source's directories below the pivot (`/./`). */
      includePatterns: string[];
      /** `--parents` of a path without wildcards: it must exist in the source (BuildKit's RequiredPaths). */
      requiredPaths?: string[];
      excludePatterns: string[];
    }
  | { action: "mkfile"; path: string; data: string; mode: number; chown?: Chown }
  | { action: "mkdir"; path: string; mode: number; makeParents: boolean; chown?: Chown }
  | { action: "rm"; path: string; allowNotFound: boolean; allowWildcard: boolean };

/** Actions applied in order onto `base` (an input position; absent: an empty filesystem). */
export interface FileOp {
  kind: "file";
  base?: number;
  actions: FileAction[];
  platform: Platform;
}

/** Stack the inputs' layers in order (`COPY --link`): no input is copied into another. */
export interface MergeOp {
  kind: "merge";
}

export interface HttpOp {
  kind: "http";
  url: string;
  /** The file name it is saved as: the URL's last path segment. */
  filename: string;
  /** `--checksum=sha256:...`: the download must match. */
  checksum?: string;
}

export interface GitOp {
  kind: "git";
  remote: string;
  ref?: string;
  subdir?: string;
  keepGitDir: boolean;
}

export interface BuildGraph {
  /** Every vertex by digest, in an order where inputs come before the vertices that use them. */
  vertices: Record<VertexDigest, Vertex>;
  info: Record<VertexDigest, VertexInfo>;
}
