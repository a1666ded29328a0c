/**
 * The transports to a remote worker, against a real OpenSSH server (test/helpers/sshd.ts) and real
 * commands: bytes cross both ways unchanged; host keys are checked as `ssh` checks them (the
 * expected fingerprints come from `ssh-keygen -lf`, hashed entries from `ssh-keygen -H`); keys are
 * found as `ssh` finds them (identity file, a real ssh-agent, ~/.ssh/id_*); a killed session or a
 * frozen link (a TCP proxy between client and sshd) gives an error instead of a hang; a worker
 * command that fails says so with its stderr. The remote command is `cat`, an echo, until the
 * worker protocol lands. The client runs as root here, as CI does, but needs no privilege: only
 * sshd does.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TbuildError } from "../../../errors/index.js";
import { hostFieldMatches, knownHostsName, parseKnownHosts } from "../../../worker/remote/known-hosts.js";
import {
  openTransport,
  parseWorkerUrl,
  type Transport,
  type TransportOptions,
} from "../../../worker/remote/transport.js";
import { freePort } from "../../helpers/registry.js";
import { makeKeyPair, type RunningSshd, sshKeygenFingerprint, startSshd } from "../../helpers/sshd.js";
import { startTcpProxy } from "../../helpers/tcp-proxy.js";
import { tempDirs } from "../../helpers/temp.js";

const tempDir = tempDirs();
const MiB = 1 << 20;

/** Writes `data` into the stream, ends it, and resolves with the sha256 of everything read back. */
async function echoHash(stream: Duplex, data: Buffer): Promise<string> {
  const hash = createHash("sha256");
  const done = new Promise<string>((resolve, reject) => {
    stream.on("data", (chunk: Buffer) => hash.update(chunk));
    stream.once("end", () => resolve(hash.digest("hex")));
    stream.once("error", reject);
  });
  // Written in pieces, as a protocol would, so that both directions flow at once.
  for (let offset = 0; offset < data.length; offset += 64 * 1024) {
    if (!stream.write(data.subarray(offset, offset + 64 * 1024))) {
      await new Promise((resolve) => stream.once("drain", resolve));
    }
  }
  stream.end();
  return await done;
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The error `promise` rejects with (fails the test when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<TbuildError> {
  try {
    await promise;
  } catch (err) {
    return err as TbuildError;
  }
  throw new Error("expected a rejection");
}

/** The error the stream is destroyed with (after whatever it still delivers). */
function streamError(stream: Duplex): Promise<TbuildError> {
  return new Promise((resolve, reject) => {
    stream.on("data", () => {});
    stream.once("error", (err) => resolve(err as TbuildError));
    stream.once("end", () => reject(new Error("the stream ended cleanly")));
  });
}

/** The first chunk the stream delivers. */
function firstChunk(stream: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    stream.once("data", resolve);
    stream.once("error", reject);
  });
}

/** Resolves once process `pid` is gone (checked whenever the event loop turns). */
function untilGone(pid: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => (existsSync(`/proc/${pid}`) ? setImmediate(check) : resolve());
    check();
  });
}

describe("ssh:// transport, against a real sshd", () => {
  let sshd: RunningSshd;
  let base: TransportOptions;
  const open: Transport[] = [];
  const connect = async (url: string, options: TransportOptions) => {
    const transport = await openTransport(url, options);
    open.push(transport);
    return transport;
  };

  beforeAll(async () => {
    sshd = await startSshd({ hostKeyTypes: ["ed25519", "rsa"] });
    base = { identityFile: sshd.clientKey, knownHosts: sshd.knownHosts, agent: false, command: "cat" };
  });
  afterAll(async () => {
    for (const transport of open) await transport.close();
    await sshd?.stop();
  });

  it("carries 1 MiB of random bytes there and back unchanged, running the command as the SSH user", async () => {
    const transport = await connect(sshd.url, { ...base, command: "id -un >&2; exec cat" });
    expect(transport.describe).toBe(`ssh://tbuild-test@127.0.0.1:${sshd.port}`);
    const data = randomBytes(MiB);
    expect(await echoHash(transport.stream, data)).toBe(sha256(data));
    await transport.close();
    expect(transport.stderrTail()).toEqual(["tbuild-test"]);
  });

  it("refuses an unknown host key with ssh-keygen's fingerprint and a command that trusts it, which works", async () => {
    const knownHosts = path.join(tempDir("known"), "known_hosts");
    writeFileSync(knownHosts, "");
    const err = await rejection(openTransport(sshd.url, { ...base, knownHosts }));
    expect(err.code).toBe("E_HOST_KEY_UNKNOWN");
    expect(err.message).not.toContain("\n");
    expect(err.message).toContain(`ED25519 key ${sshKeygenFingerprint(sshd.hostKeys.ed25519!)}`);
    const trust = /`(ssh-keyscan [^`]*)`/.exec(err.message)?.[1];
    expect(trust).toBe(`ssh-keyscan -p ${sshd.port} -t ed25519 127.0.0.1 >> ${knownHosts}`);
    execFileSync("sh", ["-c", `${trust} 2>/dev/null`]);
    const transport = await connect(sshd.url, { ...base, knownHosts });
    const data = randomBytes(1000);
    expect(await echoHash(transport.stream, data)).toBe(sha256(data));
  });

  it("refuses a changed host key with its own code, naming the known_hosts line that holds the old one", async () => {
    const dir = tempDir("changed");
    const old = makeKeyPair(path.join(dir, "old_host_key"));
    const [type, key] = readFileSync(`${old}.pub`, "utf8").split(" ");
    const knownHosts = path.join(dir, "known_hosts");
    writeFileSync(knownHosts, `# our build host\n[127.0.0.1]:${sshd.port} ${type} ${key}\n`);
    const err = await rejection(openTransport(sshd.url, { ...base, knownHosts }));
    expect(err.code).toBe("E_HOST_KEY_CHANGED");
    expect(err.message).toContain(`${knownHosts}:2`);
    expect(err.message).toContain(sshKeygenFingerprint(sshd.hostKeys.ed25519!));
    expect(err.message).toContain(sshKeygenFingerprint(`${old}.pub`));
  });

  it("accepts a host listed by a hashed known_hosts entry (ssh-keygen -H)", async () => {
    const knownHosts = path.join(tempDir("hashed"), "known_hosts");
    writeFileSync(knownHosts, `${sshd.knownHostsLine("ed25519")}\n`);
    execFileSync("ssh-keygen", ["-H", "-f", knownHosts], { stdio: "ignore" });
    const hashed = readFileSync(knownHosts, "utf8");
    expect(hashed).toMatch(/^\|1\|/);
    expect(hashed).not.toContain("127.0.0.1");
    const transport = await connect(sshd.url, { ...base, knownHosts });
    const data = randomBytes(1000);
    expect(await echoHash(transport.stream, data)).toBe(sha256(data));
  });

  it("does not take a host's port-22 entry as vouching for another port", async () => {
    const knownHosts = path.join(tempDir("port"), "known_hosts");
    writeFileSync(
      knownHosts,
      `${sshd.knownHostsLine("ed25519").replace(`[127.0.0.1]:${sshd.port}`, "127.0.0.1")}\n`,
    );
    const err = await rejection(openTransport(sshd.url, { ...base, knownHosts }));
    expect(err.code).toBe("E_HOST_KEY_UNKNOWN");
  });

  it("asks for the host key type known_hosts holds (an RSA-only entry for a host that prefers ED25519)", async () => {
    const knownHosts = path.join(tempDir("rsa"), "known_hosts");
    writeFileSync(knownHosts, `${sshd.knownHostsLine("rsa")}\n`);
    const transport = await connect(sshd.url, { ...base, knownHosts });
    const data = randomBytes(1000);
    expect(await echoHash(transport.stream, data)).toBe(sha256(data));
  });

  it("says which key was refused when the host does not accept it", async () => {
    const wrong = makeKeyPair(path.join(tempDir("wrong"), "id_wrong"));
    const err = await rejection(openTransport(sshd.url, { ...base, identityFile: wrong }));
    expect(err.code).toBe("E_WORKER_AUTH");
    expect(err.message).toContain(`worker ssh://tbuild-test@127.0.0.1:${sshd.port} refused the keys offered`);
    expect(err.message).toContain(`identity file ${wrong}`);
  });

  it("authenticates with the keys of the user's ssh-agent when no identity file is set", async () => {
    const dir = tempDir("agent");
    const socket = path.join(dir, "agent.sock");
    const agent: ChildProcess = spawn("ssh-agent", ["-D", "-a", socket], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    try {
      // ssh-agent -D prints its environment lines once its socket listens.
      await new Promise<void>((resolve, reject) => {
        agent.stdout!.once("data", () => resolve());
        agent.once("exit", () => reject(new Error("ssh-agent exited")));
      });
      execFileSync("ssh-add", [sshd.clientKey], {
        env: { ...process.env, SSH_AUTH_SOCK: socket },
        stdio: "ignore",
      });
      const emptyHome = tempDir("agent-home");
      const saved = process.env.SSH_AUTH_SOCK;
      process.env.SSH_AUTH_SOCK = socket;
      let transport: Transport;
      try {
        const { identityFile: _, agent: __, ...rest } = base;
        transport = await connect(sshd.url, { ...rest, home: emptyHome });
      } finally {
        if (saved === undefined) delete process.env.SSH_AUTH_SOCK;
        else process.env.SSH_AUTH_SOCK = saved;
      }
      const data = randomBytes(1000);
      expect(await echoHash(transport.stream, data)).toBe(sha256(data));
    } finally {
      const exited = new Promise((resolve) => agent.once("exit", resolve));
      agent.kill("SIGTERM");
      await exited;
    }
  });

  it("falls back to ~/.ssh/id_ed25519 as ssh does, and says so when there is no key at all", async () => {
    const home = tempDir("home");
    const { identityFile: _, ...rest } = base;
    const none = await rejection(openTransport(sshd.url, { ...rest, home }));
    expect(none.code).toBe("E_WORKER_AUTH");
    expect(none.message).toContain("no SSH key to offer");

    mkdirSync(path.join(home, ".ssh"), { mode: 0o700 });
    copyFileSync(sshd.clientKey, path.join(home, ".ssh", "id_ed25519"));
    chmodSync(path.join(home, ".ssh", "id_ed25519"), 0o600);
    const transport = await connect(sshd.url, { ...rest, home });
    const data = randomBytes(1000);
    expect(await echoHash(transport.stream, data)).toBe(sha256(data));
  });

  it("names the worker and the likely cause when nothing listens on its port", async () => {
    const port = await freePort();
    const err = await rejection(openTransport(`ssh://tbuild-test@127.0.0.1:${port}`, base));
    expect(err.code).toBe("E_WORKER_UNREACHABLE");
    expect(err.message).toBe(
      `cannot reach worker ssh://tbuild-test@127.0.0.1:${port}: connection refused (is sshd running there, and is the port right?)`,
    );
  });

  it("errors out, instead of hanging, when the host's session dies mid-stream", async () => {
    const before = new Set(sshd.sessionPids());
    const transport = await connect(sshd.url, base);
    transport.stream.write("ping");
    expect((await firstChunk(transport.stream)).toString()).toBe("ping");
    const failed = streamError(transport.stream);
    // This connection's sshd process: the one that was not there before it.
    const ours = sshd.sessionPids().filter((pid) => !before.has(pid));
    expect(ours).toHaveLength(1);
    sshd.killSession(ours[0]!);
    const err = await failed;
    expect(err.code).toBe("E_WORKER_CONNECTION_LOST");
    expect(err.message).toContain(`lost the connection to worker ssh://tbuild-test@127.0.0.1:${sshd.port}`);
  });

  it("notices a link that goes silent through its keepalives", async () => {
    const proxy = await startTcpProxy({ port: sshd.port });
    try {
      const knownHosts = path.join(tempDir("proxy"), "known_hosts");
      writeFileSync(
        knownHosts,
        `${sshd.knownHostsLine("ed25519").replace(`:${sshd.port} `, `:${proxy.port} `)}\n`,
      );
      const transport = await connect(`ssh://tbuild-test@127.0.0.1:${proxy.port}`, {
        ...base,
        knownHosts,
        keepaliveInterval: 100,
        keepaliveCountMax: 2,
      });
      transport.stream.write("ping");
      expect((await firstChunk(transport.stream)).toString()).toBe("ping");
      const failed = streamError(transport.stream);
      proxy.freeze();
      transport.stream.write("lost in the void");
      const err = await failed;
      expect(err.code).toBe("E_WORKER_CONNECTION_LOST");
      expect(err.message).toContain("no answer to 2 keepalives");
    } finally {
      await proxy.stop();
    }
  });

  it("names the worker when its port accepts but never completes an SSH handshake", async () => {
    const proxy = await startTcpProxy({ port: sshd.port });
    try {
      proxy.freeze();
      const url = `ssh://tbuild-test@127.0.0.1:${proxy.port}`;
      const err = await rejection(openTransport(url, { ...base, connectTimeout: 300 }));
      expect(err.code).toBe("E_WORKER_TIMEOUT");
      expect(err.message).toContain(`worker ${url} did not complete an SSH handshake`);
    } finally {
      await proxy.stop();
    }
  });

  it("closes the connection and the stream when its abort signal fires", async () => {
    const before = new Set(sshd.sessionPids());
    const controller = new AbortController();
    const transport = await connect(sshd.url, { ...base, signal: controller.signal });
    transport.stream.write("ping");
    expect((await firstChunk(transport.stream)).toString()).toBe("ping");
    const session = sshd.sessionPids().filter((pid) => !before.has(pid));
    expect(session).toHaveLength(1);
    const failed = streamError(transport.stream);
    controller.abort(new Error("build canceled"));
    expect((await failed).message).toBe("build canceled");
    await transport.close();
    // The host ends the session once the connection is gone: sshd reaps its process.
    await Promise.all(session.map((pid) => untilGone(pid)));
  });

  it("reports a worker command that fails, with the last lines of its stderr", async () => {
    const transport = await connect(sshd.url, {
      ...base,
      command: "echo 'starting' >&2; echo 'worker store is not writable' >&2; exit 3",
    });
    const err = await streamError(transport.stream);
    expect(err.code).toBe("E_WORKER_COMMAND");
    expect(err.message).toContain(`exited with code 3`);
    expect(err.message.split("\n").slice(1)).toEqual(["  starting", "  worker store is not writable"]);
  });

  it("says to set the worker command when tbuild is not on the host's PATH (the default command)", async () => {
    const { command: _, ...rest } = base;
    const transport = await connect(sshd.url, rest);
    const err = await streamError(transport.stream);
    expect(err.code).toBe("E_WORKER_COMMAND");
    expect(err.message).toContain("`tbuild worker --stdio`");
    expect(err.message).toContain("exited with code 127");
    expect(err.message).toContain("set the worker's command");
  });
});

describe("cmd:// transport", () => {
  it("carries bytes both ways through a command that enters its own network namespace", async () => {
    const ours = execFileSync("readlink", ["/proc/self/ns/net"], { encoding: "utf8" }).trim();
    const transport = await openTransport(
      "cmd://unshare --user --map-root-user --net sh -c 'readlink /proc/self/ns/net >&2; exec cat'",
    );
    const data = randomBytes(MiB);
    expect(await echoHash(transport.stream, data)).toBe(sha256(data));
    await transport.close();
    const theirs = transport.stderrTail();
    expect(theirs).toHaveLength(1);
    expect(theirs[0]).toMatch(/^net:\[\d+\]$/);
    expect(theirs[0]).not.toBe(ours);
  });

  it("reports a command that exits early, with its exit code and the last lines of its stderr", async () => {
    const transport = await openTransport("cmd://echo 'error: pod build-0 not found' >&2; exit 7");
    const err = await streamError(transport.stream);
    expect(err.code).toBe("E_WORKER_COMMAND");
    expect(err.message).toBe(
      "worker command `echo 'error: pod build-0 not found' >&2; exit 7` exited with code 7; its stderr ends with:\n  error: pod build-0 not found",
    );
    await transport.close();
  });

  it("keeps a bounded stderr backlog from a worker that floods it, and still quotes its last lines", async () => {
    const transport = await openTransport("cmd://yes flood | head -n 5000000 >&2; echo done >&2; exec cat");
    expect(await echoHash(transport.stream, Buffer.from("x"))).toBe(sha256(Buffer.from("x")));
    expect(transport.stderrTail().slice(-2)).toEqual(["flood", "done"]);
    await transport.close();
    // 30 MB went to stderr while nobody read transport.stderr: a late reader finds at most the
    // 1 MiB backlog (and the chunk that crossed it).
    let backlog = 0;
    for await (const chunk of transport.stderr) backlog += (chunk as Buffer).length;
    expect(backlog).toBeGreaterThan(0);
    expect(backlog).toBeLessThanOrEqual(MiB + 64 * 1024);
  });

  it("ends a command that ignores the end of its input when closed", async () => {
    const pidFile = path.join(tempDir("cmd"), "pid");
    const transport = await openTransport(`cmd://echo $$ > ${pidFile}; exec sleep 600`, {
      closeTimeout: 100,
    });
    transport.stream.write("x");
    await new Promise<void>((resolve) => {
      const check = () =>
        existsSync(pidFile) && readFileSync(pidFile, "utf8").endsWith("\n") ? resolve() : setImmediate(check);
      check();
    });
    const pid = Number(readFileSync(pidFile, "utf8"));
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    await transport.close();
    expect(existsSync(`/proc/${pid}`)).toBe(false);
  });
});

describe("worker URLs", () => {
  it("reads ssh:// and cmd:// URLs, with ssh's defaults for user and port", () => {
    expect(parseWorkerUrl("ssh://build.example", "me")).toEqual({
      transport: "ssh",
      user: "me",
      host: "build.example",
      port: 22,
    });
    expect(parseWorkerUrl("ssh://ci@10.0.0.5:2222")).toEqual({
      transport: "ssh",
      user: "ci",
      host: "10.0.0.5",
      port: 2222,
    });
    expect(parseWorkerUrl("ssh://ci@[::1]:2200")).toEqual({
      transport: "ssh",
      user: "ci",
      host: "::1",
      port: 2200,
    });
    expect(parseWorkerUrl("cmd://kubectl exec -i pod-0 -- tbuild worker --stdio")).toEqual({
      transport: "cmd",
      command: "kubectl exec -i pod-0 -- tbuild worker --stdio",
    });
  });

  it.each([
    ["ssh://ci:secret@host", "holds a password"],
    ["ssh://host/path", "has a path or query"],
    ["tcp://host:1234", "has an unknown transport"],
    ["ssh://", "names no host"],
    ["cmd://", "names no command"],
  ])("refuses %s", (url, why) => {
    expect(() => parseWorkerUrl(url)).toThrow(
      expect.objectContaining({ code: "E_WORKER_URL", message: expect.stringContaining(why) }),
    );
  });
});

describe("known_hosts host patterns", () => {
  it("match the hosts ssh-keygen -F finds for them", () => {
    const dir = tempDir("patterns");
    const file = path.join(dir, "known_hosts");
    const key = readFileSync(`${makeKeyPair(path.join(dir, "k"))}.pub`, "utf8")
      .split(" ")
      .slice(0, 2)
      .join(" ");
    const patterns = [
      "*.build.example,!bad.build.example",
      "[gpu.example]:2222",
      "h?st",
      "10.0.0.*",
      "Mixed.Example",
    ];
    writeFileSync(file, patterns.map((p) => `${p} ${key}\n`).join(""));
    const lines = parseKnownHosts(readFileSync(file, "utf8"), file);
    const names: [string, number][] = [
      ["a.build.example", 22],
      ["bad.build.example", 22],
      ["gpu.example", 2222],
      ["gpu.example", 22],
      ["host", 22],
      ["hoost", 22],
      ["10.0.0.7", 22],
      ["10.0.0.7", 2200],
      ["mixed.example", 22],
    ];
    for (const [host, port] of names) {
      const name = knownHostsName(host, port);
      const ours = lines.filter((l) => hostFieldMatches(l.hosts, name)).map((l) => l.line);
      let found = "";
      try {
        found = execFileSync("ssh-keygen", ["-F", name, "-f", file], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "ignore"],
        });
      } catch {
        // Exit code 1: not found.
      }
      const theirs = [...found.matchAll(/found: line (\d+)/g)].map((m) => Number(m[1]));
      expect({ name, lines: ours }).toEqual({ name, lines: theirs });
    }
  });
});
