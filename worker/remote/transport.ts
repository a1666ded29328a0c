/**
 * How a client reaches `tbuild worker --stdio` on another machine: a duplex byte stream and the
 * far end's stderr, nothing more (the framed protocol runs on top, in protocol.ts). Two transports:
 *
 * - `ssh://[user@]host[:port]`: an SSH connection (ssh2) that runs the worker command in an exec
 *   channel, as `ssh user@host tbuild worker --stdio` would. It authenticates as `ssh` does: an
 *   identity file when one is configured, else the keys of the user's ssh-agent (`SSH_AUTH_SOCK`),
 *   then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`; it checks the host's key against known_hosts
 *   (known-hosts.ts) and refuses an unknown or changed one; keepalives turn a dead connection into
 *   an error instead of a hang.
 * - `cmd://COMMAND`: any command (run by `sh -c`) whose stdin and stdout reach a worker, such as
 *   `kubectl exec -i POD -- tbuild worker --stdio` (as buildx's `kube-pod://` and podman's
 *   `--connection` do with their own commands).
 *
 * Either way the stream ends cleanly only when the far command exits with 0; a non-zero exit, a
 * signal or a lost connection destroys it with a TbuildError that quotes the last lines the
 * command wrote to stderr.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import path from "node:path";
import { Duplex, PassThrough, type Readable, type Writable } from "node:stream";
import type { AnyAuthMethod, ClientChannel, ParsedKey, ServerHostKeyAlgorithm } from "ssh2";
import { TbuildError } from "../../errors/index.js";
import {
  checkHostKey,
  fingerprint,
  type HostKeyVerdict,
  type KnownHostLine,
  keyTypeLabel,
  keyTypeOfBlob,
  knownHostsName,
  knownKeyTypes,
  readKnownHosts,
} from "./known-hosts.js";

/** Where a worker is: plain data, parsed from a URL of config.toml or `--worker`. */
export type WorkerAddress =
  | { transport: "ssh"; user: string; host: string; port: number }
  | { transport: "cmd"; command: string };

export interface TransportOptions {
  /** ssh: the command the host runs (default `tbuild worker --stdio`). */
  command?: string;
  /** ssh: the one private key to offer (no agent, no default keys then, as `IdentitiesOnly`). */
  identityFile?: string;
  /** ssh: known_hosts files (default `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`). */
  knownHosts?: string | readonly string[];
  /** ssh: the ssh-agent's socket (default `$SSH_AUTH_SOCK`); `false` offers no agent keys. */
  agent?: string | false;
  /** ssh: the home directory whose `.ssh/` holds the default keys and known_hosts (default the user's). */
  home?: string;
  /** ssh: milliseconds between keepalives once connected (default 15 000). */
  keepaliveInterval?: number;
  /** ssh: keepalives left unanswered before the connection counts as dead (default 3). */
  keepaliveCountMax?: number;
  /** ssh: milliseconds the connection and SSH handshake may take (default 20 000). */
  connectTimeout?: number;
  /** How long `close()` waits for the far command to exit after its input ended, before ending it (default 5 000 ms). */
  closeTimeout?: number;
  /** Aborting closes the connection; the stream is destroyed with the signal's reason. */
  signal?: AbortSignal;
}

/** An open connection to a worker command. */
export interface Transport {
  /** Bytes to the worker's stdin, bytes from its stdout. */
  stream: Duplex;
  /** What the worker writes to stderr (kept to a bounded backlog when nobody reads it). */
  stderr: Readable;
  /** `ssh://user@host:port` or `cmd://COMMAND`, for messages. */
  describe: string;
  /** The last lines the worker wrote to stderr, for messages of the layers above. */
  stderrTail(): string[];
  /** Ends the worker's input, waits (bounded) for it to exit, and closes the connection. */
  close(): Promise<void>;
}

export const DEFAULT_WORKER_COMMAND = "tbuild worker --stdio";
const DEFAULT_KEEPALIVE_INTERVAL = 15_000;
const DEFAULT_KEEPALIVE_COUNT_MAX = 3;
const DEFAULT_CONNECT_TIMEOUT = 20_000;
const DEFAULT_CLOSE_TIMEOUT = 5_000;
/** The default keys `ssh` tries, in its order (DSA is gone from OpenSSH). */
const DEFAULT_IDENTITIES = ["id_ed25519", "id_ecdsa", "id_rsa"];
/** ssh2's host key algorithms, in its order of preference: the ones known for a host go first. */
const HOST_KEY_ALGORITHMS: ServerHostKeyAlgorithm[] = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
];
/** Lines of the far stderr that error messages quote. */
const STDERR_TAIL_LINES = 10;
/** Bytes of stderr kept for those lines, and kept for a reader that does not read. */
const STDERR_TAIL_BYTES = 8192;
const STDERR_BACKLOG_BYTES = 1 << 20;

/** Parses `ssh://[user@]host[:port]` or `cmd://COMMAND`. */
export function parseWorkerUrl(url: string, defaultUser: string = userInfo().username): WorkerAddress {
  if (url.startsWith("cmd://")) {
    const command = url.slice("cmd://".length).trim();
    if (command === "") {
      throw new TbuildError("E_WORKER_URL", "worker URL cmd:// names no command: write cmd://COMMAND ARGS…");
    }
    return { transport: "cmd", command };
  }
  const bad = (why: string) =>
    new TbuildError(
      "E_WORKER_URL",
      `worker URL ${JSON.stringify(url)} ${why}: write ssh://[user@]host[:port] or cmd://COMMAND`,
    );
  if (!url.startsWith("ssh://")) throw bad("has an unknown transport");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw bad("is not a valid URL");
  }
  if (parsed.password !== "") throw bad("holds a password (tbuild authenticates with keys only)");
  if ((parsed.pathname !== "" && parsed.pathname !== "/") || parsed.search !== "" || parsed.hash !== "") {
    throw bad("has a path or query");
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "") throw bad("names no host");
  return {
    transport: "ssh",
    user: parsed.username === "" ? defaultUser : decodeURIComponent(parsed.username),
    host,
    port: parsed.port === "" ? 22 : Number(parsed.port),
  };
}

/** The canonical URL of an address, for messages. */
export function describeWorker(address: WorkerAddress): string {
  if (address.transport === "cmd") return `cmd://${address.command}`;
  const host = address.host.includes(":") ? `[${address.host}]` : address.host;
  return `ssh://${address.user}@${host}:${address.port}`;
}

/** Opens a byte stream to the worker at `url` (see the file header for the transports). */
export async function openTransport(
  url: string | WorkerAddress,
  options: TransportOptions = {},
): Promise<Transport> {
  const address = typeof url === "string" ? parseWorkerUrl(url) : url;
  options.signal?.throwIfAborted();
  return address.transport === "ssh" ? await openSsh(address, options) : openCommand(address, options);
}

/** How the far command ended: its exit code or signal, or never seen (a lost connection). */
type Ending = { code: number | null; signal: string | null } | { lost: Error };

/**
 * The pieces every transport shares: the stream over a source and a sink that reaches its end
 * only once the far command's ending is known, and the stderr backlog and tail.
 */
function relay(
  source: Readable,
  sink: Writable,
  farStderr: Readable,
  describeEnding: (ending: Ending) => TbuildError | undefined,
  teardown: () => void,
) {
  let tail = "";
  const stderr = new PassThrough();
  farStderr.on("data", (chunk: Buffer) => {
    tail = (tail + chunk.toString("utf8")).slice(-STDERR_TAIL_BYTES);
    // Nobody may read it: beyond a backlog, the tail alone is kept.
    if (stderr.readableLength + stderr.writableLength < STDERR_BACKLOG_BYTES) stderr.write(chunk);
  });
  farStderr.on("error", () => {});
  const stderrTail = () =>
    tail
      .split("\n")
      .map((line) => line.trimEnd())
      .filter((line) => line !== "")
      .slice(-STDERR_TAIL_LINES);

  // Both a child process and an ssh2 channel report their ending ('close') only once their stdout
  // was read to its end, so ending the stream when the ending is known loses no byte.
  let resolveEnding: (ending: Ending) => void = () => {};
  const ending = new Promise<Ending>((resolve) => {
    resolveEnding = resolve;
  });
  let endingKnown = false;
  let sinkBroken = false;
  let discarding = false;
  const stream = new Duplex({
    read() {
      source.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      // A far end that is gone is reported by its ending, not by EPIPE on the way there.
      if (sinkBroken) return callback();
      if (sink.write(chunk)) return callback();
      const settle = () => {
        sink.off("drain", settle);
        sink.off("close", settle);
        callback();
      };
      sink.on("drain", settle);
      sink.on("close", settle);
    },
    final(callback) {
      if (!sinkBroken) sink.end();
      callback();
    },
    destroy(err, callback) {
      // Abandoned before the far command ended: end it, and the connection.
      if (!endingKnown) teardown();
      callback(err);
    },
  });
  sink.on("error", () => {
    sinkBroken = true;
  });
  source.on("data", (chunk: Buffer) => {
    if (discarding) return;
    if (!stream.push(chunk)) source.pause();
  });
  source.on("error", () => {});
  source.pause();
  void ending.then((how) => {
    endingKnown = true;
    stderr.end();
    if (stream.destroyed) return;
    const failure = describeEnding(how);
    if (failure) stream.destroy(failure);
    else stream.push(null);
  });
  return {
    stream,
    stderr,
    stderrTail,
    ending,
    finish: (how: Ending) => resolveEnding(how),
    /**
     * The transport's `close()`, made once: whatever the worker still sends is dropped, its input
     * ended, then `finish` waits for it (and ends what it must), then the stream goes.
     */
    closer(markClosing: () => void, finish: () => Promise<void>): () => Promise<void> {
      let closed: Promise<void> | undefined;
      return () => {
        closed ??= (async () => {
          markClosing();
          discarding = true;
          source.resume();
          if (!stream.destroyed && !stream.writableEnded) stream.end();
          await finish();
          stream.destroy();
        })();
        return closed;
      };
    },
  };
}

/** The error for a worker command that ended badly, quoting its stderr. */
function commandFailure(
  what: string,
  ending: { code: number | null; signal: string | null },
  tail: string[],
  advice: string,
) {
  const how = ending.signal ? `was killed by ${ending.signal}` : `exited with code ${ending.code}`;
  const quoted =
    tail.length > 0 ? `; its stderr ends with:\n${tail.map((line) => `  ${line}`).join("\n")}` : "";
  return new TbuildError("E_WORKER_COMMAND", `${what} ${how}${advice}${quoted}`);
}

// ---------------------------------------------------------------------------------------------
// cmd://

function openCommand(address: { command: string }, options: TransportOptions): Transport {
  const describe = `cmd://${address.command}`;
  // Its own process group, so that closing ends the command's children (a `kubectl`, an `unshare`) too.
  const child = spawn("sh", ["-c", address.command], { stdio: ["pipe", "pipe", "pipe"], detached: true });
  const killGroup = (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // Gone already.
    }
  };
  let closing = false;
  const parts = relay(
    child.stdout,
    child.stdin,
    child.stderr,
    (ending) => {
      if ("lost" in ending)
        return new TbuildError(
          "E_WORKER_COMMAND",
          `worker command ${describe} could not run: ${ending.lost.message}`,
        );
      if ((ending.code === 0 && ending.signal === null) || closing) return undefined;
      return commandFailure(`worker command \`${address.command}\``, ending, parts.stderrTail(), "");
    },
    () => killGroup("SIGKILL"),
  );
  child.on("error", (err) => parts.finish({ lost: err }));
  child.on("close", (code, signal) => parts.finish({ code, signal }));
  const onAbort = () => {
    closing = true;
    killGroup("SIGKILL");
    parts.stream.destroy(options.signal?.reason as Error);
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  void parts.ending.then(() => options.signal?.removeEventListener("abort", onAbort));

  const close = parts.closer(
    () => {
      closing = true;
    },
    async () => {
      const timeout = options.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT;
      if (!(await settlesWithin(parts.ending, timeout))) {
        killGroup("SIGTERM");
        if (!(await settlesWithin(parts.ending, timeout))) killGroup("SIGKILL");
      }
      await parts.ending;
    },
  );
  return { stream: parts.stream, stderr: parts.stderr, describe, stderrTail: parts.stderrTail, close };
}

/** Whether `promise` settles within `ms` (the timer does not keep the process alive). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
    timer.unref();
  });
  try {
    return await Promise.race([promise.then(() => true as const), timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// ssh://

type SshAddress = Extract<WorkerAddress, { transport: "ssh" }>;

/** `~/…` for paths in the user's home, for shorter messages. */
function tildePath(file: string, home: string): string {
  return file.startsWith(`${home}/`) ? `~/${file.slice(home.length + 1)}` : file;
}

/** What `ssh` would offer: the identity file, else the agent's keys and the default keys. */
function authMethods(
  address: SshAddress,
  describe: string,
  options: TransportOptions,
  home: string,
  parseKey: (data: Buffer) => ParsedKey | ParsedKey[] | Error,
): { methods: AnyAuthMethod[]; offered: string[] } {
  const username = address.user;
  const readKey = (file: string): ParsedKey | Error | undefined => {
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      return new Error(`cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const key = parseKey(data);
    if (key instanceof Error) return key;
    const first = Array.isArray(key) ? key[0] : key;
    if (!first?.isPrivateKey()) return new Error("it holds no private key");
    return first;
  };
  const encrypted = (err: Error) => /passphrase/i.test(err.message);

  if (options.identityFile !== undefined) {
    const file = path.resolve(options.identityFile);
    const key = readKey(file);
    const problem =
      key === undefined
        ? "does not exist"
        : key instanceof Error
          ? encrypted(key)
            ? `is protected by a passphrase, which tbuild does not ask for: load it into your ssh-agent (\`ssh-add ${file}\`) and leave the identity file unset`
            : `is not a private key tbuild can use (${key.message})`
          : undefined;
    if (problem)
      throw new TbuildError("E_WORKER_AUTH", `identity file ${file} of worker ${describe} ${problem}`);
    return {
      methods: [{ type: "publickey", username, key: key as ParsedKey }],
      offered: [`identity file ${file}`],
    };
  }

  const methods: AnyAuthMethod[] = [];
  const offered: string[] = [];
  const agent = options.agent === undefined ? process.env.SSH_AUTH_SOCK : options.agent;
  if (agent) {
    methods.push({ type: "agent", username, agent });
    offered.push(`the keys of the ssh-agent at ${agent}`);
  }
  const skipped: string[] = [];
  for (const name of DEFAULT_IDENTITIES) {
    const file = path.join(home, ".ssh", name);
    const key = readKey(file);
    if (key === undefined) continue;
    if (key instanceof Error) {
      skipped.push(
        `${tildePath(file, home)} (${encrypted(key) ? "has a passphrase: ssh-add it" : key.message})`,
      );
      continue;
    }
    methods.push({ type: "publickey", username, key });
    offered.push(tildePath(file, home));
  }
  if (methods.length === 0) {
    const why = skipped.length > 0 ? `; skipped ${skipped.join(", ")}` : "";
    throw new TbuildError(
      "E_WORKER_AUTH",
      `no SSH key to offer to worker ${describe}: no ssh-agent (SSH_AUTH_SOCK is unset) and no usable ~/.ssh/${DEFAULT_IDENTITIES.join(", ")}${why}; set the worker's identity file, or start ssh-agent and ssh-add a key`,
    );
  }
  return { methods, offered };
}

/**
 * The SSH connection to a worker died (cut, reset, no answer to keepalives). `happened` says what,
 * without the advice to the user, for a caller that tries again by itself.
 */
export class ConnectionLostError extends TbuildError {
  readonly happened: string;

  constructor(happened: string, cause: Error | undefined) {
    super(
      "E_WORKER_CONNECTION_LOST",
      `${happened}: check the network and the host, and run again`,
      cause ? { cause } : {},
    );
    this.happened = happened;
  }
}

/** The refusal for a host key that known_hosts does not vouch for. */
function hostKeyRefusal(
  verdict: Exclude<HostKeyVerdict, { status: "known" }>,
  address: SshAddress,
  describe: string,
  key: Buffer,
  knownHostsFiles: readonly string[],
  home: string,
): TbuildError {
  const type = keyTypeOfBlob(key);
  const label = keyTypeLabel(type);
  const offered = `${label} key ${fingerprint(key)}`;
  const where = (line: KnownHostLine) => `${tildePath(line.file, home)}:${line.line}`;
  if (verdict.status === "revoked") {
    return new TbuildError(
      "E_HOST_KEY_REVOKED",
      `worker ${describe} offered the ${offered}, which ${where(verdict.line)} marks @revoked: refused; ask the host's administrator for its current key`,
    );
  }
  const file = tildePath(knownHostsFiles[0] ?? path.join(home, ".ssh", "known_hosts"), home);
  const name = knownHostsName(address.host, address.port);
  if (verdict.status === "changed") {
    return new TbuildError(
      "E_HOST_KEY_CHANGED",
      `HOST KEY CHANGED: worker ${describe} offered the ${offered}, but ${where(verdict.line)} holds another ${keyTypeLabel(verdict.line.keyType)} key (${fingerprint(verdict.line.key)}): someone may be intercepting the connection, refused. If the host was reinstalled, check its new key, remove the old one (\`ssh-keygen -R '${name}' -f ${tildePath(verdict.line.file, home)}\`) and trust the new one`,
    );
  }
  const port = address.port === 22 ? "" : `-p ${address.port} `;
  const keyscanType = type?.startsWith("ecdsa-sha2-") ? "ecdsa" : (type?.replace(/^ssh-/, "") ?? "");
  const others =
    verdict.otherTypes.length > 0
      ? ` (known_hosts holds only ${verdict.otherTypes.map(keyTypeLabel).join(", ")} keys for it)`
      : "";
  return new TbuildError(
    "E_HOST_KEY_UNKNOWN",
    `unknown host key: worker ${describe} offered the ${offered}, which no known_hosts file vouches for${others}; if that is the host's key (\`ssh-keygen -lf /etc/ssh/ssh_host_${keyscanType}_key.pub\` on the host), trust it with \`ssh-keyscan ${port}-t ${keyscanType} ${address.host} >> ${file}\` and run again`,
  );
}

/** An error of ssh2 before the connection was ready, as the user's next step. */
function connectFailure(
  err: Error & { level?: string; code?: string },
  describe: string,
  timeoutMs: number,
  offered: string[],
  agentErrors: string[],
): TbuildError {
  const { level, code } = err;
  if (level === "client-authentication") {
    const agent = agentErrors.length > 0 ? ` (the ssh-agent failed: ${agentErrors[0]})` : "";
    return new TbuildError(
      "E_WORKER_AUTH",
      `worker ${describe} refused the keys offered (${offered.join(", ")})${agent}: add your public key to the worker user's ~/.ssh/authorized_keys on the host, or set the worker's identity file`,
      { cause: err },
    );
  }
  if (level === "client-timeout") {
    return new TbuildError(
      "E_WORKER_TIMEOUT",
      `worker ${describe} did not complete an SSH handshake within ${Math.round(timeoutMs / 1000)} s: is the host up, and is an SSH server on that port?`,
      { cause: err },
    );
  }
  if (code === "ECONNREFUSED") {
    return new TbuildError(
      "E_WORKER_UNREACHABLE",
      `cannot reach worker ${describe}: connection refused (is sshd running there, and is the port right?)`,
      { cause: err },
    );
  }
  if (level === "client-dns" || code === "ENOTFOUND" || code === "EAI_AGAIN") {
    return new TbuildError(
      "E_WORKER_UNREACHABLE",
      `cannot reach worker ${describe}: its host name does not resolve (${code ?? err.message}); check the name`,
      { cause: err },
    );
  }
  return new TbuildError(
    "E_WORKER_UNREACHABLE",
    `cannot reach worker ${describe}: ${code ?? err.message}; check that the host is up and the address right`,
    { cause: err },
  );
}

async function openSsh(address: SshAddress, options: TransportOptions): Promise<Transport> {
  // ssh2 takes some 60 ms to load: only commands that open an SSH connection pay for it.
  const ssh2 = (await import("ssh2")).default;
  const describe = describeWorker(address);
  const home = options.home ?? homedir();
  const knownHostsFiles =
    options.knownHosts === undefined
      ? [path.join(home, ".ssh", "known_hosts"), "/etc/ssh/ssh_known_hosts"]
      : [options.knownHosts].flat();
  const knownLines = readKnownHosts(knownHostsFiles);
  const { methods, offered } = authMethods(address, describe, options, home, (data) =>
    ssh2.utils.parseKey(data),
  );
  const knownTypes = knownKeyTypes(knownLines, address.host, address.port);
  const preferred = HOST_KEY_ALGORITHMS.filter((algorithm) =>
    knownTypes.some(
      (type) => type === algorithm || (type === "ssh-rsa" && algorithm.startsWith("rsa-sha2-")),
    ),
  );
  const connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;

  const client = new ssh2.Client();
  let refusal: TbuildError | undefined;
  const agentErrors: string[] = [];
  let lost: Error | undefined;
  let closing = false;
  let ready = false;
  client.on("error", (err: Error & { level?: string }) => {
    if (err.level === "agent") {
      agentErrors.push(err.message);
      return;
    }
    if (ready) lost ??= err;
  });

  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => {
      cleanup();
      client.destroy();
      reject(err);
    };
    const onError = (err: Error & { level?: string }) => {
      if (err.level === "agent") return;
      fail(refusal ?? connectFailure(err, describe, connectTimeout, offered, agentErrors));
    };
    const onClose = () =>
      fail(
        refusal ??
          new TbuildError(
            "E_WORKER_UNREACHABLE",
            `worker ${describe} closed the connection during the SSH handshake: check that the user may log in there (sshd's AllowUsers, a locked account)`,
          ),
      );
    const onAbort = () => fail(options.signal?.reason as Error);
    const cleanup = () => {
      client.off("error", onError);
      client.off("close", onClose);
      options.signal?.removeEventListener("abort", onAbort);
    };
    client.on("error", onError);
    client.once("close", onClose);
    client.once("ready", () => {
      cleanup();
      ready = true;
      resolve();
    });
    options.signal?.addEventListener("abort", onAbort, { once: true });
    client.connect({
      host: address.host,
      port: address.port,
      username: address.user,
      authHandler: methods,
      hostVerifier: (key: Buffer) => {
        const verdict = checkHostKey(knownLines, address.host, address.port, key);
        if (verdict.status === "known") return true;
        refusal = hostKeyRefusal(verdict, address, describe, key, knownHostsFiles, home);
        return false;
      },
      ...(preferred.length > 0
        ? {
            algorithms: {
              serverHostKey: [...preferred, ...HOST_KEY_ALGORITHMS.filter((a) => !preferred.includes(a))],
            },
          }
        : {}),
      keepaliveInterval: options.keepaliveInterval ?? DEFAULT_KEEPALIVE_INTERVAL,
      keepaliveCountMax: options.keepaliveCountMax ?? DEFAULT_KEEPALIVE_COUNT_MAX,
      readyTimeout: connectTimeout,
    });
    // Each packet goes out when written. With Nagle's algorithm on (Node's default), a packet
    // written in two parts waits for the server's delayed acknowledgement of the first: some 40 ms
    // per round trip, five of them before the command even starts.
    client.setNoDelay(true);
  });

  const command = options.command ?? DEFAULT_WORKER_COMMAND;
  let status: { code: number | null; signal: string | null } | undefined;
  const channel = await new Promise<ClientChannel>((resolve, reject) => {
    client.exec(command, (err, opened) => {
      if (!err) {
        // Listened for at once: a command that ends quickly has its exit status in the same read
        // as the channel's opening, and ssh2 emits it before an awaiting caller could listen.
        opened.on("exit", (code: number | null, signal?: string) => {
          status = { code: signal ? null : code, signal: signal ?? null };
        });
        return resolve(opened);
      }
      client.destroy();
      reject(
        new TbuildError(
          "E_WORKER_COMMAND",
          `worker ${describe} refused to run \`${command}\`: ${err.message}`,
          { cause: err },
        ),
      );
    });
  });

  const lostError = (reason: Error | undefined) => {
    const why =
      reason?.message === "Keepalive timeout"
        ? `no answer to ${options.keepaliveCountMax ?? DEFAULT_KEEPALIVE_COUNT_MAX} keepalives`
        : reason
          ? ((reason as NodeJS.ErrnoException).code ?? reason.message)
          : "the connection closed";
    return new ConnectionLostError(`lost the connection to worker ${describe} (${why})`, reason);
  };
  const parts = relay(
    channel,
    channel,
    channel.stderr,
    (ending) => {
      if ("lost" in ending) return closing ? undefined : lostError(ending.lost);
      if ((ending.code === 0 && ending.signal === null) || closing) return undefined;
      const advice =
        ending.code === 127
          ? ` (not found there? set the worker's command to tbuild's path on the host)`
          : "";
      return commandFailure(
        `worker command \`${command}\` on ${describe}`,
        ending,
        parts.stderrTail(),
        advice,
      );
    },
    () => client.destroy(),
  );
  // OpenSSH always reports how the command ended; a channel that closes without it lost its connection.
  channel.on("close", () => parts.finish(status ?? { lost: lost ?? new Error("the connection closed") }));
  client.on("close", () => parts.finish(status ?? { lost: lost ?? new Error("the connection closed") }));

  const onAbort = () => {
    closing = true;
    client.destroy();
    parts.stream.destroy(options.signal?.reason as Error);
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const connectionClosed = new Promise<void>((resolve) => client.once("close", () => resolve()));
  void connectionClosed.then(() => options.signal?.removeEventListener("abort", onAbort));

  const close = parts.closer(
    () => {
      closing = true;
    },
    async () => {
      if (!(await settlesWithin(parts.ending, options.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT)))
        client.destroy();
      client.end();
      await connectionClosed;
    },
  );
  return { stream: parts.stream, stderr: parts.stderr, describe, stderrTail: parts.stderrTail, close };
}
