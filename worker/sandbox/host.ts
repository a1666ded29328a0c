/**
 * What the sandbox needs to know about the machine it runs on: runc, the architecture and kernel
 * (for the seccomp profile), whether this process is real root or root of tbuild's user namespace,
 * and the hard resource limits a container must stay under. Also the files a container gets from
 * the host: `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
 */
import { accessSync, constants, readFileSync } from "node:fs";
import { release } from "node:os";
import path from "node:path";
import { inUserNamespace } from "../userns.js";
import { SandboxError } from "./errors.js";

export type RlimitName =
  | "RLIMIT_CPU"
  | "RLIMIT_FSIZE"
  | "RLIMIT_DATA"
  | "RLIMIT_STACK"
  | "RLIMIT_CORE"
  | "RLIMIT_RSS"
  | "RLIMIT_NPROC"
  | "RLIMIT_NOFILE"
  | "RLIMIT_MEMLOCK"
  | "RLIMIT_AS"
  | "RLIMIT_LOCKS"
  | "RLIMIT_SIGPENDING"
  | "RLIMIT_MSGQUEUE"
  | "RLIMIT_NICE"
  | "RLIMIT_RTPRIO"
  | "RLIMIT_RTTIME";

/** The rows of /proc/self/limits, by the kernel's label. */
const limitLabels: Record<string, RlimitName> = {
  "Max cpu time": "RLIMIT_CPU",
  "Max file size": "RLIMIT_FSIZE",
  "Max data size": "RLIMIT_DATA",
  "Max stack size": "RLIMIT_STACK",
  "Max core file size": "RLIMIT_CORE",
  "Max resident set": "RLIMIT_RSS",
  "Max processes": "RLIMIT_NPROC",
  "Max open files": "RLIMIT_NOFILE",
  "Max locked memory": "RLIMIT_MEMLOCK",
  "Max address space": "RLIMIT_AS",
  "Max file locks": "RLIMIT_LOCKS",
  "Max pending signals": "RLIMIT_SIGPENDING",
  "Max msgqueue size": "RLIMIT_MSGQUEUE",
  "Max nice priority": "RLIMIT_NICE",
  "Max realtime priority": "RLIMIT_RTPRIO",
  "Max realtime timeout": "RLIMIT_RTTIME",
};

/** Hard limits from `/proc/<pid>/limits` text; `Infinity` where unlimited. */
export function parseHardLimits(text: string): Partial<Record<RlimitName, number>> {
  const limits: Partial<Record<RlimitName, number>> = {};
  for (const line of text.split("\n")) {
    const match = /^(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)/.exec(line);
    const name = match ? limitLabels[match[1]] : undefined;
    if (!match || !name) continue;
    limits[name] = match[3] === "unlimited" ? Number.POSITIVE_INFINITY : Number(match[3]);
  }
  return limits;
}

/** Facts of this machine and of one run, everything `buildRuntimeSpec` needs besides the spec. */
export interface HostFacts {
  /** Node's `process.arch`: selects the seccomp architectures. */
  arch: string;
  /** `uname -r`: the seccomp profile's `minKernel` conditions compare against it. */
  kernelRelease: string;
  /**
   * True when this process is root of a user namespace rather than real root (tbuild's rootless
   * re-exec): runc then manages no cgroups, and sysfs comes from the host when the container
   * shares the host's network (a sysfs mount needs the network namespace's owner).
   */
  rootless: boolean;
  /** This process's hard limits: a container never asks for more. */
  hardLimits: Partial<Record<RlimitName, number>>;
  /** The run's bundle directory, which holds the generated `hosts`, `resolv.conf` and `hostname`. */
  bundleDir: string;
  /** The container's id: names its cgroup (`/tbuild/<id>`) when runc runs as root. */
  containerId: string;
}

/**
 * The facts of this machine (everything in HostFacts but the run's own bundle and id). A user
 * outside any user namespace gets the rootless shape too: what tbuild would run once re-executed.
 */
export async function probeHost(): Promise<Omit<HostFacts, "bundleDir" | "containerId">> {
  return {
    arch: process.arch,
    kernelRelease: release(),
    rootless: process.getuid?.() !== 0 || inUserNamespace(),
    // /proc and /etc files, read on every run: synchronously, sparing thread-pool round trips.
    hardLimits: parseHardLimits(readFileSync("/proc/self/limits", "utf8")),
  };
}

/** Where Debian installs runc, and sbin directories a user's PATH often lacks. */
const SBIN_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/** Throws unless this process can start runc: real root, or uid 0 of tbuild's user namespace. */
export function checkSandboxPrivileges(): void {
  if (process.getuid?.() !== 0) {
    throw new SandboxError(
      "E_SANDBOX_PRIVILEGES",
      "the sandbox needs root, or uid 0 in tbuild's user namespace (worker/userns reexecInUserNamespace), to start runc",
    );
  }
}

/** runc on PATH or in `extraDirs`; SandboxError saying how to install it when absent. */
export function findRunc(
  env: NodeJS.ProcessEnv = process.env,
  extraDirs: readonly string[] = SBIN_DIRS,
): string {
  const dirs = (env.PATH ?? "").split(":").filter(Boolean);
  for (const dir of [...dirs, ...extraDirs]) {
    const candidate = path.join(dir, "runc");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new SandboxError(
    "E_SANDBOX_RUNC_MISSING",
    "runc is not installed: tbuild runs build steps and containers with it\nTo fix it, run: sudo apt-get install runc",
  );
}

/** One /etc/hosts entry per `--add-host`: a name or address with blanks would write other entries. */
export function checkExtraHost(name: string, address: string): void {
  if (!/^[^\s#]+$/.test(name) || !/^[0-9A-Fa-f.:]+$/.test(address)) {
    throw new SandboxError("E_SANDBOX_SPEC", `invalid extra host "${name}:${address}"`);
  }
}

/** Docker's /etc/hosts for a container: loopback names, its hostname, then `--add-host` entries. */
export function hostsFile(hostname: string, extraHosts: Record<string, string> = {}): string {
  const lines = [`127.0.0.1\tlocalhost ${hostname}`, "::1\tlocalhost ip6-localhost ip6-loopback"];
  for (const [name, address] of Object.entries(extraHosts)) {
    checkExtraHost(name, address);
    lines.push(`${address}\t${name}`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * The host's resolv.conf for the container. Sharing the host's network, the host's resolvers are
 * reachable as they are; in a network namespace of its own, loopback resolvers (systemd-resolved's
 * 127.0.0.53) would be the container's own loopback, so they are dropped, as BuildKit does.
 */
export function resolvConfFor(
  hostText: string,
  network: "host" | "none" | "private",
  nameservers?: string[],
): string {
  if (network === "host") return hostText;
  const lines = hostText.split("\n");
  // Given nameservers (a user-mode network's resolver, --dns) replace the host's; search and
  // options lines stay.
  if (nameservers !== undefined) {
    const rest = lines.filter((line) => !/^\s*nameserver\s/.test(line) && line.trim() !== "");
    return `${[...rest, ...nameservers.map((address) => `nameserver ${address}`)].join("\n")}\n`;
  }
  return lines.filter((line) => !/^\s*nameserver\s+(127\.|::1\s*$|::1$)/.test(line)).join("\n");
}

export async function readHostResolvConf(): Promise<string> {
  try {
    return readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    return "";
  }
}
