/**
 * Images made for registry tests, written straight into a store: layers of gzipped random bytes
 * (a registry never looks inside the gzip), a config with the platform, an OCI or Docker schema2 manifest,
 * and optionally an index over several platforms.
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { Header } from "tar";
import type { Platform } from "../../../oci/platform.js";
import {
  type Descriptor,
  type ImageConfig,
  type Index,
  type Manifest,
  MediaType,
} from "../../../oci/spec.js";
import { openStore, type Store } from "../../../oci/store/index.js";
import { projectRoot, tbuildBin } from "../../helpers/cli.js";
import { tempDirs } from "../../helpers/temp.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

export interface MadeImage {
  descriptor: Descriptor;
  manifest: Manifest;
  bytes: Buffer;
}

export interface ImageShape {
  layers?: number;
  layerBytes?: number;
  platform?: Platform;
  format?: "oci" | "docker";
  /** Reuse these layer blobs (already in the store) before the random ones. */
  baseLayers?: Descriptor[];
}

export async function tempStore(): Promise<Store> {
  return await openStore(tempDir("store"));
}

/** Writes a manifest and its blobs into the store without naming it. */
export async function makeManifest(store: Store, shape: ImageShape = {}): Promise<MadeImage> {
  const platform = shape.platform ?? { os: "linux", architecture: "amd64" };
  const docker = shape.format === "docker";
  const layers: Descriptor[] = [...(shape.baseLayers ?? [])];
  // Base layers are the caller's; their diff_ids do not matter to a registry, nor to a pull that has them.
  const diffIds = layers.map(() => `sha256:${randomBytes(32).toString("hex")}`);
  for (let i = 0; i < (shape.layers ?? 2); i++) {
    // A real tar in real gzip: skopeo would compress anything else it is told is tar+gzip, and a
    // pull checks that a layer uncompresses to its diff_id.
    const tar = randomFileTar(shape.layerBytes ?? 64 * 1024);
    const data = gzipSync(tar, { level: 1 });
    const { digest, size } = await store.content.writeBytes(data);
    layers.push({ mediaType: docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip, digest, size });
    diffIds.push(`sha256:${createHash("sha256").update(tar).digest("hex")}`);
  }
  const config: ImageConfig = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Cmd: ["sh"] },
    rootfs: { type: "layers", diff_ids: diffIds },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configWritten = await store.content.writeBytes(configBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
    config: { mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig, ...configWritten },
    layers,
  };
  // Indented on purpose: a registry or client that re-serializes would change the digest.
  const bytes = Buffer.from(JSON.stringify(manifest, null, 3));
  const written = await store.content.writeBytes(bytes);
  return { descriptor: { mediaType: manifest.mediaType!, ...written }, manifest, bytes };
}

/** A tar of one file of `bytes` random bytes. */
function randomFileTar(bytes: number): Buffer {
  const header = Buffer.alloc(512);
  new Header({ path: "data", type: "File", size: bytes, mode: 0o644, mtime: new Date(0) }).encode(header);
  return Buffer.concat([
    header,
    randomBytes(bytes),
    Buffer.alloc((512 - (bytes % 512)) % 512),
    Buffer.alloc(1024),
  ]);
}

/** A named single-platform image. */
export async function makeImage(store: Store, name: string, shape: ImageShape = {}): Promise<MadeImage> {
  const made = await makeManifest(store, shape);
  await store.images.put(name, made.descriptor);
  return made;
}

/** A named OCI index over one image per platform. */
export async function makeIndex(
  store: Store,
  name: string,
  platforms: Platform[],
): Promise<{ descriptor: Descriptor; children: MadeImage[] }> {
  const children: MadeImage[] = [];
  for (const platform of platforms) children.push(await makeManifest(store, { platform, layers: 1 }));
  const index: Index = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: children.map((c, i) => ({ ...c.descriptor, platform: platforms[i]! })),
  };
  const written = await store.content.writeBytes(Buffer.from(JSON.stringify(index)));
  const descriptor = { mediaType: MediaType.ociIndex, ...written };
  await store.images.put(name, descriptor);
  return { descriptor, children };
}

export function skopeo(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync("skopeo", args, {
    encoding: "utf8",
    env: { ...process.env, ...env },
    cwd: projectRoot,
    timeout: 120_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Environment for `bin/tbuild` runs with their own store, config.toml (with `config`) and docker config. */
export function isolatedEnv(config = "", overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const dir = tempDir("env");
  writeFileSync(path.join(dir, "config.toml"), config);
  return {
    TBUILD_ROOT: path.join(dir, "store"),
    TBUILD_CONFIG: path.join(dir, "config.toml"),
    DOCKER_CONFIG: path.join(dir, "docker"),
    XDG_RUNTIME_DIR: path.join(dir, "run"),
    ...overrides,
  };
}

const TBUILD_TIMEOUT_MS = 45_000;

/**
 * Runs `bin/tbuild` without blocking this process: needed whenever a server in this process (the
 * faulty proxy, the token server) must answer it.
 */
export function tbuildAsync(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string } = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(tbuildBin, args, {
      cwd: projectRoot,
      env: { ...process.env, ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    // A hung tbuild fails its test with what it printed, and is not left running.
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${TBUILD_TIMEOUT_MS / 1000} s: ${args.join(" ")}]`;
      child.kill("SIGKILL");
    }, TBUILD_TIMEOUT_MS);
    child.once("error", reject);
    child.once("close", (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(options.input ?? "");
  });
}
