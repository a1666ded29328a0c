/**
 * The runtime config the sandbox hands to runc, checked without running it: valid against the
 * runtime-spec schema, with Docker's defaults, and shaped for root or for tbuild's user namespace.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import AjvDraft04 from "ajv-draft-04";
import { describe, expect, it } from "vitest";
import type { RuntimeSpec } from "../../../oci/spec.js";
import {
  buildRuntimeSpec,
  convertSeccompProfile,
  DEFAULT_PATH,
  DOCKER_DEFAULT_CAPABILITIES,
  DOCKER_MASKED_PATHS,
  DOCKER_READONLY_PATHS,
  type DockerSeccompProfile,
  dockerDefaultSeccompProfile,
  findRunc,
  type HostFacts,
  parseHardLimits,
  probeHost,
  SandboxError,
  type SandboxSpec,
} from "../../../worker/sandbox/index.js";
import { projectRoot } from "../../helpers/cli.js";

const schemaDir = path.join(projectRoot, "test/fixtures/oci-runtime-schema");
// The package is CommonJS: under nodenext its default import is the module, whose `default` is the class.
const ajv = new AjvDraft04.default({ allErrors: true, strict: false });
for (const file of readdirSync(schemaDir).filter((f) => f.endsWith(".json"))) {
  ajv.addSchema(JSON.parse(readFileSync(path.join(schemaDir, file), "utf8")) as object, file);
}
// The copy holds the Linux schemas only; config-schema.json also refers to the other platforms'
// sections, which a config for runc never has: they stand here as schemas that accept anything.
for (const platform of ["solaris", "windows", "vm", "zos", "freebsd"]) {
  ajv.addSchema({ [platform]: {} }, `config-${platform}.json`);
}
const validateConfig = ajv.getSchema("config-schema.json");

function schemaErrors(config: RuntimeSpec): string[] {
  if (!validateConfig) throw new Error("config-schema.json did not load");
  // Round-trip through JSON: the schema judges the file runc reads, not the object.
  if (validateConfig(JSON.parse(JSON.stringify(config)))) return [];
  return (validateConfig.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
}

const root: HostFacts = {
  arch: "x64",
  kernelRelease: "6.1.0-13-amd64",
  rootless: false,
  hardLimits: { RLIMIT_NOFILE: 20000, RLIMIT_NPROC: Number.POSITIVE_INFINITY },
  bundleDir: "/state/abc/bundle",
  containerId: "0123456789abcdef0123",
};
const rootless: HostFacts = { ...root, rootless: true };
const noSupplementary = { uid: 0, gid: 0, additionalGids: [], home: "/root" };

function spec(extra: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    rootfs: "/rootfs",
    args: ["sh", "-c", "true"],
    env: [],
    cwd: "/",
    user: "",
    network: "host",
    ...extra,
  };
}

const destinations = (config: RuntimeSpec) => (config.mounts ?? []).map((m) => m.destination);
const namespaces = (config: RuntimeSpec) => (config.linux?.namespaces ?? []).map((n) => n.type).sort();

describe("the runtime config", () => {
  it("is valid against the runtime-spec schema, as root and rootless, in every shape", async () => {
    const shapes: SandboxSpec[] = [
      spec(),
      spec({ network: "none", terminal: true, readonlyRootfs: true, hostname: "box" }),
      spec({
        extraHosts: { "db.local": "10.0.0.5" },
        mounts: [
          { type: "bind", source: "/srv/data", destination: "/data", readonly: true },
          { type: "tmpfs", destination: "/scratch", options: ["size=1m"] },
        ],
      }),
    ];
    const users = [
      noSupplementary,
      { uid: 1000, gid: 1000, additionalGids: [2000, 2001], home: "/home/app" },
    ];
    const thisMachine: HostFacts = { ...(await probeHost()), bundleDir: "/state/x/bundle", containerId: "x" };
    for (const host of [root, rootless, thisMachine]) {
      for (const shape of shapes) {
        for (const ids of users) expect(schemaErrors(buildRuntimeSpec(shape, ids, host))).toEqual([]);
      }
    }
  });

  it("gives Docker's default capabilities, exactly, in the bounding, effective and permitted sets", () => {
    const { capabilities } = buildRuntimeSpec(spec(), noSupplementary, root).process ?? {};
    const docker = [
      "CHOWN",
      "DAC_OVERRIDE",
      "FSETID",
      "FOWNER",
      "MKNOD",
      "NET_RAW",
      "SETGID",
      "SETUID",
      "SETFCAP",
      "SETPCAP",
      "NET_BIND_SERVICE",
      "SYS_CHROOT",
      "KILL",
      "AUDIT_WRITE",
    ].map((c) => `CAP_${c}`);
    expect([...DOCKER_DEFAULT_CAPABILITIES].sort()).toEqual([...docker].sort());
    for (const set of [capabilities?.bounding, capabilities?.effective, capabilities?.permitted]) {
      expect([...(set ?? [])].sort()).toEqual([...docker].sort());
    }
    expect(capabilities?.ambient ?? []).toEqual([]);
    expect(capabilities?.inheritable ?? []).toEqual([]);
  });

  it("masks and makes read-only Docker's paths", () => {
    const { linux } = buildRuntimeSpec(spec(), noSupplementary, rootless);
    expect(linux?.maskedPaths).toEqual([...DOCKER_MASKED_PATHS]);
    expect(linux?.maskedPaths).toEqual(
      expect.arrayContaining(["/proc/kcore", "/proc/keys", "/sys/firmware"]),
    );
    expect(linux?.readonlyPaths).toEqual([
      "/proc/bus",
      "/proc/fs",
      "/proc/irq",
      "/proc/sys",
      "/proc/sysrq-trigger",
    ]);
    expect([...DOCKER_READONLY_PATHS]).toEqual(linux?.readonlyPaths);
  });

  it("creates mount, pid, ipc and uts namespaces, and a network namespace only for network none", () => {
    expect(namespaces(buildRuntimeSpec(spec(), noSupplementary, root))).toEqual([
      "ipc",
      "mount",
      "pid",
      "uts",
    ]);
    expect(namespaces(buildRuntimeSpec(spec({ network: "none" }), noSupplementary, rootless))).toEqual([
      "ipc",
      "mount",
      "network",
      "pid",
      "uts",
    ]);
  });

  it("as root puts the container in a cgroup of its own with Docker's device rules; rootless asks for no cgroups", () => {
    const asRoot = buildRuntimeSpec(spec(), noSupplementary, root);
    expect(asRoot.linux?.cgroupsPath).toBe("/tbuild/0123456789abcdef0123");
    expect(asRoot.linux?.resources?.devices).toContainEqual({ allow: false, access: "rwm" });
    expect(destinations(asRoot)).toContain("/sys/fs/cgroup");

    const asUser = buildRuntimeSpec(spec(), noSupplementary, rootless);
    expect(asUser.linux?.cgroupsPath).toBeUndefined();
    expect(asUser.linux?.resources).toBeUndefined();
    expect(destinations(asUser)).not.toContain("/sys/fs/cgroup");
    // tbuild is already root of its user namespace: runc gets no user namespace or id mappings to make.
    expect(namespaces(asUser)).not.toContain("user");
    expect(asUser.linux?.uidMappings).toBeUndefined();
  });

  it("mounts /proc, a minimal /dev, /dev/pts, /dev/shm, /dev/mqueue and a read-only /sys", () => {
    const config = buildRuntimeSpec(spec(), noSupplementary, root);
    const byDestination = new Map((config.mounts ?? []).map((m) => [m.destination, m]));
    expect(byDestination.get("/proc")?.type).toBe("proc");
    expect(byDestination.get("/dev")?.type).toBe("tmpfs");
    expect(byDestination.get("/dev/pts")?.type).toBe("devpts");
    expect(byDestination.get("/dev/shm")?.options).toEqual(
      expect.arrayContaining(["nosuid", "noexec", "nodev"]),
    );
    expect(byDestination.get("/dev/mqueue")?.type).toBe("mqueue");
    expect(byDestination.get("/sys")).toMatchObject({
      type: "sysfs",
      options: expect.arrayContaining(["ro"]),
    });
  });

  it("rootless and sharing the host's network, binds the host's /sys recursively read-only", () => {
    const sys = buildRuntimeSpec(spec(), noSupplementary, rootless).mounts?.find(
      (m) => m.destination === "/sys",
    );
    expect(sys).toMatchObject({
      type: "bind",
      source: "/sys",
      options: expect.arrayContaining(["rbind", "rro"]),
    });
    const own = buildRuntimeSpec(spec({ network: "none" }), noSupplementary, rootless).mounts?.find(
      (m) => m.destination === "/sys",
    );
    expect(own?.type).toBe("sysfs");
  });

  it("binds the run's /etc/hosts, /etc/resolv.conf and /etc/hostname, unless a mount of the spec takes their place", () => {
    const config = buildRuntimeSpec(spec(), noSupplementary, root);
    for (const [destination, file] of [
      ["/etc/hosts", "hosts"],
      ["/etc/resolv.conf", "resolv.conf"],
      ["/etc/hostname", "hostname"],
    ]) {
      expect(config.mounts).toContainEqual(
        expect.objectContaining({ destination, type: "bind", source: `/state/abc/bundle/${file}` }),
      );
    }
    const mine = buildRuntimeSpec(
      spec({ mounts: [{ type: "bind", source: "/srv/hosts", destination: "/etc/hosts" }] }),
      noSupplementary,
      root,
    );
    expect((mine.mounts ?? []).filter((m) => m.destination === "/etc/hosts").map((m) => m.source)).toEqual([
      "/srv/hosts",
    ]);
  });

  it("orders the spec's mounts parents first, and makes read-only mounts read-only", () => {
    const config = buildRuntimeSpec(
      spec({
        mounts: [
          { type: "tmpfs", destination: "/data/cache" },
          { type: "bind", source: "/srv/data", destination: "/data", readonly: true },
        ],
      }),
      noSupplementary,
      root,
    );
    const mine = (config.mounts ?? []).slice(-2);
    expect(mine.map((m) => m.destination)).toEqual(["/data", "/data/cache"]);
    expect(mine[0].options).toEqual(expect.arrayContaining(["rbind", "ro"]));
    expect(mine[1].options).toEqual(expect.arrayContaining(["rw", "nosuid", "nodev"]));
  });

  it("lists the primary group first among the supplementary groups, as containerd does since CVE-2023-25173", () => {
    expect(buildRuntimeSpec(spec(), noSupplementary, root).process?.user).toEqual({
      uid: 0,
      gid: 0,
      additionalGids: [0],
    });
    const app = { uid: 1000, gid: 1000, additionalGids: [2000, 1000, 2001] };
    expect(buildRuntimeSpec(spec(), app, rootless).process?.user.additionalGids).toEqual([1000, 2000, 2001]);
  });

  it("fills PATH, HOSTNAME and HOME as Docker does, the spec's own values winning", () => {
    const env = (extra: Partial<SandboxSpec>, home?: string) =>
      buildRuntimeSpec(spec(extra), { uid: 0, gid: 0, additionalGids: [], ...(home ? { home } : {}) }, root)
        .process?.env;
    expect(env({ hostname: "box" }, "/root")).toEqual([`PATH=${DEFAULT_PATH}`, "HOSTNAME=box", "HOME=/root"]);
    expect(env({ env: ["PATH=/opt/bin", "A=1=2"] })).toEqual([
      "PATH=/opt/bin",
      "HOSTNAME=0123456789ab",
      "A=1=2",
      "HOME=/",
    ]);
    expect(env({ env: ["HOME=/work"], terminal: true }, "/root")).toContain("HOME=/work");
    expect(env({ terminal: true })).toContain("TERM=xterm");
  });

  it("defaults the hostname to the container id's first 12 characters, as Docker does", () => {
    expect(buildRuntimeSpec(spec(), noSupplementary, root).hostname).toBe("0123456789ab");
    expect(buildRuntimeSpec(spec({ hostname: "box" }), noSupplementary, root).hostname).toBe("box");
  });

  it("never asks for rlimits above the host's hard limits", () => {
    const limits = (host: HostFacts) => buildRuntimeSpec(spec(), noSupplementary, host).process?.rlimits;
    expect(limits(root)).toEqual([
      { type: "RLIMIT_NOFILE", hard: 20000, soft: 20000 },
      { type: "RLIMIT_NPROC", hard: 4194304, soft: 4194304 },
    ]);
    expect(limits({ ...root, hardLimits: { RLIMIT_NOFILE: 1024, RLIMIT_NPROC: 500 } })).toEqual([
      { type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 },
      { type: "RLIMIT_NPROC", hard: 500, soft: 500 },
    ]);
    const procLimits = readFileSync("/proc/self/limits", "utf8");
    const hard = parseHardLimits(procLimits);
    for (const limit of limits({ ...root, hardLimits: hard }) ?? []) {
      expect(limit.hard).toBeLessThanOrEqual(hard[limit.type as "RLIMIT_NOFILE"] ?? 0);
      expect(limit.soft).toBeLessThanOrEqual(limit.hard);
    }
  });

  it("reads hard limits from /proc/self/limits, unlimited as Infinity", () => {
    const text = [
      "Limit                     Soft Limit           Hard Limit           Units     ",
      "Max cpu time              unlimited            unlimited            seconds   ",
      "Max processes             96365                96365                processes ",
      "Max open files            1024                 20000                files     ",
    ].join("\n");
    expect(parseHardLimits(text)).toEqual({
      RLIMIT_CPU: Number.POSITIVE_INFINITY,
      RLIMIT_NPROC: 96365,
      RLIMIT_NOFILE: 20000,
    });
  });

  it("refuses what it cannot do with a SandboxError naming it", () => {
    const bad: Partial<SandboxSpec>[] = [
      { args: [] },
      { cwd: "work" },
      { env: ["NOVALUE"] },
      { mounts: [{ type: "bind", destination: "/data" }] },
      { mounts: [{ type: "tmpfs", destination: "relative" }] },
      { mounts: [{ type: "tmpfs", destination: "/" }] },
      { mounts: [{ type: "volume" as "bind", destination: "/v" }] },
      { network: "bridge" as "host" },
      { extraHosts: { "a b": "1.2.3.4" } },
    ];
    for (const extra of bad) {
      expect(() => buildRuntimeSpec(spec(extra), noSupplementary, root), JSON.stringify(extra)).toThrow(
        SandboxError,
      );
    }
    expect(() => buildRuntimeSpec(spec({ network: "bridge" as "host" }), noSupplementary, root)).toThrow(
      /not supported yet/,
    );
  });

  it("says how to install runc when it is missing", () => {
    expect(() => findRunc({ PATH: "/nonexistent" }, [])).toThrow(/apt-get install runc/);
    expect(findRunc({ PATH: "" })).toMatch(/\/runc$/);
  });
});

describe("Docker's seccomp profile in the runtime-spec form", () => {
  const profile = dockerDefaultSeccompProfile();
  const convert = (
    arch: string,
    capabilities: readonly string[] = DOCKER_DEFAULT_CAPABILITIES,
    kernel = "6.1.0",
  ) => convertSeccompProfile(profile, { arch, capabilities, kernelRelease: kernel });
  const allowed = (seccomp: ReturnType<typeof convert>) =>
    new Set(
      (seccomp.syscalls ?? [])
        .filter((s) => s.action === "SCMP_ACT_ALLOW" && !s.args)
        .flatMap((s) => s.names),
    );

  it("denies by default with EPERM, as Docker", () => {
    const seccomp = convert("x64");
    expect(seccomp.defaultAction).toBe("SCMP_ACT_ERRNO");
    expect(seccomp.defaultErrnoRet).toBe(1);
  });

  it("names the native architecture and its sub-architectures from archMap", () => {
    expect(convert("x64").architectures).toEqual(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    expect(convert("arm64").architectures).toEqual(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
    expect(convert("riscv64").architectures).toEqual(["SCMP_ARCH_RISCV64"]);
  });

  it("keeps groups by architecture", () => {
    expect(allowed(convert("x64")).has("arch_prctl")).toBe(true);
    expect(allowed(convert("arm64")).has("arch_prctl")).toBe(false);
    expect(allowed(convert("arm64")).has("arm_fadvise64_64")).toBe(true);
    expect(allowed(convert("x64")).has("arm_fadvise64_64")).toBe(false);
  });

  it("keeps groups by capability: Docker's set gets chroot but not mount, unshare or bpf", () => {
    const docker = allowed(convert("x64"));
    expect(docker.has("chroot")).toBe(true);
    for (const call of ["mount", "umount2", "unshare", "setns", "bpf", "reboot", "init_module", "syslog"]) {
      expect(docker.has(call), call).toBe(false);
    }
    const admin = allowed(convert("x64", [...DOCKER_DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]));
    expect(admin.has("mount")).toBe(true);
    expect(admin.has("unshare")).toBe(true);
  });

  it("without CAP_SYS_ADMIN allows clone only without namespace flags, and fails clone3 with ENOSYS", () => {
    const calls = convert("x64").syscalls ?? [];
    expect(calls).toContainEqual({
      names: ["clone"],
      action: "SCMP_ACT_ALLOW",
      args: [{ index: 0, value: 2114060288, op: "SCMP_CMP_MASKED_EQ" }],
    });
    expect(calls).toContainEqual({ names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 });
    const admin = convert("x64", [...DOCKER_DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"]).syscalls ?? [];
    expect(admin.some((s) => s.names.includes("clone3") && s.action === "SCMP_ACT_ERRNO")).toBe(false);
  });

  it("keeps argument conditions (socket families, personality values)", () => {
    const calls = convert("x64").syscalls ?? [];
    expect(calls).toContainEqual({
      names: ["socket"],
      action: "SCMP_ACT_ALLOW",
      args: [{ index: 0, value: 40, op: "SCMP_CMP_GT" }],
    });
    expect(calls.filter((s) => s.names[0] === "personality").map((s) => s.args?.[0].value)).toEqual([
      0, 8, 131072, 131080, 4294967295,
    ]);
  });

  it("keeps groups by minimum kernel", () => {
    expect(allowed(convert("x64", DOCKER_DEFAULT_CAPABILITIES, "4.8.0")).has("ptrace")).toBe(true);
    expect(allowed(convert("x64", DOCKER_DEFAULT_CAPABILITIES, "4.4.0")).has("ptrace")).toBe(false);
  });

  it("resolves excludes by architecture and singular names", () => {
    const custom: DockerSeccompProfile = {
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [
        { name: "one", action: "SCMP_ACT_ALLOW", excludes: { arches: ["amd64"] } },
        { name: "two", action: "SCMP_ACT_ALLOW", excludes: { minKernel: "5.0" } },
        { names: ["three"], action: "SCMP_ACT_ALLOW" },
      ],
    };
    const result = convertSeccompProfile(custom, { arch: "x64", capabilities: [], kernelRelease: "4.19.0" });
    expect(result.syscalls).toEqual([
      { names: ["two"], action: "SCMP_ACT_ALLOW" },
      { names: ["three"], action: "SCMP_ACT_ALLOW" },
    ]);
    expect(result.architectures).toBeUndefined();
  });
});
