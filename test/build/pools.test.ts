/**
 * Named workers and pools of config.toml over two real OpenSSH servers: two workers for the same
 * unprivileged user (so each builds rootless) with stores of their own (`store`), keys and known
 * hosts of their own (`identity`, `known-hosts`). `tbuild worker ls` reports each; a pool sends two
 * builds started together to different workers (the least busy), a rebuild to the worker with the
 * warm cache, and a build whose worker dies mid-build to the other one, saying so.
 *
 * Builds are held in a RUN step that fetches from a gate served here: the test waits for a
 * build's request to know it runs, and answers when it chooses. Nothing waits for time.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { type RunningSshd, startSshd } from "../helpers/sshd.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** An HTTP server whose answers wait until the test releases them: `/NAME` is one build's step. */
class Gate {
  private server = http.createServer((req, res) => this.arrive(req.url!.slice(1), res));
  private held = new Map<string, http.ServerResponse[]>();
  private arrivals = new Map<string, number>();
  private waiters: { name: string; count: number; resolve: () => void }[] = [];
  private open = new Set<string>();
  port = 0;

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  private arrive(name: string, res: http.ServerResponse): void {
    if (this.open.has(name)) res.end(`${name}\n`);
    else this.held.set(name, [...(this.held.get(name) ?? []), res]);
    this.arrivals.set(name, (this.arrivals.get(name) ?? 0) + 1);
    for (const w of [...this.waiters]) {
      if (w.name === name && this.arrivals.get(name)! >= w.count) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  }

  /** Resolves once steps have asked for `name` `count` times in all. */
  reached(name: string, count = 1): Promise<void> {
    if ((this.arrivals.get(name) ?? 0) >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ name, count, resolve }));
  }

  /** Answers the held requests for `name`, and every later one at once. */
  release(name: string): void {
    this.open.add(name);
    for (const res of this.held.get(name) ?? []) res.end(`${name}\n`);
    this.held.delete(name);
  }

  async stop(): Promise<void> {
    for (const name of [...this.held.keys()]) this.release(name);
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** A tbuild run whose stderr can be waited on while it runs. */
function startTbuild(args: string[], env: NodeJS.ProcessEnv) {
  const child: ChildProcess = spawn(tbuildBin, args, {
    cwd: projectRoot,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  const watchers: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
    for (const w of [...watchers]) {
      const match = stderr.match(w.pattern);
      if (match) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(match);
      }
    }
  });
  child.stdout!.resume();
  const ended = new Promise<{ status: number | null; stderr: string }>((resolve) =>
    child.on("close", (status) => resolve({ status, stderr })),
  );
  return {
    ended,
    /** Resolves with `event`, or rejects when tbuild ends first (a build that failed never gets there). */
    before<T>(event: Promise<T>): Promise<T> {
      return Promise.race([
        event,
        ended.then(({ stderr: all }) => {
          throw new Error(`tbuild ended first:\n${all}`);
        }),
      ]);
    },
    /** Resolves with the first match of `pattern` in stderr (rejects if tbuild ends first). */
    saw(pattern: RegExp): Promise<RegExpMatchArray> {
      const match = stderr.match(pattern);
      if (match) return Promise.resolve(match);
      return Promise.race([
        new Promise<RegExpMatchArray>((resolve) => watchers.push({ pattern, resolve })),
        ended.then(({ stderr: all }) => {
          throw new Error(`tbuild ended before printing ${pattern}:\n${all}`);
        }),
      ]);
    },
  };
}

/** A project whose one RUN step waits at the gate under its own name. */
function gatedProject(name: string, gate: Gate): string {
  const dir = tempDir(`pool-${name}`);
  writeFileSync(
    path.join(dir, "Dockerfile"),
    `FROM busybox\nCOPY id /id\nRUN wget -q -O /answer http://127.0.0.1:${gate.port}/${name} && cat /answer\n`,
  );
  writeFileSync(path.join(dir, "id"), `${name}\n`);
  chmodSync(dir, 0o755);
  return dir;
}

/** The worker a build's progress names: `#0 building on worker NAME (URL)`. */
const WORKER_LINE = /#0 building on worker (\w+) \(/g;
const workersOf = (stderr: string) => [...stderr.matchAll(WORKER_LINE)].map((m) => m[1]!);

describe("a pool of two SSH workers", () => {
  const sshd: Record<"a" | "b", RunningSshd> = {} as Record<"a" | "b", RunningSshd>;
  const stores: Record<"a" | "b", string> = { a: "", b: "" };
  const gate = new Gate();
  let env: NodeJS.ProcessEnv = {};
  let configFile = "";

  beforeAll(async () => {
    await gate.start();
    sshd.a = await startSshd();
    sshd.b = await startSshd();
    const hosts = tempDir("pool-hosts");
    chmodSync(hosts, 0o755);
    for (const name of ["a", "b"] as const) {
      stores[name] = path.join(hosts, name, "store");
      mkdirSync(stores[name], { recursive: true });
      await importBusybox(stores[name], "busybox");
    }
    execFileSync("chown", ["-R", "tbuild-test:", hosts]);
    const client = tempDir("pool-client");
    configFile = path.join(client, "config.toml");
    // The client's copies of each host's key and known_hosts line (they outlive a stopped sshd).
    for (const name of ["a", "b"] as const) {
      copyFileSync(sshd[name].clientKey, path.join(client, `${name}.key`));
      copyFileSync(sshd[name].knownHosts, path.join(client, `${name}.known_hosts`));
    }
    const worker = (name: "a" | "b") =>
      [
        `[worker.${name}]`,
        `url = "${sshd[name].url}"`,
        `identity = "${name}.key"`,
        `known-hosts = "${name}.known_hosts"`,
        `command = "${tbuildBin} worker --stdio"`,
        `store = "${stores[name]}"`,
        "max-builds = 2",
        "",
      ].join("\n");
    writeFileSync(configFile, `${worker("a")}${worker("b")}[pool.p]\nworkers = ["a", "b"]\n`);
    // The same workers, a said in config.toml to build another platform than this machine's.
    writeFileSync(
      path.join(client, "platforms.toml"),
      `${worker("a")}platforms = ["linux/s390x"]\n${worker("b")}[pool.p]\nworkers = ["a", "b"]\n`,
    );
    env = {
      TBUILD_CONFIG: configFile,
      TBUILD_ROOT: path.join(client, "store"),
      // No agent, no ~/.ssh keys: the identity of each worker is what gets in.
      HOME: client,
      SSH_AUTH_SOCK: "",
      SOURCE_DATE_EPOCH: String(FIXED_EPOCH),
      TBUILD_WORKER_COMMAND: "",
    };
  }, 180_000);

  afterAll(async () => {
    await gate.stop();
    await sshd.a?.stop();
    await sshd.b?.stop();
  });

  const build = (args: string[]) => startTbuild(["build", "--progress=plain", ...args], env);
  const listWorkers = async () => {
    const out = await tbuildAsync(["worker", "ls", "--format", "json"], { env });
    expect(out.status, out.stderr).toBe(0);
    return JSON.parse(out.stdout) as {
      name: string;
      reachable: boolean;
      pools: string[];
      tbuild?: string;
      platforms?: string[];
      rootless?: boolean;
      store?: string;
      runningBuilds?: number;
      maxBuilds?: number;
      cacheSize?: number;
      error?: { code: string; message: string };
    }[];
  };

  it("tbuild worker ls shows each worker: reachable, version, platforms, its store, no build running", async () => {
    const version = execFileSync(tbuildBin, ["version"], { encoding: "utf8" });
    const rows = await listWorkers();
    expect(
      rows.map((r) => [r.name, r.reachable, r.pools, r.rootless, r.store, r.runningBuilds, r.maxBuilds]),
    ).toEqual([
      ["a", true, ["p"], true, stores.a, 0, 2],
      ["b", true, ["p"], true, stores.b, 0, 2],
    ]);
    for (const row of rows) {
      expect(version).toContain(row.tbuild);
      expect(row.platforms).toHaveLength(1);
      // busybox's blobs at least.
      expect(row.cacheSize).toBeGreaterThan(500_000);
    }
    const table = await tbuildAsync(["worker", "ls"], { env });
    expect(table.stdout.split("\n")[0]).toMatch(
      /^NAME +URL +POOLS +VERSION +PLATFORMS +BUILDS +CACHE +REACHABLE$/,
    );
    expect(table.stdout).toMatch(
      new RegExp(`\\na +${sshd.a.url.replaceAll(".", "\\.")} +p +.* 0/2 +.* yes\\n`),
    );
  }, 120_000);

  it("two builds of different projects started together go to different workers, and worker ls counts them", async () => {
    const one = build(["--worker", "pool:p", "-t", "one:1", gatedProject("one", gate)]);
    const two = build(["--worker", "pool:p", "-t", "two:1", gatedProject("two", gate)]);
    await Promise.all([one.before(gate.reached("one")), two.before(gate.reached("two"))]);
    // Both held in their RUN step: each worker runs one build.
    const rows = await listWorkers();
    expect(rows.map((r) => r.runningBuilds)).toEqual([1, 1]);
    gate.release("one");
    gate.release("two");
    const [first, second] = await Promise.all([one.ended, two.ended]);
    expect(first.status, first.stderr).toBe(0);
    expect(second.status, second.stderr).toBe(0);
    expect([...workersOf(first.stderr), ...workersOf(second.stderr)].sort()).toEqual(["a", "b"]);
    expect((await listWorkers()).map((r) => r.runningBuilds)).toEqual([0, 0]);
  }, 300_000);

  it("a rebuild goes to the worker holding its cache, though the pool's order prefers the other", async () => {
    const project = tempDir("pool-warm");
    writeFileSync(path.join(project, "Dockerfile"), "FROM busybox\nCOPY id /id\nRUN cat /id > /copied\n");
    writeFileSync(path.join(project, "id"), "warm\n");
    chmodSync(project, 0o755);
    // Built on b by name: b holds its cache, a does not; idle, the pool would pick a first.
    const first = await build(["--worker", "b", "-t", "warm:1", project]).ended;
    expect(first.status, first.stderr).toBe(0);
    expect(workersOf(first.stderr)).toEqual(["b"]);
    const again = await build(["--worker", "pool:p", "-t", "warm:2", project]).ended;
    expect(again.status, again.stderr).toBe(0);
    expect(workersOf(again.stderr)).toEqual(["b"]);
    expect(again.stderr).toMatch(/RUN cat \/id > \/copied\n#\d+ CACHED/);
  }, 300_000);

  it("a build goes to a worker of its platform, though the pool's order prefers the other", async () => {
    const project = tempDir("pool-platform");
    writeFileSync(path.join(project, "Dockerfile"), "FROM busybox\nRUN echo native > /native\n");
    chmodSync(project, 0o755);
    const platformsConfig = path.join(path.dirname(configFile), "platforms.toml");
    const result = await startTbuild(["build", "--progress=plain", "--worker", "pool:p", project], {
      ...env,
      TBUILD_CONFIG: platformsConfig,
    }).ended;
    expect(result.status, result.stderr).toBe(0);
    expect(workersOf(result.stderr)).toEqual(["b"]);
    expect(result.stderr).not.toContain("natively");
  }, 300_000);

  it("a worker that dies mid-build: the build is retried once on the other, saying so", async () => {
    const project = gatedProject("dies", gate);
    const running = build(["--worker", "pool:p", "-t", "dies:1", project]);
    const firstWorker = (await running.saw(/#0 building on worker (\w+) \(/))[1] as "a" | "b";
    await running.before(gate.reached("dies"));
    // The worker's host side dies at once: its sshd session, the worker, the step.
    for (const pid of sshd[firstWorker].sessionPids()) sshd[firstWorker].killSession(pid);
    await running.saw(/was lost mid-build/);
    await running.before(gate.reached("dies", 2));
    gate.release("dies");
    const result = await running.ended;
    expect(result.status, result.stderr).toBe(0);
    const other = firstWorker === "a" ? "b" : "a";
    expect(workersOf(result.stderr)).toEqual([firstWorker, other]);
    expect(result.stderr).toMatch(
      new RegExp(
        `WARNING: worker ${firstWorker} \\(ssh://[^)]+\\) was lost mid-build \\(.*\\): retrying the build once on another worker of pool p\\n`,
      ),
    );
    // The image came back from the second worker to the client's store.
    const images = await tbuildAsync(["images", "--format", "json"], { env });
    expect((JSON.parse(images.stdout) as { name: string }[]).map((i) => i.name)).toContain(
      "docker.io/library/dies:1",
    );
  }, 300_000);

  it("tbuild worker ls with one worker stopped says why, and a pool build goes to the other with a warning", async () => {
    await sshd.b.stop();
    const rows = await listWorkers();
    expect(rows[0]).toMatchObject({ name: "a", reachable: true });
    expect(rows[1]).toMatchObject({ name: "b", reachable: false, error: { code: "E_WORKER_UNREACHABLE" } });
    expect(rows[1]!.error!.message).toBe(
      `cannot reach worker ${sshd.b.url}: connection refused (is sshd running there, and is the port right?)`,
    );
    const table = await tbuildAsync(["worker", "ls"], { env });
    expect(table.stdout).toMatch(
      /\nb +\S+ +p +- +- +- +- +no: cannot reach worker ssh:\S+: connection refused/,
    );

    const project = tempDir("pool-one-down");
    writeFileSync(path.join(project, "Dockerfile"), "FROM busybox\nRUN echo fine > /fine\n");
    chmodSync(project, 0o755);
    const result = await build(["--worker", "pool:p", project]).ended;
    expect(result.status, result.stderr).toBe(0);
    expect(workersOf(result.stderr)).toEqual(["a"]);
    expect(result.stderr).toContain(
      `WARNING: worker b (${sshd.b.url}) of pool p is down, skipped: cannot reach worker ${sshd.b.url}: connection refused`,
    );
  }, 300_000);
});
