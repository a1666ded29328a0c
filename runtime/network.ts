/**
 * A container's private network (`--network private`, `-p`, `-P`): a network namespace of its
 * own, held by the port forwarder process (runtime/forwarder.ts), which runc's config joins.
 *
 * - The host's sockets of the published ports are bound here, by the process running the
 *   container, before anything else starts: a port in use is an error naming it (PortInUseError),
 *   and nothing is left running. They are then passed to the forwarder, which relays them into
 *   the namespace (as rootlesskit's builtin port driver does: no privilege needed).
 * - Outbound traffic goes through a user-mode network stack started against the forwarder's
 *   namespace: slirp4netns (as rootless podman; `--disable-host-loopback`, so the host's loopback
 *   services stay out of reach, DNS at 10.0.2.3), else pasta (`--no-map-gw`, likewise). With
 *   neither, or when it cannot start (its tap device needs /dev/net/tun), the container has
 *   loopback only and the caller is warned once.
 *
 * Every process started here dies with the process running the container (the forwarder when its
 * IPC channel closes, slirp4netns when its exit fd does, pasta with the forwarder's namespace), and
 * `close()` ends them and waits for them.
 */
import { type ChildProcess, spawn } from "node:child_process";
import dgram from "node:dgram";
import { readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TbuildError } from "../errors/index.js";
import { findExecutable } from "../worker/userns.js";
import type { PublishedPort } from "./containers.js";
import type { PortRequest } from "./ports.js";

export interface ContainerNetwork {
  /** The network namespace the container joins (runc's `linux.namespaces[].path`). */
  namespacePath: string;
  /** The published ports as bound (a `-P` port's host port is the kernel's choice). */
  ports: PublishedPort[];
  /** The user-mode stack's resolver, for resolv.conf; undefined: the host's non-loopback ones. */
  nameservers?: string[];
  /** Ends the forwarder and the user-mode stack, and waits for them. */
  close(): Promise<void>;
}

/** A published port's host address and port cannot be bound. */
export class PortInUseError extends TbuildError {
  constructor(port: PortRequest) {
    super(
      "E_PORT_IN_USE",
      `cannot publish ${hostAddress(port)}/${port.protocol}: the port is already in use on this host; publish another host port (-p OTHER:${port.containerPort}) or stop what uses it`,
    );
  }
}

function hostAddress(port: { hostIp: string; hostPort: number }): string {
  return port.hostIp.includes(":") ? `[${port.hostIp}]:${port.hostPort}` : `${port.hostIp}:${port.hostPort}`;
}

/** slirp4netns's built-in resolver, in its default 10.0.2.0/24 network. */
const SLIRP_NAMESERVER = "10.0.2.3";

export async function openPrivateNetwork(options: {
  ports: PortRequest[];
  env: NodeJS.ProcessEnv;
  warn?: (message: string) => void;
}): Promise<ContainerNetwork> {
  const bound: { request: PortRequest; socket: net.Server | dgram.Socket }[] = [];
  let forwarder: ChildProcess | undefined;
  let stack: UserModeStack | undefined;
  const closeAll = async () => {
    for (const { socket } of bound) closeQuietly(socket);
    await stack?.close();
    if (forwarder) await endProcess(forwarder, () => forwarder?.connected && forwarder.disconnect());
  };
  try {
    for (const request of options.ports) bound.push({ request, socket: await bindPort(request) });
    forwarder = await startForwarder(options.env);
    for (const { request, socket } of bound) await handOver(forwarder, request, socket);
    // The forwarder holds them now; this process's copies would accept connections nobody serves.
    const ports = bound.map(({ request, socket }) => boundPort(request, socket));
    for (const { socket } of bound) closeQuietly(socket);
    bound.length = 0;
    const namespacePath = `/proc/${forwarder.pid}/ns/net`;
    stack = await startUserModeStack(forwarder.pid!, options.env, options.warn);
    return {
      namespacePath,
      ports,
      ...(stack?.nameservers ? { nameservers: stack.nameservers } : {}),
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function closeQuietly(socket: net.Server | dgram.Socket): void {
  try {
    socket.close();
  } catch {
    // not bound, or closed already
  }
}

function bindPort(request: PortRequest): Promise<net.Server | dgram.Socket> {
  return new Promise((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") return reject(new PortInUseError(request));
      if (err.code === "EACCES") {
        return reject(
          new TbuildError(
            "E_PORT_DENIED",
            `cannot publish ${hostAddress(request)}/${request.protocol}: ports below ${unprivilegedPortStart()} need root (rootless tbuild is not); publish a port of ${unprivilegedPortStart()} or above, or lower the sysctl net.ipv4.ip_unprivileged_port_start`,
          ),
        );
      }
      if (err.code === "EADDRNOTAVAIL") {
        return reject(
          new TbuildError(
            "E_PORT_ADDRESS",
            `cannot publish ${hostAddress(request)}/${request.protocol}: ${request.hostIp} is not an address of this host; name one of its own, or leave the address out`,
          ),
        );
      }
      reject(err);
    };
    if (request.protocol === "tcp") {
      const server = net.createServer();
      server.once("error", failed);
      server.listen({ host: request.hostIp, port: request.hostPort, exclusive: true }, () => {
        server.off("error", failed);
        resolve(server);
      });
    } else {
      const socket = dgram.createSocket(request.hostIp.includes(":") ? "udp6" : "udp4");
      socket.once("error", failed);
      socket.bind({ address: request.hostIp, port: request.hostPort, exclusive: true }, () => {
        socket.off("error", failed);
        resolve(socket);
      });
    }
  });
}

/** The lowest port a user may bind (a sysctl; 1024 unless changed). */
function unprivilegedPortStart(): number {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_unprivileged_port_start", "utf8").trim());
  } catch {
    return 1024;
  }
}

function boundPort(request: PortRequest, socket: net.Server | dgram.Socket): PublishedPort {
  const address = socket.address();
  const port = typeof address === "object" && address !== null ? address.port : request.hostPort;
  return { ...request, hostPort: port };
}

/** The forwarder's module, beside this one: in dist/runtime/, or in the bundle's directory. */
function forwarderModule(): string {
  return fileURLToPath(new URL("./forwarder.js", import.meta.url));
}

/** The forwarder, in a new network namespace with loopback up, once it says it is ready. */
async function startForwarder(env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const unshare = findExecutable("unshare", env);
  const ip = findExecutable("ip", env);
  if (!unshare || !ip) {
    throw new TbuildError(
      "E_NETWORK_TOOLS",
      `a private network needs ${!unshare ? "unshare (util-linux)" : "ip (iproute2)"}: install it (sudo apt-get install ${!unshare ? "util-linux" : "iproute2"}), or use --network host`,
    );
  }
  // A session of its own: a terminal's Ctrl-C, which tbuild passes to the container, must not end it.
  const child = spawn(unshare, ["--net", "--", process.execPath, forwarderModule(), ip], {
    stdio: ["ignore", "ignore", "pipe", "ipc"],
    detached: true,
    env: { PATH: env.PATH ?? "/usr/bin:/bin" },
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const ready = await new Promise<{ type: string; message?: string }>((resolve) => {
    const onMessage = (message: { type: string; message?: string }) => {
      if (message.type === "ready" || message.type === "error") done(message);
    };
    const onExit = () => done({ type: "error", message: stderr.trim() || "it exited" });
    const onError = (err: Error) => done({ type: "error", message: err.message });
    const done = (message: { type: string; message?: string }) => {
      child.off("message", onMessage);
      child.off("exit", onExit);
      child.off("error", onError);
      resolve(message);
    };
    child.on("message", onMessage);
    child.once("exit", onExit);
    child.once("error", onError);
  });
  if (ready.type !== "ready") {
    await endProcess(child, () => child.connected && child.disconnect());
    throw new TbuildError(
      "E_NETWORK_START",
      `cannot set up the container's private network: ${ready.message?.split("\n").at(-1)}`,
    );
  }
  return child;
}

function handOver(
  child: ChildProcess,
  request: PortRequest,
  socket: net.Server | dgram.Socket,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: { type: string; containerPort?: number }) => {
      if (message.type === "forwarding" && message.containerPort === request.containerPort) {
        child.off("message", onMessage);
        child.off("exit", onExit);
        resolve();
      }
    };
    const onExit = () =>
      reject(new TbuildError("E_NETWORK_START", "the container's port forwarder ended while starting"));
    child.on("message", onMessage);
    child.once("exit", onExit);
    child.send({ type: request.protocol, containerPort: request.containerPort }, socket as net.Server);
  });
}

/** Asks a process to end (`ask`), SIGKILLs it if it has not soon after, and waits for its exit. */
async function endProcess(child: ChildProcess, ask: () => void): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  ask();
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
  await exited;
  clearTimeout(timer);
}

interface UserModeStack {
  nameservers?: string[];
  close(): Promise<void>;
}

/**
 * slirp4netns, else pasta, against the forwarder's namespace; undefined (and one warning) when
 * neither is installed or the one found cannot start.
 */
async function startUserModeStack(
  pid: number,
  env: NodeJS.ProcessEnv,
  warn?: (message: string) => void,
): Promise<UserModeStack | undefined> {
  const slirp = findExecutable("slirp4netns", env);
  const pasta = slirp ? undefined : findExecutable("pasta", env);
  try {
    if (slirp) return await startSlirp(slirp, pid);
    if (pasta) return await startPasta(pasta, pid);
    warn?.(
      "the container's private network has no outbound traffic: neither slirp4netns nor pasta is installed (sudo apt-get install slirp4netns)",
    );
  } catch (err) {
    warn?.(
      `the container's private network has no outbound traffic: ${path.basename(slirp ?? pasta!)} failed: ${(err as Error).message}`,
    );
  }
  return undefined;
}

async function startSlirp(slirp: string, pid: number): Promise<UserModeStack> {
  // fd 3: it writes "1" once the tap device is configured; fd 4: it exits when that closes.
  const child = spawn(
    slirp,
    [
      "--configure",
      "--mtu=65520",
      "--disable-host-loopback",
      "--ready-fd=3",
      "--exit-fd=4",
      String(pid),
      "tap0",
    ],
    { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"], detached: true },
  );
  const [, , stderrPipe, readyPipe, exitPipe] = child.stdio as (net.Socket | null)[];
  for (const pipe of [stderrPipe, readyPipe, exitPipe]) {
    pipe?.on("error", () => {});
  }
  let stderr = "";
  stderrPipe?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const ready = await new Promise<boolean>((resolve) => {
    readyPipe?.once("data", () => resolve(true));
    child.once("exit", () => resolve(false));
    child.once("error", () => resolve(false));
  });
  const close = () => endProcess(child, () => exitPipe?.destroy());
  if (!ready) {
    await close();
    throw new Error(slirpFailure(stderr));
  }
  readyPipe?.destroy();
  return { nameservers: [SLIRP_NAMESERVER], close };
}

/** pasta forwards no port of its own (TCP and UDP, either way): the forwarder has them. */
const NO_PASTA_PORTS = ["-t", "none", "-u", "none", "-T", "none", "-U", "none"];

async function startPasta(pasta: string, pid: number): Promise<UserModeStack> {
  const pidFile = path.join(tmpdir(), `tbuild-pasta-${process.pid}-${pid}.pid`);
  // pasta goes to the background once the namespace's interface is configured, and quits when
  // the namespace's process (the forwarder) does. No ports of its own: the forwarder has them.
  const child = spawn(
    pasta,
    [
      "--config-net",
      "--quiet",
      "--no-map-gw",
      "--netns-only",
      ...NO_PASTA_PORTS,
      "--pid",
      pidFile,
      String(pid),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => {
    child.once("exit", (c) => resolve(c));
    child.once("error", () => resolve(-1));
  });
  let daemon: number | undefined;
  try {
    daemon = Number(readFileSync(pidFile, "utf8").trim());
  } catch {
    // not started
  }
  rmSync(pidFile, { force: true });
  if (code !== 0 || !daemon) throw new Error(stderr.trim().split("\n").at(-1) || `it exited with ${code}`);
  return {
    close: async () => {
      try {
        process.kill(daemon, "SIGTERM");
      } catch {
        // gone with the namespace already
      }
    },
  };
}

/** slirp4netns's own reason, first of its lines (the last is its generic "child failed(1)"). */
function slirpFailure(stderr: string): string {
  const lines = stderr
    .trim()
    .split("\n")
    .filter((line) => line && !/^child failed/.test(line));
  const reason = lines[0] ?? "it exited";
  // Most distributions make it 0666; where it is root's only, a user's namespace cannot open it.
  return reason.includes("/dev/net/tun")
    ? `${reason} (a user's network namespace needs /dev/net/tun readable and writable by all: sudo chmod 0666 /dev/net/tun)`
    : reason;
}
