/**
 * Platforms (`linux/amd64`, `linux/arm/v7`) with containerd's semantics (containerd/platforms):
 * the specifier syntax, the normalization of aliases (`x86_64`, `aarch64`, `armhf`, ...), and the
 * default matcher's notion of which image platforms a wanted platform can run, best first.
 */
import { readFileSync } from "node:fs";
import { endianness, machine } from "node:os";
import { TbuildError } from "../errors/index.js";

/** The OCI image-spec platform object, with its field names. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

/** A platform specifier that cannot be parsed; the message names it and what is wrong. */
export class InvalidPlatformError extends TbuildError {
  /** The specifier as given. */
  readonly specifier: string;

  constructor(specifier: string, reason: string) {
    super("E_INVALID_PLATFORM", `invalid platform ${JSON.stringify(specifier)}: ${reason}`);
    this.specifier = specifier;
  }
}

/**
 * tbuild builds Linux images, so a specifier that names only an architecture (`arm64`) means
 * Linux, wherever tbuild runs; containerd would take the host's operating system.
 */
const DEFAULT_OS = "linux";

const COMPONENT_RE = /^[A-Za-z0-9_.-]+$/;
const OS_RE = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$/;

const KNOWN_OS = new Set([
  "aix",
  "android",
  "darwin",
  "dragonfly",
  "freebsd",
  "hurd",
  "illumos",
  "ios",
  "js",
  "linux",
  "nacl",
  "netbsd",
  "openbsd",
  "plan9",
  "solaris",
  "windows",
  "zos",
]);
const KNOWN_ARCH = new Set([
  "386",
  "amd64",
  "amd64p32",
  "arm",
  "armbe",
  "arm64",
  "arm64be",
  "ppc64",
  "ppc64le",
  "loong64",
  "mips",
  "mipsle",
  "mips64",
  "mips64le",
  "mips64p32",
  "mips64p32le",
  "ppc",
  "riscv",
  "riscv64",
  "s390",
  "s390x",
  "sparc",
  "sparc64",
  "wasm",
]);

/**
 * Parses `<os>[(<version>[+<feature>]...)][/<arch>[/<variant>]]` or a bare `<arch>`, and returns
 * the normalized platform (as buildx does with `--platform`): `linux/arm64/v8` → linux/arm64,
 * `linux/armhf` → linux/arm/v7, `x86_64` → linux/amd64, `linux` → linux on the host's architecture.
 */
export function parsePlatform(specifier: string): Platform {
  const fail = (reason: string): never => {
    throw new InvalidPlatformError(specifier, reason);
  };
  if (specifier === "") fail("the platform is empty (expected e.g. linux/amd64)");
  if (specifier.includes("*")) fail("wildcards are not supported");

  const parts = splitN(specifier, "/", 4);
  const osMatch = OS_RE.exec(parts[0]!);
  if (osMatch === null) {
    fail(
      `${JSON.stringify(parts[0])} is not a valid operating system (letters, digits, "_" and "-", optionally followed by "(version+feature...)")`,
    );
  }
  const [, osName, osVersionText = "", featuresText = ""] = osMatch!;
  parts.slice(1).forEach((part, i) => {
    if (!COMPONENT_RE.test(part)) {
      const what = i === 0 ? "architecture" : i === 1 ? "variant" : "component";
      fail(`${JSON.stringify(part)} is not a valid ${what} (letters, digits, "_", "." and "-")`);
    }
  });

  const decode = (value: string, what: string): string => {
    if (!value.includes("%")) return value;
    try {
      return decodeURIComponent(value);
    } catch {
      return fail(`${what} ${JSON.stringify(value)} has an invalid %-escape`);
    }
  };
  const platform: Platform = { os: normalizeOS(osName!), architecture: "" };
  const osVersion = decode(osVersionText, "OS version");
  if (osVersion !== "") platform["os.version"] = osVersion;
  if (featuresText !== "") {
    platform["os.features"] = featuresText
      .slice(1)
      .split("+")
      .map((feature) => decode(feature, "OS feature"));
  }

  switch (parts.length) {
    case 1: {
      if (KNOWN_OS.has(platform.os)) {
        const host = hostPlatform();
        platform.architecture = host.architecture;
        if (host.variant !== undefined) platform.variant = host.variant;
        break;
      }
      const [architecture, variant] = normalizeArch(parts[0]!, "");
      if (!KNOWN_ARCH.has(architecture)) {
        fail(
          `${JSON.stringify(parts[0])} is neither a known operating system nor a known architecture (expected e.g. linux/amd64 or arm64)`,
        );
      }
      platform.os = DEFAULT_OS;
      platform.architecture = architecture;
      if (variant !== "") platform.variant = variant;
      break;
    }
    case 2:
      platform.architecture = parts[1]!;
      break;
    case 3:
      platform.architecture = parts[1]!;
      platform.variant = parts[2]!;
      break;
    default:
      fail("too many components (expected os/architecture[/variant])");
  }
  return normalizePlatform(platform);
}

/**
 * containerd's normalization: lower-cased names; `macos` → darwin; `x86_64`/`x86-64` → amd64
 * (variant v1 dropped); `aarch64` → arm64 (variant v8, 8 or v8.0 dropped; 9 and v9.0 → v9);
 * `armhf` → arm/v7; `armel` → arm/v6; `arm` without a variant → arm/v7, `arm/6` → arm/v6;
 * `i386` → 386; OS features sorted and de-duplicated.
 */
export function normalizePlatform(platform: Platform): Platform {
  const [architecture, variant] = normalizeArch(platform.architecture, platform.variant ?? "");
  const normalized: Platform = { os: normalizeOS(platform.os), architecture };
  if (variant !== "") normalized.variant = variant;
  const osVersion = platform["os.version"];
  if (osVersion !== undefined && osVersion !== "") normalized["os.version"] = osVersion;
  const features = platform["os.features"];
  if (features !== undefined && features.length > 0)
    normalized["os.features"] = [...new Set(features)].sort();
  return normalized;
}

function normalizeOS(os: string): string {
  if (os === "") return DEFAULT_OS;
  const lower = os.toLowerCase();
  return lower === "macos" ? "darwin" : lower;
}

function normalizeArch(arch: string, variant: string): [string, string] {
  const a = arch.toLowerCase();
  const v = variant.toLowerCase();
  switch (a) {
    case "i386":
      return ["386", ""];
    case "x86_64":
    case "x86-64":
    case "amd64":
      return ["amd64", v === "v1" ? "" : v];
    case "aarch64":
    case "arm64":
      if (v === "8" || v === "v8" || v === "v8.0") return ["arm64", ""];
      if (v === "9" || v === "9.0" || v === "v9.0") return ["arm64", "v9"];
      return ["arm64", v];
    case "armhf":
      return ["arm", "v7"];
    case "armel":
      return ["arm", "v6"];
    case "arm":
      if (v === "" || v === "7") return ["arm", "v7"];
      if (v === "5" || v === "6" || v === "8") return ["arm", `v${v}`];
      return ["arm", v];
    default:
      return [a, v];
  }
}

/**
 * The specifier form: `linux/amd64`, `linux/arm/v7`, and with OS options when present,
 * `windows(10.0.17763+win32k)/amd64` (characters that would be ambiguous are %-escaped).
 */
export function formatPlatform(platform: Platform): string {
  if (platform.os === "") return "unknown";
  const encode = (value: string): string =>
    value.replace(/[%+()/]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`);
  let options = encode(platform["os.version"] ?? "");
  for (const feature of [...(platform["os.features"] ?? [])].sort()) {
    if (feature !== "") options += `+${encode(feature)}`;
  }
  const os = options === "" ? platform.os : `${platform.os}(${options})`;
  return [os, platform.architecture, platform.variant ?? ""].filter((part) => part !== "").join("/");
}

/** What hostPlatform reads from the machine; tests pass their own. */
export interface HostFacts {
  /** As `process.platform`: `linux`, `darwin`, `win32`, ... */
  platform: string;
  /** As `process.arch`: `x64`, `arm64`, `arm`, `ia32`, `ppc64`, ... */
  arch: string;
  /** As `os.endianness()`; tells ppc64le from ppc64. */
  endianness?: "BE" | "LE";
  /** The text of /proc/cpuinfo, read for the ARM variant. */
  cpuinfo?: string;
  /** As `os.machine()` (`uname -m`), used when /proc/cpuinfo does not name the ARM architecture. */
  machine?: string;
}

let cachedHost: Platform | undefined;

/**
 * The platform of this machine, normalized: OS and architecture from Node's names mapped to Go's
 * (x64 → amd64, ia32 → 386, ppc64 little-endian → ppc64le), and for 32-bit ARM the variant read
 * from /proc/cpuinfo (or `uname -m`), v7 when neither tells. Unlike containerd, no amd64
 * micro-architecture level is added: Docker's amd64 images carry no variant.
 */
export function hostPlatform(facts?: HostFacts): Platform {
  if (facts === undefined) {
    cachedHost ??= platformOfHost({
      platform: process.platform,
      arch: process.arch,
      endianness: endianness(),
      get cpuinfo() {
        return readCpuinfo();
      },
      get machine() {
        return machine();
      },
    });
    return { ...cachedHost };
  }
  return platformOfHost(facts);
}

function readCpuinfo(): string | undefined {
  try {
    return readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return undefined;
  }
}

const NODE_ARCH: Record<string, string> = {
  x64: "amd64",
  ia32: "386",
  arm: "arm",
  arm64: "arm64",
  mipsel: "mipsle",
  mips: "mips",
  ppc: "ppc",
  riscv64: "riscv64",
  loong64: "loong64",
  s390: "s390",
  s390x: "s390x",
};

function platformOfHost(facts: HostFacts): Platform {
  const os = facts.platform === "win32" ? "windows" : facts.platform === "sunos" ? "solaris" : facts.platform;
  let architecture = NODE_ARCH[facts.arch] ?? facts.arch;
  if (facts.arch === "ppc64") architecture = facts.endianness === "LE" ? "ppc64le" : "ppc64";
  const platform: Platform = { os, architecture };
  if (architecture === "arm") platform.variant = armVariant(facts);
  return normalizePlatform(platform);
}

/** containerd's reading of the ARM architecture version, falling back to v7. */
function armVariant(facts: HostFacts): string {
  const cpuinfo = facts.cpuinfo;
  const field = (name: string): string | undefined => {
    for (const line of (cpuinfo ?? "").split("\n")) {
      const parts = line.split(":");
      if (parts.length > 1 && parts[0]!.trim().toLowerCase() === name) return parts[1]!.trim();
    }
    return undefined;
  };
  let version = field("cpu architecture");
  if (version === undefined) {
    const uname = (facts.machine ?? "").toLowerCase();
    if (uname === "aarch64") version = "8";
    else if (uname.startsWith("armv") && uname.length >= 5) version = uname.slice(4, 5);
  }
  // Raspberry Pi ARMv6 boards report architecture 7 (a kernel quirk); their model name tells.
  if (version === "7" && (field("model name") ?? "").toLowerCase().startsWith("armv6-compatible"))
    version = "6";
  switch ((version ?? "").toLowerCase()) {
    case "8":
    case "aarch64":
      return "v8";
    case "6":
    case "6tej":
      return "v6";
    case "5":
    case "5t":
    case "5te":
    case "5tej":
      return "v5";
    case "4":
    case "4t":
      return "v4";
    case "3":
      return "v3";
    default:
      return "v7";
  }
}

/**
 * True when an image for `candidate` can run where `wanted` is asked for, by containerd's default
 * matcher (`platforms.Only`): the same platform after normalization, or an older compatible one:
 * amd64/vN accepts amd64/v1..vN-1 and 386; arm/vN accepts arm/v5..vN-1; arm64 accepts arm/v8 down
 * to arm/v5; arm64/v8.x accepts v8.0..v8.x-1 and arm64/v9.x accepts v9.0..v9.x-1 and v8.0..v8.x+5.
 * The candidate's OS features must all be among the wanted ones.
 */
export function platformMatches(wanted: Platform, candidate: Platform): boolean {
  return matchRank(compatibleVector(wanted), candidate) >= 0;
}

/**
 * The candidate an OCI index should resolve to for `wanted`: the one matching the most preferred
 * platform of containerd's order (the exact platform first, then ever older compatible ones), the
 * earliest in the list among equals; undefined when none can run. Candidates without a platform
 * (`platformOf` returns undefined) never match.
 */
export function selectPlatform<T extends Platform>(wanted: Platform, candidates: readonly T[]): T | undefined;
export function selectPlatform<T>(
  wanted: Platform,
  candidates: readonly T[],
  platformOf: (candidate: T) => Platform | undefined,
): T | undefined;
export function selectPlatform<T>(
  wanted: Platform,
  candidates: readonly T[],
  platformOf: (candidate: T) => Platform | undefined = (candidate) => candidate as Platform,
): T | undefined {
  const vector = compatibleVector(wanted);
  let best: T | undefined;
  let bestRank = Number.POSITIVE_INFINITY;
  for (const candidate of candidates) {
    const platform = platformOf(candidate);
    if (platform === undefined) continue;
    const rank = matchRank(vector, platform);
    if (rank >= 0 && rank < bestRank) {
      best = candidate;
      bestRank = rank;
    }
  }
  return best;
}

/** The index of the first platform in the vector that `candidate` matches, or -1. */
function matchRank(vector: Platform[], candidate: Platform): number {
  const normalized = normalizePlatform(candidate);
  return vector.findIndex((entry) => matchesExactly(entry, normalized, candidate["os.version"] ?? ""));
}

function matchesExactly(entry: Platform, candidate: Platform, candidateOSVersion: string): boolean {
  if (entry.os !== candidate.os || entry.architecture !== candidate.architecture) return false;
  if ((entry.variant ?? "") !== (candidate.variant ?? "")) return false;
  if (entry.os === "windows" && !windowsVersionsCompatible(entry["os.version"] ?? "", candidateOSVersion))
    return false;
  const offered = new Set(entry["os.features"] ?? []);
  return (candidate["os.features"] ?? []).every((feature) => offered.has(feature));
}

/** containerd's platformVector: the wanted platform, then the older ones it can also run, in order of preference. */
function compatibleVector(wanted: Platform): Platform[] {
  const base = normalizePlatform(wanted);
  const withVariant = (architecture: string, variant: string): Platform =>
    normalizePlatform({ ...base, architecture, variant });
  const vector: Platform[] = [base];
  const variant = base.variant ?? "";
  switch (base.architecture) {
    case "amd64": {
      const level = goAtoi(variant.replace(/^v/, ""));
      if (level !== undefined && level > 1) {
        for (let v = level - 1; v >= 1; v--) vector.push(withVariant("amd64", `v${v}`));
      }
      vector.push(withVariant("386", ""));
      break;
    }
    case "arm": {
      const version = goAtoi(variant.replace(/^v/, ""));
      if (version !== undefined && version > 5) {
        for (let v = version - 1; v >= 5; v--) vector.push(withVariant("arm", `v${v}`));
      }
      break;
    }
    case "arm64": {
      let arm64Variant = variant === "" ? "v8" : variant;
      const dot = arm64Variant.indexOf(".");
      const majorText = dot < 0 ? arm64Variant : arm64Variant.slice(0, dot);
      let major = goAtoi(majorText.replace(/^v/, ""));
      if (major !== undefined && major >= 8) {
        let minor = 0;
        // As containerd: a minor version is only read from variants like v8.3 (four characters).
        if (arm64Variant.length === 4 && dot >= 0) minor = goAtoi(arm64Variant.slice(dot + 1)) ?? 0;
        const named = (maj: number, min: number): string => (min === 0 ? `v${maj}` : `v${maj}.${min}`);
        if (major === 9) {
          for (let m = minor - 1; m >= 0; m--) vector.push(withVariant("arm64", named(9, m)));
          // v9.x descends from v8.(x+5).
          minor += 5;
          major = 8;
          vector.push(withVariant("arm64", `v8.${minor}`));
        }
        for (let m = minor - 1; m >= 0; m--) vector.push(withVariant("arm64", named(major, m)));
      }
      if (arm64Variant.startsWith("v8.") || arm64Variant.startsWith("v9.")) arm64Variant = "v8";
      vector.push(...compatibleVector({ ...base, architecture: "arm", variant: arm64Variant }));
      break;
    }
  }
  return vector;
}

/** Go's strconv.Atoi for the small numbers of variants: an optional sign and decimal digits only. */
function goAtoi(text: string): number | undefined {
  return /^[+-]?[0-9]+$/.test(text) ? Number.parseInt(text, 10) : undefined;
}

/**
 * containerd's Windows rule: without a version on either side anything goes; otherwise major and
 * minor must agree, and the build must be equal, or (from Windows Server 2022, build 20348, on)
 * between 20348 and the host's build.
 */
function windowsVersionsCompatible(host: string, image: string): boolean {
  const hostVersion = windowsVersion(host);
  if (hostVersion === undefined || image === "") return true;
  const imageVersion = windowsVersion(image) ?? { major: 0, minor: 0, build: 0 };
  if (hostVersion.major !== imageVersion.major || hostVersion.minor !== imageVersion.minor) return false;
  const ltsc2022 = 20348;
  if (hostVersion.build < ltsc2022) return hostVersion.build === imageVersion.build;
  return imageVersion.build >= ltsc2022 && imageVersion.build <= hostVersion.build;
}

function windowsVersion(text: string): { major: number; minor: number; build: number } | undefined {
  const [major, minor, build] = text.split(".");
  if (build === undefined) return undefined;
  const parse = (part: string, max: number): number | undefined => {
    if (!/^[0-9]+$/.test(part)) return undefined;
    const value = Number(part);
    return value <= max ? value : undefined;
  };
  const version = { major: parse(major!, 255), minor: parse(minor!, 255), build: parse(build, 65535) };
  if (version.major === undefined || version.minor === undefined || version.build === undefined)
    return undefined;
  if (version.major === 0 && version.minor === 0 && version.build === 0) return undefined;
  return version as { major: number; minor: number; build: number };
}

/** Go's strings.SplitN: at most `n` pieces, the last holding the rest. */
function splitN(text: string, separator: string, n: number): string[] {
  const parts = text.split(separator);
  if (parts.length <= n) return parts;
  return [...parts.slice(0, n - 1), parts.slice(n - 1).join(separator)];
}
