/**
 * Docker's default seccomp profile, converted from Docker's own format to the runtime-spec
 * `linux.seccomp` form the way moby's `setupSeccomp` (profiles/seccomp/seccomp_linux.go) does it:
 * the architectures are the native one and its sub-architectures from `archMap`, and each syscall
 * group is kept or dropped by its `includes`/`excludes` conditions on architecture, capabilities
 * (the container's bounding set) and minimum kernel version.
 */
import { readFileSync } from "node:fs";
import { endianness } from "node:os";
import type { RuntimeSeccomp } from "../../oci/spec.js";
import { SandboxError } from "./errors.js";

/** A group's conditions: every listed kind must hold (includes) or any holding drops it (excludes). */
export interface DockerSeccompFilter {
  arches?: string[];
  caps?: string[];
  minKernel?: string;
}

export interface DockerSeccompSyscall {
  name?: string;
  names?: string[];
  action: string;
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[] | null;
  comment?: string;
  includes?: DockerSeccompFilter;
  excludes?: DockerSeccompFilter;
}

/** Docker's seccomp profile format (moby/profiles `seccomp.Seccomp`). */
export interface DockerSeccompProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  archMap?: { architecture: string; subArchitectures: string[] | null }[];
  flags?: string[];
  syscalls: DockerSeccompSyscall[];
}

/**
 * Node's `process.arch` as Go's GOARCH, the names the profile's `arches` conditions use (moby
 * compares them with `runtime.GOARCH`).
 */
export function goArch(nodeArch: string): string {
  switch (nodeArch) {
    case "x64":
      return "amd64";
    case "ia32":
      return "386";
    case "ppc64":
      return endianness() === "LE" ? "ppc64le" : "ppc64";
    case "mipsel":
      return "mipsle";
    case "loong64":
      return "loong64";
    default:
      return nodeArch;
  }
}

/** GOARCH → libseccomp's architecture name, as moby's `nativeToSeccomp`. */
const nativeToSeccomp: Record<string, string> = {
  "386": "SCMP_ARCH_X86",
  amd64: "SCMP_ARCH_X86_64",
  arm64: "SCMP_ARCH_AARCH64",
  arm: "SCMP_ARCH_ARM",
  mips64: "SCMP_ARCH_MIPS64",
  mips64n32: "SCMP_ARCH_MIPS64N32",
  mipsel64: "SCMP_ARCH_MIPSEL64",
  mips64le: "SCMP_ARCH_MIPSEL64",
  mipsel64n32: "SCMP_ARCH_MIPSEL64N32",
  mips: "SCMP_ARCH_MIPS",
  mipsle: "SCMP_ARCH_MIPSEL",
  ppc: "SCMP_ARCH_PPC",
  ppc64: "SCMP_ARCH_PPC64",
  ppc64le: "SCMP_ARCH_PPC64LE",
  riscv64: "SCMP_ARCH_RISCV64",
  s390: "SCMP_ARCH_S390",
  s390x: "SCMP_ARCH_S390X",
  loong64: "SCMP_ARCH_LOONGARCH64",
};

/** "6.18.44-fc-v669" ≥ "4.8": compares major.minor, as moby's `kernelGreaterEqualThan`. */
export function kernelAtLeast(release: string, minimum: string): boolean {
  const parse = (text: string): [number, number] => {
    const match = /^(\d+)\.(\d+)/.exec(text);
    if (!match) throw new SandboxError("E_SANDBOX_SECCOMP", `cannot read a kernel version from "${text}"`);
    return [Number(match[1]), Number(match[2])];
  };
  const [major, minor] = parse(release);
  const [wantMajor, wantMinor] = parse(minimum);
  return major > wantMajor || (major === wantMajor && minor >= wantMinor);
}

export interface SeccompTarget {
  /** Node's `process.arch` of the machine the container runs on. */
  arch: string;
  /** The container's bounding capability set (`CAP_*` names). */
  capabilities: readonly string[];
  /** `uname -r`. */
  kernelRelease: string;
}

function keeps(call: DockerSeccompSyscall, arch: string, caps: ReadonlySet<string>, kernel: string): boolean {
  const { excludes, includes } = call;
  if (excludes) {
    if (excludes.arches?.includes(arch)) return false;
    if (excludes.caps?.some((cap) => caps.has(cap))) return false;
    if (excludes.minKernel && kernelAtLeast(kernel, excludes.minKernel)) return false;
  }
  if (includes) {
    if (includes.arches && includes.arches.length > 0 && !includes.arches.includes(arch)) return false;
    if (includes.caps && !includes.caps.every((cap) => caps.has(cap))) return false;
    if (includes.minKernel && !kernelAtLeast(kernel, includes.minKernel)) return false;
  }
  return true;
}

/** The profile in the runtime-spec form for one machine and capability set. */
export function convertSeccompProfile(profile: DockerSeccompProfile, target: SeccompTarget): RuntimeSeccomp {
  const arch = goArch(target.arch);
  const caps = new Set(target.capabilities);
  const architectures = [...(profile.architectures ?? [])];
  const native = nativeToSeccomp[arch];
  for (const entry of profile.archMap ?? []) {
    if (entry.architecture === native)
      architectures.push(entry.architecture, ...(entry.subArchitectures ?? []));
  }
  const syscalls: NonNullable<RuntimeSeccomp["syscalls"]> = [];
  for (const call of profile.syscalls) {
    if (call.name && call.names && call.names.length > 0) {
      throw new SandboxError(
        "E_SANDBOX_SECCOMP",
        `seccomp profile: a syscall group has both "name" (${call.name}) and "names"`,
      );
    }
    if (!keeps(call, arch, caps, target.kernelRelease)) continue;
    const names = call.name ? [call.name] : (call.names ?? []);
    syscalls.push({
      names,
      action: call.action,
      ...(call.errnoRet === undefined ? {} : { errnoRet: call.errnoRet }),
      ...(call.args && call.args.length > 0 ? { args: call.args.map((a) => ({ ...a })) } : {}),
    });
  }
  return {
    defaultAction: profile.defaultAction,
    ...(profile.defaultErrnoRet === undefined ? {} : { defaultErrnoRet: profile.defaultErrnoRet }),
    ...(architectures.length > 0 ? { architectures } : {}),
    ...(profile.flags && profile.flags.length > 0 ? { flags: [...profile.flags] } : {}),
    syscalls,
  };
}

// Read from the source tree: beside this module when run from source, three levels up from
// dist/worker/sandbox/ when run from the build (tsc copies no JSON).
const profileLocations = [
  new URL("./seccomp/default.json", import.meta.url),
  new URL("../../../worker/sandbox/seccomp/default.json", import.meta.url),
];

let dockerDefault: DockerSeccompProfile | undefined;

/** Docker's default profile (worker/sandbox/seccomp/default.json), read once. */
export function dockerDefaultSeccompProfile(): DockerSeccompProfile {
  if (dockerDefault) return dockerDefault;
  for (const location of profileLocations) {
    let text: string;
    try {
      text = readFileSync(location, "utf8");
    } catch {
      continue;
    }
    dockerDefault = JSON.parse(text) as DockerSeccompProfile;
    return dockerDefault;
  }
  throw new SandboxError(
    "E_SANDBOX_SECCOMP",
    `Docker's default seccomp profile is missing (looked in ${profileLocations.map((l) => l.pathname).join(", ")}); reinstall tbuild`,
  );
}
