/**
 * Volumes, kept in the store as docker keeps them: `<storeRoot>/volumes/<NAME>/_data`, bind
 * mounted into containers, with docker's metadata beside it in `volume.json` (created time, labels;
 * an anonymous volume carries docker's `com.docker.volume.anonymous` label). A volume is made on
 * first use; while it is empty, mounting it over a path the image has content at copies that
 * content in first (docker's "copy on mount"), owners and modes kept, so `-v data:/etc/app` starts
 * from the image's `/etc/app`. Volumes made before the metadata existed have none: their creation
 * time is their directory's, and a 64-hex name (what tbuild gives anonymous volumes) is anonymous.
 *
 * Every name is checked against docker's rule before it becomes a path, so no name reaches outside
 * `volumes/`.
 */
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { lstat, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import { rootPath } from "../worker/root-path.js";
import type { ContainerRecord } from "./containers.js";

/** Docker's rule for volume names: no `/`, no leading `.`, so never a path outside `volumes/`. */
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** The label docker (23 and later) gives anonymous volumes; `volume prune` without -a takes only these. */
export const ANONYMOUS_LABEL = "com.docker.volume.anonymous";

export function isVolumeName(name: string): boolean {
  return VOLUME_NAME.test(name);
}

export class InvalidVolumeNameError extends UsageError {
  constructor(name: string) {
    super(
      `${JSON.stringify(name)} is not a valid volume name: use [a-zA-Z0-9][a-zA-Z0-9_.-]+ (letters, digits, '_', '.', '-', two characters or more)`,
    );
  }
}

export class VolumeNotFoundError extends TbuildError {
  constructor(name: string) {
    super("E_VOLUME_UNKNOWN", `no volume ${name} in the store: 'tbuild volume ls' lists them`);
  }
}

/** A volume any container (running or stopped) mounts is not removed: docker's refusal, naming them. */
export class VolumeInUseError extends TbuildError {
  constructor(name: string, users: readonly ContainerRecord[]) {
    const named = users.map((c) => `${c.id.slice(0, 12)} (${c.name})`).join(", ");
    super(
      "E_VOLUME_IN_USE",
      `remove ${name}: volume is in use - [${named}]: remove the container${users.length === 1 ? "" : "s"} first (tbuild rm ${users.map((c) => c.name).join(" ")})`,
    );
  }
}

/** What `volume inspect` shows of a volume, in docker's field names. */
export interface VolumeInfo {
  CreatedAt: string;
  Driver: "local";
  Labels: Record<string, string>;
  Mountpoint: string;
  Name: string;
  Options: Record<string, string>;
  Scope: "local";
}

interface VolumeMetadata {
  CreatedAt: string;
  Labels: Record<string, string>;
}

export class VolumeStore {
  readonly dir: string;

  constructor(storeRoot: string) {
    this.dir = path.join(storeRoot, "volumes");
  }

  private volumeDir(name: string): string {
    if (!isVolumeName(name)) throw new InvalidVolumeNameError(name);
    return path.join(this.dir, name);
  }

  dataDir(name: string): string {
    return path.join(this.volumeDir(name), "_data");
  }

  /**
   * The volume's data directory, made (with its metadata) if missing; `empty` says whether it
   * holds nothing yet.
   */
  async open(
    name: string,
    options: { anonymous?: boolean } = {},
  ): Promise<{ dataDir: string; empty: boolean }> {
    this.make(name, options.anonymous ? { [ANONYMOUS_LABEL]: "" } : {});
    const dataDir = this.dataDir(name);
    await mkdir(dataDir, { recursive: true, mode: 0o755 });
    return { dataDir, empty: (await readdir(dataDir)).length === 0 };
  }

  /**
   * `volume create`: a new volume with `labels`; one of that name already there is kept as it is
   * (docker's answer too). Returns whether it was made now.
   */
  async create(name: string, labels: Record<string, string> = {}): Promise<boolean> {
    const made = this.make(name, labels);
    await mkdir(this.dataDir(name), { recursive: true, mode: 0o755 });
    return made;
  }

  /** Makes the volume's directory and metadata unless it exists; whether it made them. */
  private make(name: string, labels: Record<string, string>): boolean {
    const dir = this.volumeDir(name);
    // Synchronous: a few small calls on every `tbuild run` with a volume.
    mkdirSync(this.dir, { recursive: true });
    try {
      mkdirSync(dir, { mode: 0o755 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    }
    const metadata: VolumeMetadata = { CreatedAt: rfc3339Seconds(new Date()), Labels: labels };
    writeFileSync(path.join(dir, "volume.json"), `${JSON.stringify(metadata, null, 2)}\n`);
    return true;
  }

  /** The volume `name` as `volume inspect` shows it, or undefined when there is none. */
  async inspect(name: string): Promise<VolumeInfo | undefined> {
    const dir = this.volumeDir(name);
    const info = await stat(dir).catch(() => undefined);
    if (!info?.isDirectory()) return undefined;
    let metadata: Partial<VolumeMetadata> = {};
    try {
      metadata = JSON.parse(await readFile(path.join(dir, "volume.json"), "utf8"));
    } catch {
      // A volume made before tbuild kept metadata (or one being made): what its directory says.
    }
    const labels = metadata.Labels ?? (/^[a-f0-9]{64}$/.test(name) ? { [ANONYMOUS_LABEL]: "" } : {});
    return {
      CreatedAt: metadata.CreatedAt ?? rfc3339Seconds(info.birthtime),
      Driver: "local",
      Labels: labels,
      Mountpoint: path.join(dir, "_data"),
      Name: name,
      Options: {},
      Scope: "local",
    };
  }

  /** Every volume in the store, by name. */
  async list(): Promise<VolumeInfo[]> {
    const names = await readdir(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [] as string[];
      throw err;
    });
    const volumes: VolumeInfo[] = [];
    for (const name of names.filter(isVolumeName).sort()) {
      const volume = await this.inspect(name);
      if (volume !== undefined) volumes.push(volume);
    }
    return volumes;
  }

  async remove(name: string): Promise<void> {
    await rm(this.volumeDir(name), { recursive: true, force: true });
  }
}

/** Docker's CreatedAt: RFC 3339 to the second. */
function rfc3339Seconds(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, "Z");
}

export function isAnonymous(volume: VolumeInfo): boolean {
  return ANONYMOUS_LABEL in volume.Labels;
}

/** The containers (running or stopped) that mount each volume, by volume name. */
export function volumeUsers(containers: readonly ContainerRecord[]): Map<string, ContainerRecord[]> {
  const users = new Map<string, ContainerRecord[]>();
  for (const container of containers) {
    for (const mount of container.mounts) {
      if (mount.kind !== "volume") continue;
      const list = users.get(mount.name) ?? [];
      if (!list.includes(container)) list.push(container);
      users.set(mount.name, list);
    }
  }
  return users;
}

/**
 * Copies what the image has at `containerPath` (inside `rootfs`) into an empty volume, the
 * directory's own owner and mode included. Nothing to copy when the image has no directory there.
 */
export async function seedVolume(
  rootfs: string,
  containerPath: string,
  dataDir: string,
  signal?: AbortSignal,
): Promise<void> {
  const source = rootPath(rootfs, containerPath);
  const info = await lstat(source).catch(() => undefined);
  if (!info?.isDirectory()) return;
  // cp -a keeps owners, modes, times, links and xattrs, which Node's fs.cp does not all keep.
  await new Promise<void>((resolve, reject) => {
    const child = spawn("cp", ["-a", "--", `${source}/.`, `${dataDir}/`], {
      stdio: ["ignore", "ignore", "pipe"],
      ...(signal ? { signal } : {}),
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.once("error", reject);
    child.once("close", (code) => {
      if (code === 0) resolve();
      else
        reject(
          new TbuildError(
            "E_VOLUME_SEED",
            `cannot copy the image's ${containerPath} into the volume at ${dataDir}: ${stderr.trim() || `cp exited with ${code}`}`,
          ),
        );
    });
  });
}
