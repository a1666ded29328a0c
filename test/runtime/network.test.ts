/**
 * `tbuild run`'s private network, as root and rootless: `-p`/`-P` forward host ports into the
 * container's own network namespace (TCP and UDP), a port in use is a clear error, outbound traffic
 * goes through slirp4netns where it can run (with neither it nor pasta, a warning and loopback
 * only), and `--hostname`, `--add-host`, `--dns` land in the container's /etc files. After each
 * case nothing of it is left running or mounted.
 */
import { readdirSync, readFileSync, readlinkSync, statSync, symlinkSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  hostAddress,
  httpGet,
  recordingServer,
  udpExchange,
  writeServerContext,
} from "../helpers/network.js";
import { tempDirs } from "../helpers/temp.js";
import { eventually, hostProcesses, type ModeEnv, modes, type SpawnedTbuild, setUpMode } from "./harness.js";

const tempDir = tempDirs();

const NO_OUTBOUND = /the container's private network has no outbound traffic/g;

/** Whether slirp4netns can make its tap device for this mode: root can; a user needs /dev/net/tun open to all. */
function outboundPossible(mode: string): boolean {
  return mode === "root" || (statSync("/dev/net/tun").mode & 0o006) === 0o006;
}

/** Processes of these tests' containers: the forwarder, slirp4netns, the server image's httpd. */
function networkProcesses(): string[] {
  return hostProcesses().filter(
    (args) =>
      args.includes("dist/bundle/cli/forwarder.js") ||
      args.startsWith("/usr/bin/slirp4netns") ||
      args === "httpd -p 8080 -h /www",
  );
}

describe.each(modes())("tbuild run's private network as $name", (mode) => {
  let env: ModeEnv;
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
    const ctx = env.ownedDir("web");
    writeServerContext(ctx);
    env.ok(["build", "-q", "-t", "web", ctx]);
  }, 180_000);

  afterEach(async () => {
    expect(await eventually(() => networkProcesses().length === 0), networkProcesses().join("\n")).toBe(true);
    expect(env.mountsInStore()).toEqual([]);
  });

  /** A server container started in the background, once it says it listens. */
  async function serve(
    args: string[],
  ): Promise<{ run: SpawnedTbuild; interfaces: string; stop(): Promise<void> }> {
    const run = env.spawn(["run", ...args, "web"]);
    const ready = await Promise.race([
      eventually(() => run.output().stdout.includes("ready\n"), 60_000),
      run.exited.then(() => false),
    ]);
    expect(ready, JSON.stringify(run.output())).toBe(true);
    const interfaces = /interfaces: (.*)/.exec(run.output().stdout)![1]!.trim();
    return {
      run,
      interfaces,
      async stop() {
        process.kill(await run.tbuildPid(), "SIGTERM");
        const exit = await run.exited;
        expect(exit.code, JSON.stringify(run.output())).toBe(0);
      },
    };
  }

  /** The ports a running container's record says were bound (what `ps` shows). */
  function boundPorts(name: string): { hostPort: number; containerPort: number; protocol: string }[] {
    const id = readlinkSync(path.join(env.store, "container-names", name));
    const record = JSON.parse(readFileSync(path.join(env.store, "containers", id, "container.json"), "utf8"));
    return record.state.ports;
  }

  it("-p IP:HOST:CTR answers through the host port; the container has loopback (and slirp4netns's tap0)", async () => {
    const port = await freePort();
    const server = await serve(["--rm", "-p", `127.0.0.1:${port}:8080`]);
    try {
      const body = await httpGet(port);
      // httpd serves the container's host name: its ID's first 12 characters.
      expect(body).toMatch(/^[0-9a-f]{12}\n$/);
      expect(server.interfaces).toBe(outboundPossible(mode.name) ? "lo tap0" : "lo");
      const warnings = server.run.output().stderr.match(NO_OUTBOUND) ?? [];
      expect(warnings.length).toBe(outboundPossible(mode.name) ? 0 : 1);
    } finally {
      await server.stop();
    }
  });

  it("two containers publishing the same container port on different host ports both answer", async () => {
    const [first, second] = [await freePort(), await freePort()];
    const a = await serve(["--rm", "-p", `127.0.0.1:${first}:8080`]);
    try {
      const b = await serve(["--rm", "-p", `127.0.0.1:${second}:8080`]);
      try {
        const [bodyA, bodyB] = [await httpGet(first), await httpGet(second)];
        expect(bodyA).toMatch(/^[0-9a-f]{12}\n$/);
        expect(bodyB).toMatch(/^[0-9a-f]{12}\n$/);
        expect(bodyA).not.toBe(bodyB);
      } finally {
        await b.stop();
      }
    } finally {
      await a.stop();
    }
  });

  it("the same host port twice: the second run fails naming the port, the first still answers", async () => {
    const port = await freePort();
    const first = await serve(["--rm", "-p", `127.0.0.1:${port}:8080`]);
    try {
      const name = `second-${mode.name}`;
      const second = await env.runAsync(["run", "--name", name, "-p", `127.0.0.1:${port}:8080`, "web"]);
      expect(second.status).toBe(1);
      expect(second.stderr).toBe(
        `ERROR: cannot publish 127.0.0.1:${port}/tcp: the port is already in use on this host; publish another host port (-p OTHER:8080) or stop what uses it\n`,
      );
      // Never started: docker's "Created", and removable.
      expect(env.ok(["ps", "-a"])).toMatch(new RegExp(`Created +${name}`));
      env.ok(["rm", name]);
      expect(await httpGet(port)).toMatch(/^[0-9a-f]{12}\n$/);
    } finally {
      await first.stop();
    }
  });

  it("-P publishes every EXPOSEd port to a free host port; UDP datagrams reach the container and come back", async () => {
    const name = `all-${mode.name}`;
    const server = await serve(["--rm", "--name", name, "-P"]);
    try {
      const ports = boundPorts(name);
      expect(ports.map((p) => `${p.containerPort}/${p.protocol}`).sort()).toEqual(["8080/tcp", "9999/udp"]);
      const tcp = ports.find((p) => p.protocol === "tcp")!;
      const udp = ports.find((p) => p.protocol === "udp")!;
      expect(tcp.hostPort).toBeGreaterThan(0);
      expect(await httpGet(tcp.hostPort)).toMatch(/^[0-9a-f]{12}\n$/);
      expect(await udpExchange(udp.hostPort, "datagram-1")).toBe("echo:datagram-1");
      expect(await udpExchange(udp.hostPort, "datagram-2")).toBe("echo:datagram-2");
    } finally {
      await server.stop();
    }
  });

  it("outbound: reaches a server on the host's own address through slirp4netns, where it can run", async () => {
    const address = hostAddress();
    const listener = await recordingServer(address);
    try {
      const result = await env.runAsync([
        "run",
        "--rm",
        "--network",
        "private",
        "busybox",
        "sh",
        "-c",
        `echo outbound | nc -w 10 ${address} ${listener.port}`,
      ]);
      if (outboundPossible(mode.name)) {
        expect(result.status, result.stderr).toBe(0);
        expect(await listener.received).toBe("outbound\n");
      } else {
        expect(result.status).not.toBe(0);
        expect(result.stderr.match(NO_OUTBOUND)?.length).toBe(1);
        expect(result.stderr).toMatch(/slirp4netns failed: .*\/dev\/net\/tun/);
        expect(listener.connections()).toBe(0);
      }
    } finally {
      await listener.close();
    }
  });

  it("without slirp4netns and pasta: one warning naming what to install, and no outbound traffic", async () => {
    // A PATH with everything of /usr/bin and /bin but the two user-mode network stacks.
    const bin = env.ownedDir("path");
    for (const dir of ["/usr/bin", "/bin"]) {
      for (const name of readdirSync(dir)) {
        if (name === "slirp4netns" || name === "pasta") continue;
        try {
          symlinkSync(path.join(dir, name), path.join(bin, name));
        } catch {
          // in both
        }
      }
    }
    const address = hostAddress();
    const listener = await recordingServer(address);
    try {
      const result = env.run(
        [
          "run",
          "--rm",
          "--network",
          "bridge",
          "busybox",
          "sh",
          "-c",
          `tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; echo outbound | nc -w 10 ${address} ${listener.port}`,
        ],
        { env: { PATH: `${bin}:/usr/local/sbin:/usr/sbin:/sbin` } },
      );
      expect(result.stdout).toBe("lo\n");
      expect(result.status).not.toBe(0);
      expect(result.stderr.match(NO_OUTBOUND)?.length).toBe(1);
      expect(result.stderr).toContain(
        "neither slirp4netns nor pasta is installed (sudo apt-get install slirp4netns)",
      );
      expect(listener.connections()).toBe(0);
    } finally {
      await listener.close();
    }
  });

  it("tbuild killed with SIGKILL: its forwarder, slirp4netns and container go with it", async () => {
    const port = await freePort();
    const server = await serve(["--rm", "-p", `127.0.0.1:${port}:8080`]);
    expect(networkProcesses().length).toBeGreaterThan(0);
    process.kill(await server.run.tbuildPid(), "SIGKILL");
    await server.run.exited;
    // afterEach: no forwarder, no slirp4netns, nothing mounted; and the port is free again.
    expect(await eventually(() => networkProcesses().length === 0)).toBe(true);
    expect(await httpGet(port)).toBe("error: ECONNREFUSED");
  });

  it("--hostname, --add-host and --dns land in /etc; --dns with the host's network and port ranges are refused", () => {
    const out = env.ok([
      "run",
      "--rm",
      "--network",
      "private",
      "--hostname",
      "web1",
      "--add-host",
      "db:10.1.2.3",
      "--dns",
      "10.9.9.9",
      "busybox",
      "sh",
      "-c",
      "hostname; grep db /etc/hosts; grep nameserver /etc/resolv.conf",
    ]);
    expect(out).toBe("web1\n10.1.2.3\tdb\nnameserver 10.9.9.9\n");
    // The host's network keeps the host's resolvers: --dns is an error there, as one line.
    const dns = env.run(["run", "--rm", "--dns", "10.9.9.9", "busybox", "true"]);
    expect(dns.status).toBe(2);
    expect(dns.stderr).toMatch(
      /^ERROR: --dns sets the nameservers of a private network; .*add --network private\n$/,
    );
    const range = env.run(["run", "--rm", "-p", "8000-8001:80", "busybox", "true"]);
    expect(range.status).toBe(1);
    expect(range.stderr).toBe(
      "ERROR: -p 8000-8001:80: port ranges are not supported yet: publish each port with a -p of its own\n",
    );
  });
});
