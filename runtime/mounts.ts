/**
 * `-v` as docker reads it on Linux: `SRC:DST[:OPTIONS]`, where SRC is a host path (absolute, or
 * relative starting with `.`) for a bind mount or a name for a volume kept in the store, and `DST`
 * alone is an anonymous volume. An image's `VOLUME`s that no `-v` covers become anonymous volumes
 * too, as docker makes them. The SELinux relabel options `z`/`Z` are accepted and ignored where
 * SELinux is off, as podman does; where it enforces, tbuild cannot relabel yet and says so.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { TbuildError, UsageError } from "../errors/index.js";
import type { ContainerConfig } from "../oci/spec.js";
import { isVolumeName } from "./volumes.js";

export type MountRequest =
  | { kind: "bind"; source: string; destination: string; readonly: boolean }
  | {
      kind: "volume";
      /** A random name for an anonymous volume, which the container owns. */
      name: string;
      destination: string;
      readonly: boolean;
      anonymous: boolean;
      /** `nocopy`: an empty volume is not seeded from the image. */
      noCopy: boolean;
    };

const MODES = new Set(["ro", "rw", "nocopy"]);
/** SELinux relabeling: `z` shared between containers, `Z` private to this one. */
const RELABEL = new Set(["z", "Z"]);
const isOption = (o: string) => MODES.has(o) || RELABEL.has(o);

/** Parses one `-v` value; `cwd` resolves relative host paths; `anonymousName` names `-v /dst`. */
export function parseVolumeFlag(text: string, cwd: string, anonymousName: () => string): MountRequest {
  const parts = text.split(":");
  let source: string | undefined;
  let destination: string;
  let options: string[] = [];
  if (parts.length === 1) {
    destination = parts[0]!;
  } else if (parts.length === 2 && parts[1]!.split(",").every(isOption) && parts[0]!.startsWith("/")) {
    destination = parts[0]!;
    options = parts[1]!.split(",");
  } else if (parts.length === 2 || parts.length === 3) {
    source = parts[0]!;
    destination = parts[1]!;
    options = parts.length === 3 ? parts[2]!.split(",") : [];
  } else {
    throw new UsageError(`-v ${text}: expected SRC:DST[:OPTIONS], NAME:DST[:OPTIONS] or DST`);
  }
  if (!destination.startsWith("/")) {
    throw new UsageError(`-v ${text}: the container path ${JSON.stringify(destination)} must be absolute`);
  }
  destination = path.posix.normalize(destination);
  if (destination === "/") throw new UsageError(`-v ${text}: cannot mount over the container's root`);
  for (const option of options) {
    if (!isOption(option)) {
      throw new TbuildError(
        "E_NOT_SUPPORTED",
        `-v ${text}: the mount option ${JSON.stringify(option)} is not supported yet (supported: ro, rw, nocopy, z, Z)`,
      );
    }
  }
  const readonly = options.includes("ro") && !options.includes("rw");
  const noCopy = options.includes("nocopy");
  if (source === undefined) {
    return { kind: "volume", name: anonymousName(), destination, readonly, anonymous: true, noCopy };
  }
  if (source.startsWith("/") || source.startsWith(".")) {
    if (noCopy) throw new UsageError(`-v ${text}: nocopy applies to volumes, not to host paths`);
    return { kind: "bind", source: path.resolve(cwd, source), destination, readonly };
  }
  if (!isVolumeName(source)) {
    throw new UsageError(
      `-v ${text}: ${JSON.stringify(source)} is neither a host path (absolute, or starting with ".") nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)`,
    );
  }
  return { kind: "volume", name: source, destination, readonly, anonymous: false, noCopy };
}

/** The SELinux relabel option (`z` or `Z`) a `-v` value asks for, if any. */
export function relabelOption(text: string): "z" | "Z" | undefined {
  const parts = text.split(":");
  if (parts.length < 2) return undefined;
  const options = parts[parts.length - 1]!.split(",");
  return options.includes("Z") ? "Z" : options.includes("z") ? "z" : undefined;
}

/**
 * What to do with a `-v` value's relabel option, given `/sys/fs/selinux/enforce`'s content
 * (undefined when SELinux is not mounted): a note to print when SELinux is off (podman's rule:
 * nothing to relabel), an E_NOT_SUPPORTED error when it enforces. Undefined when nothing is asked.
 */
export function relabelDecision(text: string, enforce: string | undefined): string | undefined {
  const option = relabelOption(text);
  if (option === undefined) return undefined;
  if (enforce !== undefined && enforce.trim() === "1") {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `-v ${text}: SELinux is enforcing on this host and relabeling (:${option}) is not supported yet: drop :${option} and label the source yourself (chcon -Rt container_file_t SRC)`,
    );
  }
  return `-v ${text}: SELinux is not enabled on this host, so :${option} (relabeling) is ignored`;
}

/** `/sys/fs/selinux/enforce` as the kernel says it, or undefined when SELinux is not mounted. */
export function selinuxEnforceState(): string | undefined {
  try {
    return readFileSync("/sys/fs/selinux/enforce", "utf8");
  } catch {
    return undefined;
  }
}

/**
 * The `-v` mounts and, as docker makes them, an anonymous volume (named by `anonymousName`, seeded
 * from the image on first use) for each of the image's `VOLUME`s that no `-v` mounts over; in
 * docker's order, parents before what lies inside them.
 */
export function withImageVolumes(
  config: ContainerConfig,
  mounts: readonly MountRequest[],
  anonymousName: () => string,
): MountRequest[] {
  const covered = new Set(mounts.map((m) => m.destination));
  const added: MountRequest[] = [];
  for (const key of Object.keys(config.Volumes ?? {}).sort()) {
    if (!key.startsWith("/")) continue;
    const destination = path.posix.normalize(key).replace(/(.)\/$/, "$1");
    if (destination === "/" || covered.has(destination)) continue;
    covered.add(destination);
    added.push({
      kind: "volume",
      name: anonymousName(),
      destination,
      readonly: false,
      anonymous: true,
      noCopy: false,
    });
  }
  const depth = (m: MountRequest) => m.destination.split("/").length;
  // A stable sort: mounts of one depth keep the command line's order.
  return [...mounts, ...added].sort((a, b) => depth(a) - depth(b));
}
