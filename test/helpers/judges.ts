/**
 * Outside judges of built images: podman (in a private store, so the host's is untouched), skopeo
 * and umoci; and `tbuild` run as the unprivileged test user, to compare rootless builds with root's.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, mkdirSync } from "node:fs";
import path from "node:path";
import { tbuildBin } from "./cli.js";

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[]): RunResult {
  const result = spawnSync(file, args, { encoding: "utf8" });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

function runOk(file: string, args: string[]): string {
  const result = run(file, args);
  if (result.status !== 0)
    throw new Error(`${file} ${args.join(" ")} failed (${result.status}): ${result.stderr}`);
  return result.stdout;
}

/**
 * podman with its own store under `dir` (vfs, so nothing is mounted on the host), running
 * containers as these machines allow: runc, cgroupfs, limits under the host's hard limits, and no
 * network (so podman sets up no bridge on the host).
 */
export class PrivatePodman {
  private readonly globalArgs: string[];

  constructor(dir: string) {
    this.globalArgs = [
      "--root",
      path.join(dir, "root"),
      "--runroot",
      path.join(dir, "run"),
      "--storage-driver",
      "vfs",
      "--events-backend",
      "none",
    ];
  }

  /** `podman load` of a docker (or OCI) archive; gives podman's "Loaded image: ..." lines. */
  load(archive: string): string {
    return runOk("podman", [...this.globalArgs, "load", "--input", archive]);
  }

  /** `podman pull` from a plain-HTTP registry (of one platform's image, when an index names several). */
  pull(ref: string, platform?: string): void {
    runOk("podman", [
      ...this.globalArgs,
      "pull",
      "--quiet",
      "--tls-verify=false",
      ...(platform ? ["--platform", platform] : []),
      ref,
    ]);
  }

  run(image: string, ...command: string[]): RunResult {
    return this.runOn(undefined, image, ...command);
  }

  /** `podman run --platform PLATFORM` (the image pulled for that platform first). */
  runOn(platform: string | undefined, image: string, ...command: string[]): RunResult {
    return run("podman", [
      ...this.globalArgs,
      "run",
      ...(platform ? ["--platform", platform] : []),
      "--rm",
      "--runtime",
      "runc",
      "--cgroup-manager",
      "cgroupfs",
      "--ulimit",
      "nofile=1024:1024",
      "--ulimit",
      "nproc=1024:1024",
      "--network",
      "none",
      image,
      ...command,
    ]);
  }
}

/** `skopeo inspect` of an image in a plain-HTTP registry: the summary, or with `config` the image config. */
export function skopeoInspect(ref: string, options: { config?: boolean } = {}): Record<string, unknown> {
  const args = ["inspect", "--tls-verify=false", ...(options.config ? ["--config"] : []), `docker://${ref}`];
  return JSON.parse(runOk("skopeo", args)) as Record<string, unknown>;
}

/**
 * Copies `ref` from a plain-HTTP registry into an OCI layout under `dir` with skopeo and unpacks
 * its layers with `umoci raw unpack` (as root, owners are kept); gives the root filesystem's path.
 */
export function unpackFromRegistry(ref: string, dir: string): string {
  const layout = path.join(dir, "layout");
  const rootfs = path.join(dir, "rootfs");
  mkdirSync(dir, { recursive: true });
  runOk("skopeo", ["copy", "--quiet", "--src-tls-verify=false", `docker://${ref}`, `oci:${layout}:image`]);
  runOk("umoci", ["raw", "unpack", "--image", `${layout}:image`, rootfs]);
  return rootfs;
}

/** A user's uid and gid, by name. */
export function userIds(name: string): { uid: number; gid: number } {
  const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8" }).trim());
  return { uid, gid };
}

/** A new directory `name` under `parent` (which `user` must be able to reach), owned by `user`. */
export function dirOwnedBy(parent: string, name: string, user: string): string {
  const dir = path.join(parent, name);
  mkdirSync(dir, { recursive: true });
  const { uid, gid } = userIds(user);
  chownSync(dir, uid, gid);
  return dir;
}

/**
 * Runs `bin/tbuild` with only the given environment (plus PATH), as `user` through `runuser`, or
 * as this process's user when `user` is undefined: the same command either way, so that only the
 * user differs.
 */
export function tbuildAs(user: string | undefined, env: Record<string, string>, args: string[]): RunResult {
  const home = user
    ? execFileSync("getent", ["passwd", user], { encoding: "utf8" }).split(":")[5]!
    : (process.env.HOME ?? "/");
  const assignments = Object.entries({
    PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: home,
    ...env,
  }).map(([k, v]) => `${k}=${v}`);
  const command = ["env", "-i", ...assignments, tbuildBin, ...args];
  return user ? run("runuser", ["-u", user, "--", ...command]) : run(command[0]!, command.slice(1));
}
