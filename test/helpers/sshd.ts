/**
 * A real OpenSSH server for tests: Debian's `/usr/sbin/sshd` in the foreground (`-D -e`) on
 * 127.0.0.1 and a free port, with host keys, `authorized_keys`, pid file and config of its own in a
 * temp dir, letting in one unprivileged user (`tbuild-test`, made by .ci/install) by key only. It
 * must be started as root (sshd switches to the user per session). The test client gets a key pair
 * sshd accepts and a known_hosts file that trusts the host keys.
 *
 * `StrictModes no`: the authorized_keys file lives in the temp dir under the world-writable /tmp,
 * which sshd's strict modes refuse; the dir is 0711 and the file 0644, so the user (whose
 * privileges sshd reads it with) can read it and nobody else can write it.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./registry.js";

export type HostKeyType = "ed25519" | "ecdsa" | "rsa";

export interface SshdOptions {
  /** The one user sshd lets in (default `tbuild-test`). */
  user?: string;
  /** Host key types, in the order sshd offers them (default `["ed25519"]`). */
  hostKeyTypes?: HostKeyType[];
}

export interface RunningSshd {
  host: string;
  port: number;
  user: string;
  /** `ssh://user@127.0.0.1:PORT`. */
  url: string;
  dir: string;
  /** The public host key files, by type (judge fingerprints with `ssh-keygen -lf`). */
  hostKeys: Partial<Record<HostKeyType, string>>;
  /** A private key (no passphrase) whose public half is in authorized_keys. */
  clientKey: string;
  /** A known_hosts file trusting every host key of this server, as `[127.0.0.1]:PORT` lines. */
  knownHosts: string;
  /** The known_hosts line of one host key type. */
  knownHostsLine(type: HostKeyType): string;
  /** sshd's own log so far (its stderr). */
  log(): string;
  /** Pids of sshd's per-connection processes (children of the listener). */
  sessionPids(): number[];
  /** Kills a connection's processes (the sshd ones and the command): the host side dies at once. */
  killSession(pid: number): void;
  stop(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";

/** Makes a key pair without passphrase: `file` and `file.pub`. */
export function makeKeyPair(file: string, type: HostKeyType = "ed25519", comment = "tbuild-test"): string {
  execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", comment, "-f", file], { stdio: "ignore" });
  return file;
}

/** The fingerprint `ssh-keygen -lf` prints for a key file: `SHA256:…`. */
export function sshKeygenFingerprint(publicKeyFile: string): string {
  const out = execFileSync("ssh-keygen", ["-lf", publicKeyFile], { encoding: "utf8" });
  const match = /(SHA256:[A-Za-z0-9+/]+)/.exec(out);
  if (!match) throw new Error(`ssh-keygen -lf printed no fingerprint: ${out}`);
  return match[1]!;
}

function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // The parent pid is the second field after the parenthesized command name.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return children;
}

/** `pid` and every process below it, collected before any is killed (orphans move to init). */
function processTree(pid: number): number[] {
  return [pid, ...childrenOf(pid).flatMap(processTree)];
}

function killTree(pid: number): void {
  for (const member of processTree(pid)) {
    try {
      process.kill(member, "SIGKILL");
    } catch {
      // Gone already.
    }
  }
}

export async function startSshd(options: SshdOptions = {}): Promise<RunningSshd> {
  if (process.getuid?.() !== 0) throw new Error("startSshd needs root (sshd switches to the test user)");
  if (!existsSync(SSHD)) throw new Error(`${SSHD} is missing: run .ci/install (package openssh-server)`);
  const user = options.user ?? "tbuild-test";
  const types = options.hostKeyTypes ?? ["ed25519"];
  // sshd's privilege separation directory; /run is a tmpfs, so it may be gone since .ci/install.
  mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });

  const dir = mkdtempSync(path.join(tmpdir(), "tbuild-sshd-"));
  chmodSync(dir, 0o711);
  const hostKeys: Partial<Record<HostKeyType, string>> = {};
  for (const type of types)
    hostKeys[type] = `${makeKeyPair(path.join(dir, `host_${type}`), type, "host")}.pub`;
  const clientKey = makeKeyPair(path.join(dir, "client"));
  const authorizedKeys = path.join(dir, "authorized_keys");
  writeFileSync(authorizedKeys, readFileSync(`${clientKey}.pub`), { mode: 0o644 });
  chmodSync(authorizedKeys, 0o644);

  const port = await freePort();
  const config = path.join(dir, "sshd_config");
  writeFileSync(
    config,
    [
      `ListenAddress 127.0.0.1:${port}`,
      ...types.map((type) => `HostKey ${path.join(dir, `host_${type}`)}`),
      `AuthorizedKeysFile ${authorizedKeys}`,
      `PidFile ${path.join(dir, "sshd.pid")}`,
      `AllowUsers ${user}`,
      "UsePAM no",
      "StrictModes no",
      "PermitRootLogin no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "X11Forwarding no",
      "PrintMotd no",
      "UseDNS no",
      "LogLevel INFO",
      "",
    ].join("\n"),
  );

  const child = spawn(SSHD, ["-D", "-e", "-f", config], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => {
    log += d;
  });
  try {
    await untilListening(child, port, () => log);
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }

  const knownHostsLine = (type: HostKeyType) => {
    const file = hostKeys[type];
    if (!file) throw new Error(`this sshd has no ${type} host key`);
    const [keyType, key] = readFileSync(file, "utf8").trim().split(/\s+/);
    return `[127.0.0.1]:${port} ${keyType} ${key}`;
  };
  const knownHosts = path.join(dir, "known_hosts");
  writeFileSync(knownHosts, `${types.map(knownHostsLine).join("\n")}\n`);

  const sessionPids = () => (child.pid === undefined ? [] : childrenOf(child.pid));
  return {
    host: "127.0.0.1",
    port,
    user,
    url: `ssh://${user}@127.0.0.1:${port}`,
    dir,
    hostKeys,
    clientKey,
    knownHosts,
    knownHostsLine,
    log: () => log,
    sessionPids,
    killSession: killTree,
    stop: async () => {
      // Sessions outlive the listener (each is its own session leader): end them first.
      for (const pid of sessionPids()) killTree(pid);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Resolves once sshd says it listens and a connection to the port gets its SSH banner; rejects
 * when sshd exits first (with its log).
 */
async function untilListening(child: ChildProcess, port: number, log: () => string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (log().includes(`Server listening on 127.0.0.1 port ${port}`)) {
        child.stderr!.off("data", onData);
        child.off("exit", onExit);
        resolve();
      }
    };
    const onExit = () => reject(new Error(`sshd exited before listening on port ${port}:\n${log()}`));
    child.stderr!.on("data", onData);
    child.once("exit", onExit);
    onData();
  });
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.setEncoding("utf8");
    socket.once("data", (banner: string) => {
      socket.destroy();
      if (banner.startsWith("SSH-2.0-")) resolve();
      else reject(new Error(`port ${port} answered ${JSON.stringify(banner)}, not an SSH banner`));
    });
    socket.once("error", reject);
  });
}
