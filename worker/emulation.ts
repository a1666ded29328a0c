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
 * Rootless, tbuild does better than the mounted emulator: its process is alone in a user namespace
 * of its own (worker/userns.ts), where Linux 6.7 and later let it mount a binfmt_misc instance of
 * that namespace. It registers there a handler with the F flag for the platform it needs (the
 * interpreter is opened at registration, so nothing is mounted into the step), which the kernel
 * then uses for every process of the namespace and nothing else: each step's every program is
 * emulated, and the host's table is never touched. A kernel that refuses (older, or a policy)
 * leaves the mounted emulator, as does `TBUILD_NO_USERNS_BINFMT=1`. Root never registers: root's
 * namespace is the host's, and a handler there would change every process of the machine.
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
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { TbuildError } from "../errors/index.js";
import { formatPlatform, hostPlatform, normalizePlatform, type Platform } from "../oci/platform.js";
import { inOwnUserNamespace } from "./userns.js";

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
  /** The kernel cannot, but runs it through a handler tbuild registers in its own user namespace. */
  | { kind: "own-binfmt"; emulator: string }
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
  name: string;
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
      name,
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

/** `bytes` as binfmt_misc's register file reads them: every byte escaped, so none is a `:`. */
function binfmtBytes(bytes: Buffer): string {
  return [...bytes].map((byte) => `\\x${byte.toString(16).padStart(2, "0")}`).join("");
}

/** A line for binfmt_misc's register file: a handler matching `magic` (under `mask`) at `offset`. */
function registration(
  name: string,
  handler: { offset: number; magic: Buffer; mask?: Buffer; interpreter: string; flags: string },
): string {
  const mask = handler.mask ? binfmtBytes(handler.mask) : "";
  return `:${name}:M:${handler.offset || ""}:${binfmtBytes(handler.magic)}:${mask}:${handler.interpreter}:${handler.flags}`;
}

/**
 * The magic and mask of `arch`'s ELF executables and shared objects (static or dynamic), as
 * Debian's qemu-user-static registers them: any OS ABI, ET_EXEC or ET_DYN, its machine.
 */
function elfMagic(arch: Architecture): { magic: Buffer; mask: Buffer } {
  const magic = Buffer.alloc(20);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, arch.bits === 64 ? 2 : 1, arch.bigEndian ? 2 : 1, 1]).copy(magic, 0);
  const mask = Buffer.alloc(20, 0xff);
  mask[7] = 0;
  const u16 = (buffer: Buffer, value: number, at: number) =>
    arch.bigEndian ? buffer.writeUInt16BE(value, at) : buffer.writeUInt16LE(value, at);
  u16(magic, 2, 16); // ET_EXEC, and ET_DYN (3) through the mask
  u16(mask, 0xfffe, 16);
  u16(magic, arch.elfMachine, 18);
  return { magic, mask };
}

/**
 * The interpreter to register for `emulator`: Debian's `ARCH-binfmt-P` link to it when there is one
 * (QEMU named so keeps the program's own argv[0], the P flag, as the host's handler does), else
 * the emulator itself, which gets the program's path as argv[0].
 */
function binfmtInterpreter(arch: Architecture, emulator: string): { interpreter: string; flags: string } {
  const wrapper = `/usr/libexec/qemu-binfmt/${arch.qemu}-binfmt-P`;
  try {
    if (realpathSync(wrapper) === realpathSync(emulator)) return { interpreter: wrapper, flags: "PF" };
  } catch {
    // no such link
  }
  return { interpreter: emulator, flags: "F" };
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

/**
 * This process's binfmt_misc instance, mounted once (only ever in tbuild's own user and mount
 * namespace): true once it is there, false when the kernel refused. Mounting it hides the host's
 * handlers from this namespace, so the ones visible before are registered in it again first.
 */
let ownInstance: Promise<boolean> | undefined;
/** Per platform: whether a handler this process registered now runs its programs. */
const ownHandlers = new Map<string, Promise<boolean>>();

function mountOwnInstance(): Promise<boolean> {
  ownInstance ??= (async () => {
    const hosts = registeredHandlers();
    const mounted = await new Promise<boolean>((resolve) => {
      execFile("mount", ["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR], { timeout: 30_000 }, (err) =>
        resolve(err === null),
      );
    });
    if (!mounted) return false;
    for (const handler of hosts) {
      const { interpreter } = handler;
      if (interpreter === undefined || interpreter.includes(":")) continue;
      try {
        writeFileSync(
          path.join(BINFMT_DIR, "register"),
          registration(handler.name, {
            ...handler,
            interpreter,
            flags: handler.flags.replace(/[^POCF]/g, ""),
          }),
        );
      } catch {
        // an interpreter this user cannot open: that handler does not run here
      }
    }
    kernelRuns.clear();
    return true;
  })();
  return ownInstance;
}

/**
 * In tbuild's own user namespace: registers a handler with the F flag for `arch`, run by
 * `emulator`, in this process's binfmt_misc instance; true once the kernel runs `arch`'s
 * programs through it. False when the kernel refuses (no instance per user namespace before
 * Linux 6.7), and then the step is started through the mounted emulator.
 */
function registerOwnHandler(arch: Architecture, emulator: string): Promise<boolean> {
  let done = ownHandlers.get(arch.platform);
  if (done === undefined) {
    done = (async () => {
      if (!(await mountOwnInstance())) return false;
      try {
        writeFileSync(
          path.join(BINFMT_DIR, "register"),
          registration(`tbuild-qemu-${arch.qemu}`, {
            offset: 0,
            ...elfMagic(arch),
            ...binfmtInterpreter(arch, emulator),
          }),
        );
      } catch {
        return false;
      }
      kernelRuns.delete(arch.platform);
      const kernel = await kernelRunner(arch);
      return kernel.kind === "binfmt" && kernel.usableInSteps;
    })();
    ownHandlers.set(arch.platform, done);
  }
  return done;
}

/**
 * For `tbuild version --platforms` run by a user (outside tbuild's namespace): whether a namespace
 * of the user's own could run `arch` as a rootless build does, tried in a throwaway one.
 */
function userNamespaceRuns(arch: Architecture, emulator: string): Promise<boolean> {
  const dir = mkdtempSync(path.join(tmpdir(), "tbuild-arch-probe-"));
  const file = path.join(dir, arch.qemu);
  writeFileSync(file, exitZeroElf(arch), { mode: 0o700 });
  const line = registration(`tbuild-qemu-${arch.qemu}`, {
    offset: 0,
    ...elfMagic(arch),
    ...binfmtInterpreter(arch, emulator),
  });
  const script = `mount -t binfmt_misc binfmt_misc ${BINFMT_DIR} && printf '%s' "$1" > ${BINFMT_DIR}/register && exec "$2"`;
  return new Promise((resolve) => {
    execFile(
      "unshare",
      ["--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", line, file],
      { timeout: 30_000 },
      (err) => {
        rmSync(dir, { recursive: true, force: true });
        resolve(err === null);
      },
    );
  });
}

/** Set to 1, rootless tbuild registers no handler of its own and mounts the emulator into steps. */
const NO_OWN_HANDLER = "TBUILD_NO_USERNS_BINFMT";

/** Whether a rootless tbuild of this user runs `arch` through a handler of its own namespace. */
async function ownHandlerRuns(
  arch: Architecture,
  emulator: string,
  env: NodeJS.ProcessEnv,
): Promise<boolean> {
  if (env[NO_OWN_HANDLER] === "1") return false;
  if (inOwnUserNamespace()) return registerOwnHandler(arch, emulator);
  if (process.getuid?.() === 0) return false;
  return userNamespaceRuns(arch, emulator);
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
          : (await ownHandlerRuns(arch, emulator, env))
            ? { kind: "own-binfmt", emulator }
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
 * runs it (natively, or through a binfmt_misc handler with the F flag: the host's, or rootless
 * one this process registered in its own user namespace). Throws NoEmulatorError when neither can.
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
  if (env[NO_OWN_HANDLER] !== "1" && inOwnUserNamespace() && (await registerOwnHandler(arch, emulator))) {
    return undefined;
  }
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
    case "own-binfmt":
      return `${path.basename(runner.emulator)} (binfmt_misc of tbuild's user namespace)`;
    case "none":
      return "no";
  }
}
