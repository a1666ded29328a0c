/**
 * The sandbox as an attacker probes it, from inside a RUN step and inside `tbuild run`, as root and
 * rootless: each probe is an attack a hostile Dockerfile or image could make, and each answer is
 * compared with what Docker's defaults give (its capability set, its seccomp profile, its masked
 * and read-only paths, its /dev). One build and one run per mode run every probe (see probes.ts);
 * each probe is its own test case.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { hostname as hostHostname, constants as osConstants } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Canary, hostileWorld, MODES, type Mode } from "./harness.js";
import {
  addProbeKit,
  type ProbeResult,
  parseProbeResults,
  probeScript,
  type SyscallName,
  syscallProbe,
} from "./probes.js";

/** Docker's default capabilities (moby oci/caps DefaultCapabilities) as the bits of /proc/self/status. */
const DOCKER_CAPABILITIES = {
  CHOWN: 0,
  DAC_OVERRIDE: 1,
  FOWNER: 3,
  FSETID: 4,
  KILL: 5,
  SETGID: 6,
  SETUID: 7,
  SETPCAP: 8,
  NET_BIND_SERVICE: 10,
  NET_RAW: 13,
  SYS_CHROOT: 18,
  MKNOD: 27,
  AUDIT_WRITE: 29,
  SETFCAP: 31,
};
const DOCKER_CAPABILITY_MASK = Object.values(DOCKER_CAPABILITIES).reduce(
  (mask, bit) => mask | (1n << BigInt(bit)),
  0n,
);

/** Docker's masked paths (moby oci/defaults.go): /dev/null over files, an empty read-only tmpfs over directories. */
const DOCKER_MASKED_PATHS = [
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
const DOCKER_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** Docker's /dev without a terminal: its default devices, the standard streams, pts, shm and mqueue. */
const DOCKER_DEV = [
  "fd",
  "full",
  "mqueue",
  "null",
  "ptmx",
  "pts",
  "random",
  "shm",
  "stderr",
  "stdin",
  "stdout",
  "tty",
  "urandom",
  "zero",
];

const { EPERM, ESRCH } = osConstants.errno;

/**
 * System calls Docker's seccomp profile refuses a container with Docker's capabilities (EPERM):
 * each would reach the host's kernel state (keys, BPF, modules, mounts, namespaces, the clock,
 * the kernel log). Their arguments are harmless where a call would be allowed: invalid times,
 * a wrong reboot magic, a garbage module.
 */
const REFUSED_SYSCALLS: {
  call: SyscallName;
  args: (string | number)[];
  why: string;
  /** The kernel refuses it in any user namespace, whatever the sandbox: asserted as root only. */
  rootOnly?: true;
}[] = [
  { call: "keyctl", args: [0, -3, 0], why: "the kernel keyring is not namespaced; not in the profile" },
  { call: "add_key", args: ["s:user", "s:hostile", "s:payload", 7, -3], why: "not in the profile" },
  { call: "request_key", args: ["s:user", "s:hostile", 0, 0], why: "not in the profile" },
  { call: "bpf", args: [0, "z:128", 128], why: "needs CAP_SYS_ADMIN or CAP_BPF" },
  { call: "init_module", args: ["z:64", 64, "s:"], why: "needs CAP_SYS_MODULE" },
  { call: "finit_module", args: [0, "s:", 0], why: "needs CAP_SYS_MODULE" },
  { call: "delete_module", args: ["s:hostile", 0], why: "needs CAP_SYS_MODULE" },
  { call: "mount", args: ["s:none", "s:/mnt", "s:tmpfs", 0, 0], why: "needs CAP_SYS_ADMIN" },
  { call: "umount2", args: ["s:/dev/shm", 0], why: "needs CAP_SYS_ADMIN" },
  { call: "fsopen", args: ["s:tmpfs", 0], why: "needs CAP_SYS_ADMIN" },
  { call: "open_tree", args: [-100, "s:/", 1], why: "needs CAP_SYS_ADMIN" },
  { call: "unshare", args: [0x10000000], why: "a new user namespace needs CAP_SYS_ADMIN in the profile" },
  { call: "setns", args: [0, 0], why: "needs CAP_SYS_ADMIN" },
  { call: "pivot_root", args: ["s:/", "s:/"], why: "needs CAP_SYS_ADMIN" },
  { call: "open_by_handle_at", args: [0, "z:16", 0], why: "the 'shocker' escape; needs CAP_DAC_READ_SEARCH" },
  { call: "reboot", args: [0xfee1dead, 0, 0, 0], why: "needs CAP_SYS_BOOT" },
  // 1000 segments and a foreign architecture: allowed, the call would fail with EINVAL.
  { call: "kexec_load", args: [0, 1000, 0, 0x7fff0000], why: "not in the profile" },
  // A time of 2,000,000 microseconds is invalid: allowed, the call would fail with EINVAL.
  { call: "settimeofday", args: ["b:000000000000000080841e0000000000", 0], why: "needs CAP_SYS_TIME" },
  { call: "clock_settime", args: [0, "b:0000000000000000ffffffffffffffff"], why: "needs CAP_SYS_TIME" },
  { call: "swapon", args: ["s:/nonexistent", 0], why: "not in the profile", rootOnly: true },
  { call: "syslog", args: [3, "z:64", 64], why: "needs CAP_SYSLOG", rootOnly: true },
  { call: "perf_event_open", args: ["z:128", 0, -1, -1, 0], why: "needs CAP_PERFMON" },
  { call: "acct", args: ["s:/nonexistent/acct"], why: "needs CAP_SYS_PACCT", rootOnly: true },
  { call: "userfaultfd", args: [0], why: "not in the profile", rootOnly: true },
  // Level 4 does not exist: allowed, the call would fail with EINVAL.
  { call: "iopl", args: [4], why: "needs CAP_SYS_RAWIO" },
];

/**
 * A block device of the host that the host itself can read: a loop device over a file that holds
 * `marker` (this machine's own disk is closed even to its root). Detached by `detach`.
 */
function hostBlockDevice(
  file: string,
  marker: string,
): { major: number; minor: number; node: string; detach(): void } {
  writeFileSync(file, Buffer.concat([Buffer.from(marker), Buffer.alloc(65536 - marker.length)]));
  const node = execFileSync("losetup", ["--find", "--show", file], { encoding: "utf8" }).trim();
  const [major, minor] = readFileSync(`/sys/class/block/${path.basename(node)}/dev`, "utf8")
    .trim()
    .split(":")
    .map(Number);
  return { major: major!, minor: minor!, node, detach: () => execFileSync("losetup", ["--detach", node]) };
}

const quoteShell = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

/** The attacks, by name: shell snippets, run with CANARY, HOSTPID, DISK_MAJOR and DISK_MINOR set. */
function probes(): Record<string, string> {
  const list: Record<string, string> = {
    status: "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|Seccomp):' /proc/self/status",
    "mount -t tmpfs": "mount -t tmpfs hostile /mnt",
    "mount --bind": "mount --bind /bin /mnt",
    umount: "umount /dev/shm",
    "unshare -U": "unshare -U true",
    "unshare -m": "unshare -m true",
    nsenter: "nsenter -t 1 -m true",
    insmod: "insmod /bin/busybox",
    // Each write would leave the host as it was if it went through (the same value back; a value
    // the kernel refuses), so that a sandbox broken on purpose cannot harm the machine.
    "write /proc/sys/kernel/core_pattern":
      "cat /proc/sys/kernel/core_pattern > /tmp/core_pattern && cat /tmp/core_pattern > /proc/sys/kernel/core_pattern",
    "write /proc/sys/vm/drop_caches": "echo 0 > /proc/sys/vm/drop_caches",
    "write /sys": "touch /sys/hostile",
    "mkdir in the cgroup hierarchies":
      'n=0; for d in /sys/fs/cgroup/*/; do n=$((n+1)); mkdir "${d}hostile" 2>/dev/null && echo "made ${d}hostile" && rmdir "${d}hostile"; done; echo "tried $n"',
    "mount table": "cat /proc/self/mountinfo",
    "hostname x": 'hostname "$(hostname)"',
    hostname: "hostname",
    "/dev": "ls -A /dev",
    "/dev/pts": "ls -A /dev/pts",
    "mknod a host block device and read it":
      'mknod /tmp/disk b "$DISK_MAJOR" "$DISK_MINOR" && head -c 512 /tmp/disk > /tmp/disk.read && cat /tmp/disk.read',
    "mknod /dev/mem and read it":
      "mknod /tmp/mem c 1 1 && head -c 16 /tmp/mem > /tmp/mem.read && wc -c < /tmp/mem.read",
    "mknod /dev/kmsg and read it":
      "mknod /tmp/kmsg c 1 11 && timeout 2 dd if=/tmp/kmsg of=/tmp/kmsg.read bs=8192 count=1 && wc -c < /tmp/kmsg.read",
    "/": "ls -A /",
    "/proc/1/root": "ls -A /proc/1/root/",
    "the canary by its host path": 'cat "$CANARY/secret"',
    "the canary through /proc/*/root": 'cat /proc/[0-9]*/root"$CANARY"/secret',
    processes: "for p in /proc/[0-9]*; do echo ${p#/proc/}; done",
    "kill -0 the host's process": 'kill -0 "$HOSTPID"',
    // PTRACE_SEIZE: a tracer that got through would not stop the process it seized.
    "ptrace the host's process": syscallProbe("ptrace", [0x4206, "$HOSTPID", 0, 0]),
    "chroot breakout": 'perl /probe/breakout.pl "$CANARY"',
    network: "cat /proc/net/dev",
  };
  for (const masked of DOCKER_MASKED_PATHS) {
    list[`masked ${masked}`] =
      `p=${quoteShell(masked)}; if [ -e "$p" ]; then awk -v p="$p" '$5 == p { print "mounted", $4, $6 }' /proc/self/mountinfo; ` +
      `if [ -d "$p" ]; then echo "entries $(ls -A "$p" | wc -l)"; else echo "bytes $(wc -c < "$p")"; fi; else echo absent; fi`;
  }
  for (const readonly of DOCKER_READONLY_PATHS) {
    list[`read-only ${readonly}`] =
      `p=${quoteShell(readonly)}; if [ -e "$p" ]; then awk -v p="$p" '$5 == p { print $6 }' /proc/self/mountinfo; else echo absent; fi`;
  }
  for (const { call, args } of REFUSED_SYSCALLS) list[`syscall ${call}`] = syscallProbe(call, args);
  return list;
}

function capabilityMask(status: string, field: string): bigint {
  const match = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(status);
  if (!match) throw new Error(`no ${field} in:\n${status}`);
  return BigInt(`0x${match[1]}`);
}

/** Interface names in /proc/net/dev text. */
function interfaces(procNetDev: string): string[] {
  return procNetDev
    .split("\n")
    .slice(2)
    .map((line) => line.split(":")[0]!.trim())
    .filter(Boolean)
    .sort();
}

const lines = (text: string) => text.split("\n").filter(Boolean);

const world = hostileWorld();
const PLACES = ["a RUN step", "tbuild run"] as const;
type Place = (typeof PLACES)[number];
let disk: ReturnType<typeof hostBlockDevice>;
const diskMarker = `host-block-device-${randomBytes(8).toString("hex")}`;
beforeAll(() => {
  disk = hostBlockDevice(path.join(world.dir("disk"), "disk.img"), diskMarker);
});
afterAll(() => disk?.detach());
const hostHostnameBefore = hostHostname();
const corePatternBefore = readFileSync("/proc/sys/kernel/core_pattern", "utf8");

describe.each(MODES)("the sandbox as an attacker probes it, %s", (mode: Mode) => {
  let store = "";
  let canary: Canary;
  const results = {} as Record<Place, Record<string, ProbeResult>>;
  const loopbackOnly = {} as Record<Place, string>;
  const outputs: string[] = [];

  beforeAll(() => {
    store = world.store(mode);
    canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile: [
        "FROM busybox AS probe",
        "COPY kit/ /",
        "FROM probe AS probed",
        "ARG CANARY",
        "ARG HOSTPID",
        "ARG DISK_MAJOR",
        "ARG DISK_MINOR",
        "RUN sh /probe/probe.sh > /results",
        "FROM probe AS probed-without-network",
        "RUN --network=none cat /proc/net/dev > /results",
        "FROM scratch AS results",
        "COPY --from=probed /results /probed",
        "COPY --from=probed-without-network /results /network-none",
        "",
      ].join("\n"),
      "kit/probe/probe.sh": probeScript(probes()),
    });
    addProbeKit(path.join(ctx, "kit"));
    const env = {
      CANARY: canary.dir,
      HOSTPID: String(process.pid),
      DISK_MAJOR: String(disk.major),
      DISK_MINOR: String(disk.minor),
    };
    const check = (what: string, result: { status: number | null; stdout: string; stderr: string }) => {
      outputs.push(result.stdout, result.stderr);
      if (result.status !== 0) throw new Error(`${what} failed (${result.status}): ${result.stderr}`);
      return result.stdout;
    };

    check(
      "building the probe image",
      world.tbuild(mode, store, ["build", "-q", "--target", "probe", "-t", "probe:latest", ctx]),
    );
    const out = path.join(world.dir("out", mode), "results");
    const buildArgs = Object.entries(env).flatMap(([key, value]) => ["--build-arg", `${key}=${value}`]);
    check(
      "the build of the probes",
      world.tbuild(mode, store, [
        "build",
        "--progress=plain",
        "--target",
        "results",
        ...buildArgs,
        "-o",
        `type=local,dest=${out}`,
        ctx,
      ]),
    );
    const probed = readFileSync(path.join(out, "probed"), "utf8");
    outputs.push(probed);
    results["a RUN step"] = parseProbeResults(probed);
    loopbackOnly["a RUN step"] = readFileSync(path.join(out, "network-none"), "utf8");

    const envFlags = Object.entries(env).flatMap(([key, value]) => ["-e", `${key}=${value}`]);
    results["tbuild run"] = parseProbeResults(
      check(
        "tbuild run of the probes",
        world.tbuild(mode, store, ["run", "--rm", ...envFlags, "probe:latest", "sh", "/probe/probe.sh"]),
      ),
    );
    loopbackOnly["tbuild run"] = check(
      "tbuild run --network none",
      world.tbuild(mode, store, ["run", "--rm", "--network", "none", "probe:latest", "cat", "/proc/net/dev"]),
    );
  }, 300_000);

  describe.each(PLACES)("inside %s", (place: Place) => {
    const probe = (name: string): ProbeResult => {
      const result = results[place]?.[name];
      if (!result) throw new Error(`the probe "${name}" printed no result`);
      return result;
    };
    /** The probe failed, with this reason in its output. */
    const refused = (name: string, reason: RegExp) => {
      const { exitCode, output } = probe(name);
      expect(output, `${name}: ${output}`).toMatch(reason);
      expect(exitCode, `${name} succeeded: ${output}`).not.toBe(0);
    };

    it("has Docker's default capabilities, effective", () => {
      expect(capabilityMask(probe("status").output, "CapEff").toString(16)).toBe(
        DOCKER_CAPABILITY_MASK.toString(16),
      );
    });

    it("has Docker's default capabilities as its bounding set, none inheritable or ambient", () => {
      const status = probe("status").output;
      expect(capabilityMask(status, "CapBnd").toString(16)).toBe(DOCKER_CAPABILITY_MASK.toString(16));
      expect(capabilityMask(status, "CapPrm").toString(16)).toBe(DOCKER_CAPABILITY_MASK.toString(16));
      expect(capabilityMask(status, "CapInh")).toBe(0n);
      expect(capabilityMask(status, "CapAmb")).toBe(0n);
    });

    it("runs under a seccomp filter", () => {
      expect(probe("status").output).toMatch(/^Seccomp:\s+2$/m);
    });

    it("cannot mount a tmpfs", () => refused("mount -t tmpfs", /permission denied|not permitted/i));
    it("cannot bind-mount", () => refused("mount --bind", /permission denied|not permitted/i));
    it("cannot unmount", () => refused("umount", /not permitted/));
    it("cannot unshare a user namespace", () =>
      refused("unshare -U", /unshare\(0x10000000\): Operation not permitted/));
    it("cannot unshare a mount namespace", () =>
      refused("unshare -m", /unshare\(0x20000\): Operation not permitted/));
    it("cannot enter another namespace", () => refused("nsenter", /setns\(\).*Operation not permitted/));
    it("cannot load a kernel module with insmod", () =>
      refused("insmod", /can't insert.*Operation not permitted/));

    it.each(REFUSED_SYSCALLS.filter((syscall) => mode === "root" || !syscall.rootOnly))(
      "is refused $call() with EPERM, as Docker's profile does ($why)",
      ({ call }) => {
        expect(probe(`syscall ${call}`)).toEqual({
          exitCode: 1,
          output: expect.stringMatching(new RegExp(`^errno ${EPERM} `)),
        });
      },
    );

    it("cannot write /proc/sys: the host's core_pattern stays", () => {
      refused("write /proc/sys/kernel/core_pattern", /Read-only file system/);
      expect(readFileSync("/proc/sys/kernel/core_pattern", "utf8")).toBe(corePatternBefore);
    });

    it("cannot drop the host's caches through /proc/sys/vm", () => {
      refused("write /proc/sys/vm/drop_caches", /Read-only file system/);
    });

    // Only the paths this host's kernel has: where it has none, there is nothing to protect.
    it.each(DOCKER_READONLY_PATHS.filter((file) => existsSync(file)))(
      "sees %s read-only, as Docker does",
      (readonly) => {
        expect(probe(`read-only ${readonly}`).output).toMatch(/^ro,/);
      },
    );

    it.each(DOCKER_MASKED_PATHS.filter((file) => existsSync(file)))(
      "sees %s masked (empty), as Docker does",
      (masked) => {
        const { output } = probe(`masked ${masked}`);
        expect(output).toMatch(/^mounted /m);
        expect(output).toMatch(/^(entries|bytes) 0$/m);
      },
    );

    it("cannot write /sys, mounted read-only", () => {
      refused("write /sys", /Read-only file system/);
      expect(probe("mount table").output).toMatch(/^\S+ \S+ \S+ \S+ \/sys ro,/m);
    });

    if (mode === "root") {
      // Rootless, the hierarchies are the host's, where the kernel lets no user namespace make one.
      it("cannot make cgroups in the cgroup hierarchies", () => {
        const { output } = probe("mkdir in the cgroup hierarchies");
        expect(output).not.toContain("made ");
        expect(output).toMatch(/^tried [1-9]/m);
      });
    }

    it("cannot change the hostname; the host's stays", () => {
      refused("hostname x", /sethostname: Operation not permitted/);
      expect(probe("hostname").output).not.toBe(hostHostnameBefore);
      expect(hostHostname()).toBe(hostHostnameBefore);
    });

    it("has Docker's default /dev and no host device", () => {
      expect(lines(probe("/dev").output).sort()).toEqual([...DOCKER_DEV].sort());
      expect(lines(probe("/dev/pts").output)).toEqual(["ptmx"]);
    });

    if (mode === "root") {
      // Rootless, the kernel refuses mknod of a device in a user namespace, whatever the sandbox.
      it("cannot read a host block device through a device node it makes", () => {
        // The host itself can: the probe reads something real.
        expect(execFileSync("head", ["-c", "512", disk.node]).toString()).toContain(diskMarker);
        refused("mknod a host block device and read it", /Operation not permitted/);
        expect(probe("mknod a host block device and read it").output).not.toContain(diskMarker);
      });

      it("cannot read kernel memory through a /dev/mem it makes", () => {
        refused("mknod /dev/mem and read it", /Operation not permitted/);
      });

      it("cannot read the kernel log through a /dev/kmsg it makes", () => {
        expect(
          execFileSync("dd", ["if=/dev/kmsg", "bs=8192", "count=1"], { stdio: ["ignore", "pipe", "ignore"] })
            .length,
        ).toBeGreaterThan(0);
        refused("mknod /dev/kmsg and read it", /Operation not permitted/);
      });
    }

    it("finds its own root at /proc/1/root, not the host's", () => {
      const own = lines(probe("/").output);
      expect(own).toContain("probe");
      expect(lines(probe("/proc/1/root").output)).toEqual(own);
    });

    it("cannot reach the canary by its host path, directly or through /proc/*/root", () => {
      refused("the canary by its host path", /No such file or directory/);
      refused("the canary through /proc/*/root", /No such file or directory/);
    });

    it("sees none of the host's processes, and cannot signal or ptrace one", () => {
      const pids = lines(probe("processes").output).map(Number);
      expect(pids).toContain(1);
      expect(pids).not.toContain(process.pid);
      expect(pids.length).toBeLessThan(10);
      refused("kill -0 the host's process", /No such process/);
      expect(probe("ptrace the host's process").output).toMatch(new RegExp(`^errno ${ESRCH} `));
    });

    it("stays inside its root after the chroot escape (chroot into a subdirectory, climb out with ..)", () => {
      const { exitCode, output } = probe("chroot breakout");
      expect(exitCode, output).toBe(0);
      const [reached, canaryLine] = lines(output);
      expect(reached?.split(" ")).toEqual(lines(probe("/").output).sort());
      expect(canaryLine).toBe("canary unreachable");
    });

    it("shares the host's network by default, as BuildKit's OCI worker does", () => {
      expect(interfaces(probe("network").output)).toEqual(interfaces(readFileSync("/proc/net/dev", "utf8")));
    });

    it("has only loopback with --network none", () => {
      expect(interfaces(loopbackOnly[place])).toEqual(["lo"]);
    });
  });

  it("refuses RUN --security=insecure, running nothing", () => {
    const ctx = world.context({
      Dockerfile: "FROM busybox\nRUN --security=insecure echo insecure-step-$((6*7))\n",
    });
    const result = world.tbuild(mode, store, ["build", "--progress=plain", ctx]);
    outputs.push(result.stdout, result.stderr);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(
      "ERROR: RUN --security=insecure is not supported yet: tbuild runs every step sandboxed",
    );
    expect(result.stderr).not.toMatch(/^\s+at /m);
    // The step's own output (the shell's arithmetic, not the echoed command line).
    expect(result.stderr).not.toContain("insecure-step-42");
  });

  it("leaves the canary untouched, and its secret in no output", () => {
    canary.expectUntouched(...outputs);
  });

  it("leaves the store usable", () => {
    world.expectStoreUsable(mode, store);
  });
});
