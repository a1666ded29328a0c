/**
 * Rootless ids. An unprivileged user cannot chown files to the ids an image uses, mount overlays or
 * start runc; inside a user namespace where uid 0 is the user and uids 1..65535 are the user's
 * subordinate range (`/etc/subuid`, `/etc/subgid`, mapped by the setuid helpers `newuidmap` and
 * `newgidmap`), it can do all three, and the files it writes are owned on the host by subordinate
 * ids, which the user cannot touch by accident. tbuild therefore re-runs its own command inside
 * such a namespace (as podman and buildah do) rather than juggling ids in-process: everything below
 * the re-exec simply runs as "root".
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { accessSync, constants, readFileSync } from "node:fs";
import { Socket } from "node:net";
import { constants as osConstants, userInfo } from "node:os";
import path from "node:path";
import { TbuildError } from "../errors/index.js";

/** Set in the re-executed process, so that a namespace that turns out too small never re-executes again. */
const REEXEC_MARKER = "TBUILD_USERNS";
/**
 * Names, in the re-executed process, the descriptor of its lifeline: a pipe whose other end only
 * the tbuild outside holds, so that it reads end-of-file once that process is gone, however it went.
 */
const LIFELINE_FD_VARIABLE = "TBUILD_USERNS_LIFELINE_FD";
/** The lifeline's descriptor in the re-executed process: the first after stdio. */
const LIFELINE_FD = 3;
/**
 * What the re-executed process gets when the tbuild outside dies (setpriv --pdeathsig). The kernel
 * sends it once for each thread of the dying parent, so it must be one the child takes any number
 * of times as one request to cancel: a hangup (cli/main.ts).
 */
const PARENT_DEATH_SIGNAL = "SIGHUP";
/** Images use ids up to 65534 (`nobody`); uid 0 is the user itself, so 65535 more ids are needed. */
const NEEDED_SUBORDINATE_IDS = 65535;

/** Which piece of the rootless setup is missing. */
export type RootlessPiece =
  | "user-namespaces"
  | "unshare"
  | "newuidmap"
  | "newgidmap"
  | "subuid"
  | "subgid"
  | "namespace-too-small";

/** A piece of the rootless setup is missing: the message names it and the command that fixes it. */
export class RootlessSetupError extends TbuildError {
  readonly piece: RootlessPiece;
  readonly fix: string;

  constructor(piece: RootlessPiece, problem: string, fix: string) {
    super("E_ROOTLESS_SETUP", `cannot run rootless: ${problem}\nTo fix it, run: ${fix}`);
    this.piece = piece;
    this.fix = fix;
  }
}

/** One line of `/proc/self/uid_map`: ids `inside..inside+count-1` are `outside..` on the parent. */
export interface IdMapping {
  inside: number;
  outside: number;
  count: number;
}

/** A subordinate id range from `/etc/subuid` or `/etc/subgid`. */
export interface SubordinateRange {
  start: number;
  count: number;
}

function readIdMap(file: string): IdMapping[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return [];
  }
  return text
    .split("\n")
    .map((line) => line.trim().split(/\s+/).map(Number))
    .filter((f) => f.length === 3 && f.every(Number.isFinite))
    .map(([inside, outside, count]) => ({ inside, outside, count }) as IdMapping);
}

/** The uid mappings of this process's user namespace. */
export function readUidMap(pid: number | "self" = "self"): IdMapping[] {
  return readIdMap(`/proc/${pid}/uid_map`);
}

/** The gid mappings of this process's user namespace. */
export function readGidMap(pid: number | "self" = "self"): IdMapping[] {
  return readIdMap(`/proc/${pid}/gid_map`);
}

/**
 * True inside a user namespace other than the host's. The initial namespace maps every id to
 * itself (`0 0 4294967295`); there the kernel lets root create device nodes, elsewhere it does not.
 */
export function inUserNamespace(): boolean {
  const map = readUidMap();
  return !(map.length === 1 && map[0].inside === 0 && map[0].outside === 0 && map[0].count === 4294967295);
}

/**
 * True in the user namespace tbuild's own re-exec made (spawnInUserNamespace): one per tbuild
 * process, so what is set up in it (worker/emulation.ts's binfmt_misc handlers) is this process's
 * alone. Not in a namespace someone else made (`podman unshare`, a container): that one is shared.
 */
export function inOwnUserNamespace(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[REEXEC_MARKER] === "1" && process.getuid?.() === 0 && inUserNamespace();
}

function mappedCount(map: IdMapping[]): number {
  return map.reduce((sum, m) => sum + m.count, 0);
}

/**
 * True when this process already has what the worker needs: real root, or uid 0 inside a user
 * namespace that maps a full range of ids (the one tbuild's re-exec enters, or an equivalent such as
 * `podman unshare`). A namespace mapping only uid 0 (`unshare -r`) is not enough: chown to an
 * image's ids would fail.
 */
export function hasWorkerPrivileges(): boolean {
  if (process.getuid?.() !== 0) return false;
  if (!inUserNamespace()) return true;
  return (
    mappedCount(readUidMap()) > NEEDED_SUBORDINATE_IDS && mappedCount(readGidMap()) > NEEDED_SUBORDINATE_IDS
  );
}

/** Parses `/etc/subuid`-style text: `name-or-uid:start:count` lines; the user's ranges in file order. */
export function parseSubordinateIds(text: string, user: { name: string; uid: number }): SubordinateRange[] {
  const ranges: SubordinateRange[] = [];
  for (const line of text.split("\n")) {
    const [owner, start, count] = line.trim().split(":");
    if (owner !== user.name && owner !== String(user.uid)) continue;
    const range = { start: Number(start), count: Number(count) };
    if (Number.isSafeInteger(range.start) && Number.isSafeInteger(range.count) && range.count > 0) {
      ranges.push(range);
    }
  }
  return ranges;
}

function readTextOrEmpty(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** An executable on PATH (or in an sbin directory), or undefined. */
export function findExecutable(name: string, env: NodeJS.ProcessEnv): string | undefined {
  const dirs = (env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":");
  // newuidmap lives in /usr/bin on Debian, but sbin directories are often missing from a user's PATH.
  for (const dir of [...dirs, "/usr/local/sbin", "/usr/sbin", "/sbin"]) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** A free range to suggest in the fix: above every range already given to anyone, from 100000. */
function suggestedRange(): string {
  let end = 100000;
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    for (const line of readTextOrEmpty(file).split("\n")) {
      const [, start, count] = line.trim().split(":").map(Number);
      if (Number.isSafeInteger(start) && Number.isSafeInteger(count)) end = Math.max(end, start + count);
    }
  }
  const start = end;
  return `${start}-${start + 65535}`;
}

function checkUserNamespacesEnabled(): void {
  const sysctls: Array<[string, string, string]> = [
    ["/proc/sys/user/max_user_namespaces", "0", "sudo sysctl -w user.max_user_namespaces=28633"],
    ["/proc/sys/kernel/unprivileged_userns_clone", "0", "sudo sysctl -w kernel.unprivileged_userns_clone=1"],
    [
      "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
      "1",
      "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
    ],
  ];
  for (const [file, disabled, fix] of sysctls) {
    if (readTextOrEmpty(file).trim() === disabled) {
      throw new RootlessSetupError(
        "user-namespaces",
        `user namespaces are disabled for unprivileged users (${file.slice("/proc/sys/".length).replaceAll("/", ".")} = ${disabled})`,
        fix,
      );
    }
  }
}

/** The pieces a rootless re-exec needs, each checked; throws RootlessSetupError naming the first missing one. */
export function checkRootlessSetup(env: NodeJS.ProcessEnv = process.env): { unshare: string } {
  const user = userInfo();
  const name = user.username;
  checkUserNamespacesEnabled();
  const unshare = findExecutable("unshare", env);
  if (!unshare) {
    throw new RootlessSetupError(
      "unshare",
      "`unshare` (util-linux) is not installed",
      "sudo apt-get install util-linux",
    );
  }
  const help = spawnSync(unshare, ["--help"], { encoding: "utf8" });
  if (!`${help.stdout}`.includes("--map-auto")) {
    throw new RootlessSetupError(
      "unshare",
      `${unshare} is too old: it has no --map-auto (util-linux 2.38 or later needed)`,
      "sudo apt-get install util-linux  # from a release with util-linux >= 2.38",
    );
  }
  for (const helper of ["newuidmap", "newgidmap"] as const) {
    if (!findExecutable(helper, env)) {
      throw new RootlessSetupError(
        helper,
        `\`${helper}\` (package uidmap) is not installed`,
        "sudo apt-get install uidmap",
      );
    }
  }
  const fix = () => {
    const range = suggestedRange();
    return `sudo usermod --add-subuids ${range} --add-subgids ${range} ${name}`;
  };
  for (const [piece, file] of [
    ["subuid", "/etc/subuid"],
    ["subgid", "/etc/subgid"],
  ] as const) {
    const ranges = parseSubordinateIds(readTextOrEmpty(file), { name, uid: user.uid });
    if (ranges.length === 0) {
      throw new RootlessSetupError(piece, `no ${piece} range for user ${name} in ${file}`, fix());
    }
    // `unshare --map-auto` maps the first range only, as newuidmap's callers usually do.
    if (ranges[0].count < NEEDED_SUBORDINATE_IDS) {
      throw new RootlessSetupError(
        piece,
        `the first ${piece} range of user ${name} in ${file} has ${ranges[0].count} ids; images need ${NEEDED_SUBORDINATE_IDS + 1}`,
        fix(),
      );
    }
  }
  return { unshare };
}

const FORWARDED_SIGNALS: NodeJS.Signals[] = [
  "SIGTERM",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
  "SIGWINCH",
];

/** How a process started in the user namespace gets its stdio; descriptors 4 on are the caller's own. */
export interface UserNamespaceStdio {
  /** Descriptors 0, 1 and 2. */
  stdio: [StdioKind, StdioKind, StdioKind];
  /** Descriptors after the lifeline (3): 4, 5, ... */
  extra?: "pipe"[];
}

/** This process's own descriptor, none, or a pipe to this process. */
type StdioKind = "inherit" | "ignore" | "pipe";

/** The descriptor of the first of `UserNamespaceStdio.extra` in the process started. */
export const FIRST_EXTRA_FD = LIFELINE_FD + 1;

/**
 * For an unprivileged user: starts `command` (an executable and its arguments) inside a new user +
 * mount namespace, where uid/gid 0 is the user and 1..65535 the first subuid/subgid range. Mounts
 * made inside vanish with the namespace when the process exits, whatever way it ends.
 *
 * The process must not outlive this one: killed outright (SIGKILL, the OOM killer), this process
 * cannot pass anything on, and the process would finish its build (and tag it) unseen. So it gets
 * a parent-death signal (`setpriv --pdeathsig`, set after `unshare` has exec'd, so it is tied to
 * this process) and a lifeline pipe (watchOuterProcess), which also covers a death before the
 * signal was set. Either way a tbuild started so cancels as on Ctrl-C.
 *
 * Throws RootlessSetupError when this process is in a namespace of its own already, or a piece of
 * the setup is missing (checked first). Callers check hasWorkerPrivileges() before. `detached`
 * gives the process a session of its own, out of reach of the terminal's signals.
 */
export function spawnInUserNamespace(
  command: string[],
  options: UserNamespaceStdio & { env: NodeJS.ProcessEnv; detached?: boolean },
): ChildProcess {
  const { env } = options;
  if (env[REEXEC_MARKER] === "1" || inUserNamespace()) {
    const ids = mappedCount(readUidMap());
    throw new RootlessSetupError(
      "namespace-too-small",
      `this process is already in a user namespace that maps ${ids} uid${ids === 1 ? "" : "s"} (uid ${process.getuid?.()}); tbuild needs uid 0 with ${NEEDED_SUBORDINATE_IDS + 1} ids and cannot nest another namespace`,
      "run tbuild outside this namespace (not under `unshare -r` or a similar wrapper)",
    );
  }
  const { unshare } = checkRootlessSetup(env);
  // util-linux's, as unshare is; without it the lifeline alone ends the child.
  const setpriv = findExecutable("setpriv", env);
  const child = spawn(
    unshare,
    [
      "--user",
      "--map-auto",
      "--map-root-user",
      "--mount",
      "--propagation=private",
      "--",
      ...(setpriv ? [setpriv, `--pdeathsig=${PARENT_DEATH_SIGNAL}`, "--"] : []),
      ...command,
    ],
    {
      stdio: [...options.stdio, "pipe", ...(options.extra ?? [])],
      env: { ...env, [REEXEC_MARKER]: "1", [LIFELINE_FD_VARIABLE]: String(LIFELINE_FD) },
      ...(options.detached ? { detached: true } : {}),
    },
  );
  const lifeline = child.stdio[LIFELINE_FD] as Socket | null;
  // Nothing is ever sent: the pipe only has to stay open while this process lives. A process the
  // child left running may hold the other end: the lifeline is not waited for, it goes with the child.
  lifeline?.on("error", () => {});
  child.once("exit", () => lifeline?.destroy());
  child.once("error", () => lifeline?.destroy());
  return child;
}

/** The error for an `unshare` that could not be started at all. */
export function rootlessExecError(child: ChildProcess, err: Error): TbuildError {
  return new TbuildError("E_ROOTLESS_EXEC", `cannot start ${child.spawnfile}: ${err.message}`, {
    cause: err,
  });
}

/**
 * For an unprivileged user: re-runs this same tbuild command (this Node, its flags, the script in
 * `process.argv[1]`, then `argv`: the arguments after the script, i.e. `process.argv.slice(2)`)
 * inside tbuild's user namespace (spawnInUserNamespace). Stdio is inherited, signals are
 * forwarded, and it resolves to the child's exit code (128 + the signal number when a signal
 * killed it).
 *
 * Resolves undefined, doing nothing, when this process already has worker privileges (root, or
 * inside the namespace already). Checks the pieces first and throws RootlessSetupError.
 */
export async function reexecInUserNamespace(
  argv: string[],
  env: NodeJS.ProcessEnv,
): Promise<number | undefined> {
  if (hasWorkerPrivileges()) return undefined;
  const script = process.argv[1];
  const child = spawnInUserNamespace(
    [process.execPath, ...process.execArgv, ...(script ? [script] : []), ...argv],
    {
      stdio: ["inherit", "inherit", "inherit"],
      env,
    },
  );
  const forward = (signal: NodeJS.Signals) => {
    child.kill(signal);
  };
  // A terminal's Ctrl-C already reaches the child, which shares our foreground process group;
  // forwarding it too would make the child see a second SIGINT and skip its cleanup. Without a
  // terminal a SIGINT was sent to this process alone (`kill -INT`), so it is forwarded.
  const signals = process.stdin.isTTY ? FORWARDED_SIGNALS : [...FORWARDED_SIGNALS, "SIGINT" as const];
  const ignoreTerminalInterrupt = () => {};
  for (const signal of signals) process.on(signal, forward);
  if (process.stdin.isTTY) process.on("SIGINT", ignoreTerminalInterrupt);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once("error", (err) => reject(rootlessExecError(child, err)));
      child.once("exit", (code, signal) => {
        if (code !== null) resolve(code);
        else resolve(128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
      });
    });
  } finally {
    for (const signal of signals) process.off(signal, forward);
    if (process.stdin.isTTY) process.off("SIGINT", ignoreTerminalInterrupt);
  }
}

/**
 * In the process reexecInUserNamespace started: calls `onGone` once the tbuild outside is gone,
 * when its end of the lifeline closes. Does nothing in any other process. The parent-death signal
 * (PARENT_DEATH_SIGNAL) may come before or after: the caller treats the two as one event.
 */
export function watchOuterProcess(env: NodeJS.ProcessEnv, onGone: () => void): void {
  const fd = Number(env[LIFELINE_FD_VARIABLE]);
  if (env[REEXEC_MARKER] !== "1" || fd !== LIFELINE_FD) return;
  // Not for the processes this one starts (a nested tbuild would take the descriptor for its own).
  delete env[LIFELINE_FD_VARIABLE];
  let lifeline: Socket;
  try {
    lifeline = new Socket({ fd, readable: true, writable: false });
  } catch {
    return;
  }
  let gone = false;
  const end = () => {
    if (gone) return;
    gone = true;
    lifeline.destroy();
    onGone();
  };
  lifeline.on("end", end);
  lifeline.on("close", end);
  lifeline.on("error", end);
  // Read (nothing ever comes) so that end-of-file is seen; the pipe alone keeps no command running.
  lifeline.resume();
  lifeline.unref();
}
