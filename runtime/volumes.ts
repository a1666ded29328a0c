/**
 * Named volumes, kept in the store as docker keeps them: `<storeRoot>/volumes/<NAME>/_data`, bind
 * mounted into containers. A volume is made on first use; while it is empty, mounting it over a
 * path the image has content at copies that content in first (docker's "copy on mount"), owners
 * and modes kept, so `-v data:/etc/app` starts from the image's `/etc/app`.
 */
import { spawn } from "node:child_process";
import { lstat, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { TbuildError } from "../errors/index.js";
import { rootPath } from "../worker/root-path.js";

export class VolumeStore {
  readonly dir: string;

  constructor(storeRoot: string) {
    this.dir = path.join(storeRoot, "volumes");
  }

  dataDir(name: string): string {
    return path.join(this.dir, name, "_data");
  }

  /** The volume's data directory, made if missing; `empty` says whether it holds nothing yet. */
  async open(name: string): Promise<{ dataDir: string; empty: boolean }> {
    const dataDir = this.dataDir(name);
    await mkdir(dataDir, { recursive: true, mode: 0o755 });
    return { dataDir, empty: (await readdir(dataDir)).length === 0 };
  }

  async remove(name: string): Promise<void> {
    await rm(path.join(this.dir, name), { recursive: true, force: true });
  }
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
