/**
 * The runtime config (`config.json`) runc gets for one process: Docker's defaults (capabilities,
 * seccomp, masked and read-only paths, /proc, /dev, /sys, shm, mqueue), the image's user, the
 * host's network or none, and the run's /etc files, shaped for real root or for tbuild's user
 * namespace. A pure function of its inputs, so `tbuild debug` and the tests can print it.
 */
import path from "node:path";
import { DEFAULT_PATH, type RuntimeMount, type RuntimeSpec } from "../../oci/spec.js";
import { EMULATOR_MOUNT } from "../emulation.js";
import { SandboxError } from "./errors.js";
import { checkExtraHost, type HostFacts, type RlimitName } from "./host.js";
import { convertSeccompProfile, dockerDefaultSeccompProfile } from "./seccomp.js";
import type { ResolvedUser } from "./user.js";

export interface SandboxMount {
  destination: string;
  source?: string;
  type: "bind" | "tmpfs";
  readonly?: boolean;
  options?: string[];
}

/**
 * An overlay runc mounts as the container's root, in the container's own mount namespace: no
 * mount or unmount process on the host, and nothing left mounted there however the run ends.
 */
export interface SandboxRootOverlay {
  /** Its mount options (`lowerdir=…`, `upperdir=…`, `workdir=…`, …), with absolute paths. */
  options: string[];
  /**
   * The directories it merges, lowest first, its upper directory last: read before the run (for
   * /etc/passwd and mount points), as the mounted overlay would show them.
   */
  layers: string[];
  /** Its upper directory, where the run's changes land. */
  upper: string;
}

export interface SandboxSpec {
  /**
   * A prepared root filesystem directory (already mounted by the caller); with `rootOverlay`, an
   * empty directory that runc mounts the overlay over.
   */
  rootfs: string;
  rootOverlay?: SandboxRootOverlay;
  args: string[];
  env: string[];
  cwd: string;
  /** As in USER / -u: "name", "uid", "name:group", "uid:gid"; "" = root. */
  user: string;
  /**
   * Who owns a working directory the image lacks, made for the run: the user (default; BuildKit
   * does so for a RUN step), or root (as `docker run -w` does). With `rootOverlay` it is always
   * root: runc makes it, once the overlay is mounted.
   */
  workdirOwner?: "user" | "root";
  /** Default: the first 12 characters of the container id, as Docker does. */
  hostname?: string;
  /**
   * Whether the environment holds HOSTNAME, as Docker gives a container (the default). BuildKit's
   * RUN steps have none (its executor sets no HOSTNAME), and a step's output must not depend on one.
   */
  hostnameInEnv?: boolean;
  /**
   * host: share the host's network (BuildKit's OCI worker without CNI); none: a network namespace
   * of its own with only loopback (runc brings it up); private: join `networkNamespace`, a
   * namespace the caller set up (tbuild run's published ports, runtime/network.ts).
   */
  network: "host" | "none" | "private";
  /** With network "private": the namespace's path, e.g. `/proc/PID/ns/net`. */
  networkNamespace?: string;
  /** Nameservers for resolv.conf in place of the host's (a user-mode network's, `--dns`). */
  nameservers?: string[];
  mounts?: SandboxMount[];
  /** Give the process a pty (runc in the foreground handles the console itself). */
  terminal?: boolean;
  readonlyRootfs?: boolean;
  /**
   * The root filesystem's changes are thrown away after the run (`tbuild run --rm`): the mount
   * points runc makes in it for the image's lack of them are left there, not cleaned up.
   */
  changesDiscarded?: boolean;
  /** `--add-host`: host name → address, appended to /etc/hosts. */
  extraHosts?: Record<string, string>;
  /**
   * A static QEMU user emulator (a host path) for a process of an architecture the kernel does not
   * run: bound read-only at EMULATOR_MOUNT, and the process started through it (worker/emulation.ts).
   */
  emulator?: string;
}

/**
 * How the process starts under `SandboxSpec.emulator`: QEMU loads a file by its path and does not
 * search PATH, so the caller resolves `args[0]` in the container's root filesystem first.
 */
export interface EmulatedStart {
  /** The container path of the program, `args[0]` resolved as runc would (through PATH). */
  executable: string;
}

/** Docker's default capabilities (moby oci/caps DefaultCapabilities), exactly. */
export const DOCKER_DEFAULT_CAPABILITIES: readonly string[] = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

/** Docker's masked paths (current moby: /proc/interrupts and powercap included). */
export const DOCKER_MASKED_PATHS: readonly string[] = [
  "/proc/asound",
  "/proc/acpi",
  "/proc/interrupts",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/proc/scsi",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
];

export const DOCKER_READONLY_PATHS: readonly string[] = [
  "/proc/bus",
  "/proc/fs",
  "/proc/irq",
  "/proc/sys",
  "/proc/sysrq-trigger",
];

/**
 * Open files and processes as podman sets them (1048576 and 4194304), never above this process's
 * own hard limits: runc's setrlimit would fail as a user, and as root it would lift a limit the
 * machine's administrator chose.
 */
const WANTED_RLIMITS: [RlimitName, number][] = [
  ["RLIMIT_NOFILE", 1048576],
  ["RLIMIT_NPROC", 4194304],
];

/** The devices cgroup Docker gives a container: deny all, allow the default devices and ptys. */
const DOCKER_DEVICE_RULES = [
  { allow: false, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 5, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 3, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 9, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 8, access: "rwm" },
  { allow: true, type: "c", major: 5, minor: 0, access: "rwm" },
  { allow: true, type: "c", major: 5, minor: 1, access: "rwm" },
  { allow: false, type: "c", major: 10, minor: 229, access: "rwm" },
];

/** Where the run's generated /etc files live in its bundle. */
export const ETC_FILES = {
  "/etc/hosts": "hosts",
  "/etc/resolv.conf": "resolv.conf",
  "/etc/hostname": "hostname",
};

function specError(message: string): SandboxError {
  return new SandboxError("E_SANDBOX_SPEC", message);
}

function checkContainerPath(what: string, value: string): void {
  if (!value.startsWith("/")) throw specError(`${what} must be an absolute path, got "${value}"`);
  if (value.includes("\0")) throw specError(`${what} contains a NUL byte`);
}

function validate(spec: SandboxSpec): void {
  if (spec.args.length === 0) throw specError("no command to run: args is empty");
  if (spec.emulator !== undefined && !path.isAbsolute(spec.emulator))
    throw specError(`the emulator must be an absolute host path, got "${spec.emulator}"`);
  checkContainerPath("the working directory", spec.cwd);
  if (!path.isAbsolute(spec.rootfs)) throw specError(`rootfs must be an absolute path, got "${spec.rootfs}"`);
  for (const entry of spec.env) {
    if (!entry.includes("=") || entry.startsWith("="))
      throw specError(`invalid environment entry "${entry}"`);
  }
  for (const [name, address] of Object.entries(spec.extraHosts ?? {})) checkExtraHost(name, address);
  if (spec.rootOverlay && spec.workdirOwner !== "root") {
    throw specError(
      "with a root overlay runc makes a missing working directory, as root's: set workdirOwner root",
    );
  }
  for (const dir of [...(spec.rootOverlay?.layers ?? []), spec.rootOverlay?.upper ?? "/"]) {
    if (!path.isAbsolute(dir)) throw specError(`a root overlay's directory must be absolute, got "${dir}"`);
  }
  for (const mount of spec.mounts ?? []) {
    checkContainerPath("a mount destination", mount.destination);
    if (path.posix.normalize(mount.destination) === "/")
      throw specError("cannot mount over the root directory");
    if (mount.type === "bind") {
      if (!mount.source || !path.isAbsolute(mount.source)) {
        throw specError(`the bind mount on ${mount.destination} needs an absolute source path`);
      }
    } else if (mount.type !== "tmpfs") {
      throw specError(
        `mount type "${(mount as SandboxMount).type}" on ${mount.destination} is not supported yet`,
      );
    }
  }
}

/** Docker's container environment: PATH, HOSTNAME (unless `hostnameInEnv` is false; TERM with a terminal), the spec's, HOME. */
function containerEnv(spec: SandboxSpec, ids: ResolvedUser, hostname: string): string[] {
  const env = new Map<string, string>();
  env.set("PATH", DEFAULT_PATH);
  if (spec.hostnameInEnv !== false) env.set("HOSTNAME", hostname);
  if (spec.terminal) env.set("TERM", "xterm");
  for (const entry of spec.env) {
    const eq = entry.indexOf("=");
    env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  // runc would fill HOME the same way (passwd, else "/"); written here so the config says it.
  if (!env.has("HOME")) env.set("HOME", ids.home || "/");
  return [...env].map(([key, value]) => `${key}=${value}`);
}

function userMount(mount: SandboxMount): RuntimeMount {
  const access = mount.readonly ? "ro" : "rw";
  const extra = mount.options ?? [];
  if (mount.type === "bind") {
    const propagation = extra.some((o) => /^r?(private|shared|slave|unbindable)$/.test(o))
      ? []
      : ["rprivate"];
    return {
      destination: mount.destination,
      type: "bind",
      source: mount.source as string,
      options: ["rbind", access, ...propagation, ...extra],
    };
  }
  const mode = extra.some((o) => o.startsWith("mode=")) ? [] : ["mode=1777"];
  return {
    destination: mount.destination,
    type: "tmpfs",
    source: "tmpfs",
    options: ["nosuid", "nodev", access, ...mode, ...extra],
  };
}

function depth(destination: string): number {
  return path.posix.normalize(destination).split("/").filter(Boolean).length;
}

function systemMounts(spec: SandboxSpec, host: HostFacts): RuntimeMount[] {
  const mounts: RuntimeMount[] = [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    {
      destination: "/dev",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
      destination: "/dev/pts",
      type: "devpts",
      source: "devpts",
      options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
  ];
  if (host.rootless && spec.network === "host") {
    // Mounting sysfs needs CAP_SYS_ADMIN over the network namespace, which the host's user
    // namespace owns: bind the host's /sys instead, recursively read-only ("rro", so that the
    // cgroup hierarchies beneath are read-only too), as rootless Docker and podman do.
    mounts.push({
      destination: "/sys",
      type: "bind",
      source: "/sys",
      options: ["rbind", "nosuid", "noexec", "nodev", "rro"],
    });
  } else {
    mounts.push({
      destination: "/sys",
      type: "sysfs",
      source: "sysfs",
      options: ["nosuid", "noexec", "nodev", "ro"],
    });
  }
  if (!host.rootless) {
    // Root only: with cgroups v1, runc builds this from the cgroups it created for the container;
    // rootless runc creates none.
    mounts.push({
      destination: "/sys/fs/cgroup",
      type: "cgroup",
      source: "cgroup",
      options: ["ro", "nosuid", "noexec", "nodev"],
    });
  }
  mounts.push(
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    {
      destination: "/dev/shm",
      type: "tmpfs",
      source: "shm",
      options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
  );
  return mounts;
}

/**
 * The process's argv: the spec's, or under an emulator QEMU's own (`EMULATOR -0 ARGV0 PROGRAM
 * ARGS...`: the program sees the argv[0] it was given, as a busybox applet needs).
 */
function processArgs(spec: SandboxSpec, start: EmulatedStart | undefined): string[] {
  if (spec.emulator === undefined) return [...spec.args];
  const executable = start?.executable ?? spec.args[0]!;
  return [EMULATOR_MOUNT, "-0", spec.args[0]!, executable, ...spec.args.slice(1)];
}

/** The runtime config handed to runc (exported for tests and `tbuild debug`). */
export function buildRuntimeSpec(
  spec: SandboxSpec,
  ids: ResolvedUser,
  host: HostFacts,
  start?: EmulatedStart,
): RuntimeSpec {
  validate(spec);
  const hostname = spec.hostname ?? host.containerId.slice(0, 12);
  const userMounts = [...(spec.mounts ?? [])]
    .sort((a, b) => depth(a.destination) - depth(b.destination))
    .map(userMount);
  const taken = new Set(userMounts.map((m) => path.posix.normalize(m.destination)));
  const etcMounts: RuntimeMount[] = Object.entries(ETC_FILES)
    .filter(([destination]) => !taken.has(destination))
    .map(([destination, file]) => ({
      destination,
      type: "bind",
      source: path.join(host.bundleDir, file),
      options: ["rbind", "rprivate", spec.readonlyRootfs ? "ro" : "rw"],
    }));

  const rlimits = WANTED_RLIMITS.map(([type, wanted]) => {
    const limit = Math.min(wanted, host.hardLimits[type] ?? wanted);
    return { type, hard: limit, soft: limit };
  });
  const capabilities = [...DOCKER_DEFAULT_CAPABILITIES];
  const namespaces: NonNullable<NonNullable<RuntimeSpec["linux"]>["namespaces"]> = [
    { type: "pid" },
    { type: "ipc" },
    { type: "uts" },
    { type: "mount" },
  ];
  // The host's network is shared by leaving the network namespace out; "none" gets a new one,
  // where runc brings up loopback.
  if (spec.network === "none") namespaces.push({ type: "network" });
  else if (spec.network === "private") {
    if (!spec.networkNamespace || !path.isAbsolute(spec.networkNamespace))
      throw specError("a private network needs the absolute path of its network namespace");
    namespaces.push({ type: "network", path: spec.networkNamespace });
  } else if (spec.network !== "host")
    throw specError(`network "${spec.network as string}" is not supported yet`);

  return {
    ociVersion: "1.0.2",
    process: {
      terminal: spec.terminal ?? false,
      user: {
        uid: ids.uid,
        gid: ids.gid,
        // The primary group is a supplementary group too, as containerd and BuildKit give it since
        // CVE-2023-25173: a process that drops its gid keeps the group's access, not more.
        additionalGids: [ids.gid, ...ids.additionalGids.filter((gid) => gid !== ids.gid)],
      },
      args: processArgs(spec, start),
      env: containerEnv(spec, ids, hostname),
      cwd: spec.cwd,
      capabilities: { bounding: capabilities, effective: capabilities, permitted: capabilities },
      rlimits,
    },
    root: { path: spec.rootfs, readonly: spec.readonlyRootfs ?? false },
    hostname,
    mounts: [
      // Mounted first, over the root directory: runc then mounts the rest into it and pivots to it.
      ...(spec.rootOverlay
        ? [{ destination: "/", type: "overlay", source: "overlay", options: [...spec.rootOverlay.options] }]
        : []),
      ...systemMounts(spec, host),
      ...(spec.emulator !== undefined
        ? [
            {
              destination: EMULATOR_MOUNT,
              type: "bind",
              source: spec.emulator,
              options: ["rbind", "ro", "rprivate"],
            },
          ]
        : []),
      ...etcMounts,
      ...userMounts,
    ],
    linux: {
      namespaces,
      // As root, runc puts the container in cgroups of its own (cgroupfs; v1 here) with Docker's
      // device rules. In the user namespace it has no cgroups to manage: it asks for none.
      ...(host.rootless
        ? {}
        : { cgroupsPath: `/tbuild/${host.containerId}`, resources: { devices: DOCKER_DEVICE_RULES } }),
      maskedPaths: [...DOCKER_MASKED_PATHS],
      readonlyPaths: [...DOCKER_READONLY_PATHS],
      seccomp: convertSeccompProfile(dockerDefaultSeccompProfile(), {
        arch: host.arch,
        capabilities,
        kernelRelease: host.kernelRelease,
      }),
    },
  };
}
