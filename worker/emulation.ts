/**
 * What this host can run, and how a RUN step of another architecture runs here. The kernel
 * decides, not `uname`: for each platform a tiny static ELF executable of that architecture (a
 * few instructions that exit 0, made below as bytes) is executed. It runs natively (the host's
 * own architecture, or one its CPU also runs: 386 on amd64), through a binfmt_misc handler the
 * kernel has (QEMU registered by `qemu-user-static`), or not at all.
 *
 * A step of a platform the kernel does not run is started through Debian's static QEMU user
 * emulator (`qemu-aarch64-static`, ...), bind-mounted read-only into the step's container, as
 * BuildKit does with /dev/.buildkit_qemu_emulator: no root-only registration, so it works rootless.
 * The process of a `tbuild run` container of such an image starts the same way (runtime/).
 * QEMU then emulates the step's first process; a foreign program that process executes runs only
 * with a binfmt_misc handler (busybox's applets run inside the shell, so a busybox image needs none).
 * A binfmt handler counts for steps only with the F flag: without it the kernel looks for the
 * interpreter inside the container, where there is none.
 *
 * Emulators are looked for in `$TBUILD_QEMU_DIR` (colon-separated) when it is set, else on PATH
 * and in /usr/bin. The probe runs once per process and platform.
 */
import { execFile } from "node:child_process";
import {
  accessSync,
  constants,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { TbuildError } from "../errors/index.js";
import { formatPlatform, hostPlatform, normalizePlatform, type Platform } from "../oci/platform.js";

/** Where the emulator is mounted in a step's container: under /dev, a tmpfs, never in a layer. */
export const EMULATOR_MOUNT = "/dev/.tbuild-qemu-emulator";

/** How a platform's programs run on this host. */
export type PlatformRunner =
  /** The kernel runs them itself. */
  | { kind: "native" }
  /** A binfmt_misc handler runs them: `usableInSteps` when it has the F flag. */
  | { kind: "binfmt"; interpreter?: string; usableInSteps: boolean }
  /** The kernel cannot, but a static emulator can, mounted into the step. */
  | { kind: "emulator"; emulator: string }
  | { kind: "none" };

export interface PlatformSupport {
  platform: string;
  runner: PlatformRunner;
  /** The static emulator found for it, whether or not it is needed. */
  emulator?: string;
}

interface Architecture {
  /** As `formatPlatform` prints it. */
  platform: string;
  /** The suffix of Debian's `qemu-<name>-static`. */
  qemu: string;
  elfMachine: number;
  bits: 32 | 64;
  bigEndian: boolean;
  elfFlags: number;
  /** exit(0), as 32-bit instruction words (or bytes, for x86 and s390x's mixed lengths). */
  code: Buffer;
  /** The host architectures (Node's `process.arch`) whose CPUs run it natively. */
  nativeOn: string[];
}

/** Little-endian 32-bit instruction words. */
function words(list: number[]): Buffer {
  const out = Buffer.alloc(list.length * 4);
  for (const [i, word] of list.entries()) out.writeUInt32LE(word, i * 4);
  return out;
}

/** The platforms `tbuild version --platforms` reports, in its order. */
const ARCHITECTURES: Architecture[] = [
  {
    platform: "linux/amd64",
    qemu: "x86_64",
    elfMachine: 62,
    bits: 64,
    bigEndian: false,
    elfFlags: 0,
    // mov eax, 60 (exit); xor edi, edi; syscall
    code: Buffer.from([0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]),
    nativeOn: ["x64"],
  },
  {
    platform: "linux/arm64",
    qemu: "aarch64",
    elfMachine: 183,
    bits: 64,
    bigEndian: false,
    elfFlags: 0,
    // mov x0, #0; mov x8, #93 (exit); svc #0
    code: words([0xd2800000, 0xd2800ba8, 0xd4000001]),
    nativeOn: ["arm64"],
  },
  {
    platform: "linux/arm/v7",
    qemu: "arm",
    elfMachine: 40,
    bits: 32,
    bigEndian: false,
    elfFlags: 0x05000000, // EABI version 5
    // mov r0, #0; mov r7, #1 (exit); svc #0
    code: words([0xe3a00000, 0xe3a07001, 0xef000000]),
    nativeOn: ["arm", "arm64"],
  },
  {
    platform: "linux/386",
    qemu: "i386",
    elfMachine: 3,
    bits: 32,
    bigEndian: false,
    elfFlags: 0,
    // mov eax, 1 (exit); xor ebx, ebx; int 0x80
    code: Buffer.from([0xb8, 1, 0, 0, 0, 0x31, 0xdb, 0xcd, 0x80]),
    nativeOn: ["ia32", "x64"],
  },
  {
    platform: "linux/riscv64",
    qemu: "riscv64",
    elfMachine: 243,
    bits: 64,
    bigEndian: false,
    elfFlags: 0,
    // li a0, 0; li a7, 93 (exit); ecall
    code: words([0x00000513, 0x05d00893, 0x00000073]),
    nativeOn: ["riscv64"],
  },
  {
    platform: "linux/ppc64le",
    qemu: "ppc64le",
    elfMachine: 21,
    bits: 64,
    bigEndian: false,
    elfFlags: 2, // ELFv2 ABI: the entry point is code, not a function descriptor
    // li r0, 1 (exit); li r3, 0; sc
    code: words([0x38000001, 0x38600000, 0x44000002]),
    nativeOn: ["ppc64"],
  },
  {
    platform: "linux/s390x",
    qemu: "s390x",
    elfMachine: 22,
    bits: 64,
    bigEndian: true,
    elfFlags: 0,
    // lghi %r2, 0; svc 1 (exit)
    code: Buffer.from([0xa7, 0x29, 0, 0, 0x0a, 0x01]),
    nativeOn: ["s390x"],
  },
];

/** Where the executable is loaded: 4 MiB, above any mmap_min_addr and 64 KiB aligned. */
const LOAD_ADDRESS = 0x400000;

/** The platforms probed, as `formatPlatform` prints them, in `tbuild version --platforms`'s order. */
export const PROBED_PLATFORMS: readonly string[] = ARCHITECTURES.map((arch) => arch.platform);

/** A static ELF executable for `platform` (one of PROBED_PLATFORMS) that exits 0. */
export function exitZeroExecutable(platform: string): Buffer {
  const arch = ARCHITECTURES.find((a) => a.platform === platform);
  if (arch === undefined) throw new Error(`no test executable for ${platform}`);
  return exitZeroElf(arch);
}

/** A static ELF executable of `arch` that exits 0: one header, one loadable segment. */
function exitZeroElf(arch: Architecture): Buffer {
  const is64 = arch.bits === 64;
  const ehsize = is64 ? 64 : 52;
  const phentsize = is64 ? 56 : 32;
  const codeOffset = ehsize + phentsize;
  const file = Buffer.alloc(codeOffset + arch.code.length);
  const u16 = (value: number, at: number) =>
    arch.bigEndian ? file.writeUInt16BE(value, at) : file.writeUInt16LE(value, at);
  const u32 = (value: number, at: number) =>
    arch.bigEndian ? file.writeUInt32BE(value, at) : file.writeUInt32LE(value, at);
  const addr = (value: number, at: number) => {
    if (!is64) return u32(value, at);
    if (arch.bigEndian) file.writeBigUInt64BE(BigInt(value), at);
    else file.writeBigUInt64LE(BigInt(value), at);
  };
  const word = is64 ? 8 : 4;
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, arch.bigEndian ? 2 : 1, 1]).copy(file, 0);
  u16(2, 16); // ET_EXEC
  u16(arch.elfMachine, 18);
  u32(1, 20); // EV_CURRENT
  addr(LOAD_ADDRESS + codeOffset, 24); // e_entry
  addr(ehsize, 24 + word); // e_phoff
  addr(0, 24 + 2 * word); // e_shoff
  const after = 24 + 3 * word;
  u32(arch.elfFlags, after);
  u16(ehsize, after + 4);
  u16(phentsize, after + 6);
  u16(1, after + 8); // e_phnum
  const ph = ehsize;
  const PT_LOAD = 1;
  const READ_EXECUTE = 5;
  if (is64) {
    u32(PT_LOAD, ph);
    u32(READ_EXECUTE, ph + 4);
    addr(0, ph + 8); // p_offset
    addr(LOAD_ADDRESS, ph + 16); // p_vaddr
    addr(LOAD_ADDRESS, ph + 24); // p_paddr
    addr(file.length, ph + 32); // p_filesz
    addr(file.length, ph + 40); // p_memsz
    addr(0x10000, ph + 48); // p_align
  } else {
    u32(PT_LOAD, ph);
    u32(0, ph + 4);
    u32(LOAD_ADDRESS, ph + 8);
    u32(LOAD_ADDRESS, ph + 12);
    u32(file.length, ph + 16);
    u32(file.length, ph + 20);
    u32(READ_EXECUTE, ph + 24);
    u32(0x10000, ph + 28);
  }
  arch.code.copy(file, codeOffset);
  return file;
}

/** A registered binfmt_misc handler, as /proc/sys/fs/binfmt_misc/NAME shows it. */
interface BinfmtHandler {
  interpreter?: string;
  flags: string;
  offset: number;
  magic: Buffer;
  mask?: Buffer;
}

const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";

function registeredHandlers(): BinfmtHandler[] {
  let names: string[];
  try {
    names = readdirSync(BINFMT_DIR).filter((n) => n !== "register" && n !== "status");
  } catch {
    return [];
  }
  const handlers: BinfmtHandler[] = [];
  for (const name of names) {
    let text: string;
    try {
      text = readFileSync(path.join(BINFMT_DIR, name), "utf8");
    } catch {
      continue;
    }
    const field = (key: string) => new RegExp(`^${key} (.*)$`, "m").exec(text)?.[1]?.trim();
    if (!/^enabled$/m.test(text) || field("magic") === undefined) continue;
    const mask = field("mask");
    handlers.push({
      ...(field("interpreter") !== undefined ? { interpreter: field("interpreter")! } : {}),
      flags: (/^flags: ?(.*)$/m.exec(text)?.[1] ?? "").trim(),
      offset: Number(field("offset") ?? 0),
      magic: Buffer.from(field("magic")!, "hex"),
      ...(mask !== undefined ? { mask: Buffer.from(mask, "hex") } : {}),
    });
  }
  return handlers;
}

function handlerFor(handlers: BinfmtHandler[], file: Buffer): BinfmtHandler | undefined {
  return handlers.find((h) =>
    h.magic.every((byte, i) => {
      const at = h.offset + i;
      if (at >= file.length) return false;
      const mask = h.mask?.[i] ?? 0xff;
      return (file[at]! & mask) === (byte & mask);
    }),
  );
}

/** The directories emulators are looked for in. */
function emulatorDirs(env: NodeJS.ProcessEnv): string[] {
  if (env.TBUILD_QEMU_DIR !== undefined) return env.TBUILD_QEMU_DIR.split(":").filter(Boolean);
  return [...(env.PATH ?? "").split(":").filter((d) => path.isAbsolute(d)), "/usr/bin"];
}

function findEmulator(arch: Architecture, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of emulatorDirs(env)) {
    const file = path.join(dir, `qemu-${arch.qemu}-static`);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

function runsHere(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(file, [], { timeout: 30_000, env: {} }, (err) => resolve(err === null));
  });
}

/** Per process: what the kernel did with each architecture's test binary. */
const kernelRuns = new Map<string, Promise<PlatformRunner>>();

/** Whether, and how, the kernel itself runs `arch`'s programs (no emulator mounted). */
function kernelRunner(arch: Architecture): Promise<PlatformRunner> {
  let probe = kernelRuns.get(arch.platform);
  if (probe === undefined) {
    probe = (async () => {
      const binary = exitZeroElf(arch);
      const dir = mkdtempSync(path.join(tmpdir(), "tbuild-arch-probe-"));
      try {
        const file = path.join(dir, arch.qemu);
        writeFileSync(file, binary, { mode: 0o700 });
        const ran = await runsHere(file);
        const handler = handlerFor(registeredHandlers(), binary);
        if (!ran) return { kind: "none" } as const;
        if (handler === undefined && arch.nativeOn.includes(process.arch)) return { kind: "native" } as const;
        return {
          kind: "binfmt",
          ...(handler?.interpreter !== undefined ? { interpreter: handler.interpreter } : {}),
          // A handler the probe cannot see (binfmt_misc not mounted here) is taken to lack F.
          usableInSteps: handler?.flags.includes("F") ?? false,
        } as const;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    })();
    kernelRuns.set(arch.platform, probe);
  }
  return probe;
}

function architectureOf(platform: Platform): Architecture | undefined {
  const wanted = normalizePlatform(platform);
  return ARCHITECTURES.find((arch) => {
    const [, architecture, variant] = arch.platform.split("/");
    if (wanted.architecture !== architecture) return false;
    // QEMU's arm runs every 32-bit ARM variant the kernel could (v5, v6, v7).
    return architecture === "arm" || variant === undefined || wanted.variant === variant;
  });
}

/** Every platform of the list, as this host runs it (`tbuild version --platforms`). */
export async function probePlatforms(env: NodeJS.ProcessEnv = process.env): Promise<PlatformSupport[]> {
  return Promise.all(
    ARCHITECTURES.map(async (arch) => {
      const kernel = await kernelRunner(arch);
      const emulator = findEmulator(arch, env);
      const runner: PlatformRunner =
        kernel.kind === "native" || (kernel.kind === "binfmt" && kernel.usableInSteps) || !emulator
          ? kernel
          : { kind: "emulator", emulator };
      return { platform: arch.platform, runner, ...(emulator ? { emulator } : {}) };
    }),
  );
}

/** What is to run under an emulator: a build's RUN step, or the process of a `tbuild run` container. */
export type EmulatedProcess = "step" | "container";

/** A RUN step (or a container) for a platform this host cannot run: no handler, no emulator. */
export class NoEmulatorError extends TbuildError {
  constructor(platform: string, env: NodeJS.ProcessEnv, qemu?: string, what: EmulatedProcess = "step") {
    const where =
      env.TBUILD_QEMU_DIR !== undefined ? `$TBUILD_QEMU_DIR (${env.TBUILD_QEMU_DIR})` : "PATH or /usr/bin";
    const elsewhere = what === "step" ? `build on a ${platform} worker` : `run it on a ${platform} machine`;
    super(
      "E_NO_EMULATOR",
      qemu
        ? `cannot run a ${platform} ${what} on this ${formatPlatform(hostPlatform())} host: no binfmt_misc handler and no qemu-${qemu}-static in ${where}; install one with apt-get install qemu-user-static`
        : `cannot run a ${platform} ${what} on this ${formatPlatform(hostPlatform())} host: tbuild knows no QEMU emulator for it; ${elsewhere}`,
    );
  }
}

/**
 * The static emulator a step of `platform` must be started through, undefined when the kernel
 * runs it (natively, or through a binfmt_misc handler with the F flag). Throws NoEmulatorError
 * when neither can.
 */
export async function stepEmulator(
  platform: Platform,
  env: NodeJS.ProcessEnv = process.env,
  what: EmulatedProcess = "step",
): Promise<string | undefined> {
  const host = hostPlatform();
  const wanted = normalizePlatform(platform);
  // This process runs: the host's own architecture needs no probe.
  if (wanted.os === host.os && wanted.architecture === host.architecture) return undefined;
  const arch = architectureOf(wanted);
  if (arch === undefined) throw new NoEmulatorError(formatPlatform(wanted), env, undefined, what);
  const kernel = await kernelRunner(arch);
  if (kernel.kind === "native" || (kernel.kind === "binfmt" && kernel.usableInSteps)) return undefined;
  const emulator = findEmulator(arch, env);
  if (emulator === undefined) throw new NoEmulatorError(formatPlatform(wanted), env, arch.qemu, what);
  return emulator;
}

/**
 * The same for the process of a `tbuild run` container of an image for `platform` (its config's
 * `os`/`architecture`/`variant`): started through the emulator exactly as a step would be.
 */
export function containerEmulator(
  platform: Platform,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  return stepEmulator(platform, env, "container");
}

/** One line of `tbuild version --platforms`: how the platform's programs run here. */
export function describeRunner(support: PlatformSupport): string {
  const { runner } = support;
  switch (runner.kind) {
    case "native":
      return "native";
    case "binfmt":
      return runner.usableInSteps
        ? `binfmt emulator ${runner.interpreter ?? "(handler not visible)"}`
        : `binfmt emulator ${runner.interpreter ?? "(handler not visible)"} (not in steps: the handler lacks the F flag)`;
    case "emulator":
      return `${path.basename(runner.emulator)} (mounted into steps)`;
    case "none":
      return "no";
  }
}
