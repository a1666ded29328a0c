/**
 * `[worker.NAME]` and `[pool.NAME]` in config.toml, beside `[worker]`'s own `snapshotter`: read
 * into plain data, and every mistake one line naming the file and the key, from the reader and
 * from the commands that read them (`tbuild build --worker`, `tbuild worker ls`), without a stack
 * trace. A build that stays local is not refused for a remote worker's mistake.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig, readRemoteWorkers, readWorkerSettings } from "../../build/config.js";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const FILE = "/etc/tbuild/config.toml";
const read = (text: string) => readRemoteWorkers(parseConfig(text, FILE));

describe("[worker.NAME] and [pool.NAME]", () => {
  it("are read beside [worker]'s snapshotter, paths resolved, platforms normalized", () => {
    const config = parseConfig(
      `[worker]
snapshotter = "copy"
[worker.build1]
url = "ssh://builder@build1.example:2222"
identity = "keys/build1"
known-hosts = "/etc/tbuild/known_hosts"
command = "/opt/tbuild/bin/tbuild worker --stdio"
store = "/srv/tbuild"
platforms = ["linux/arm64/v8"]
max-builds = 3
timeout = "5s"
[worker.k8s]
url = "cmd://kubectl exec -i build-0 -- tbuild worker --stdio"
[pool.all]
workers = ["build1", "k8s"]
`,
      FILE,
    );
    expect(readWorkerSettings(config)).toEqual({ snapshotter: "copy" });
    expect(readRemoteWorkers(config)).toEqual({
      workers: {
        build1: {
          name: "build1",
          url: "ssh://builder@build1.example:2222",
          identity: "/etc/tbuild/keys/build1",
          knownHosts: "/etc/tbuild/known_hosts",
          command: "/opt/tbuild/bin/tbuild worker --stdio",
          store: "/srv/tbuild",
          platforms: ["linux/arm64"],
          maxBuilds: 3,
          timeout: 5000,
        },
        k8s: { name: "k8s", url: "cmd://kubectl exec -i build-0 -- tbuild worker --stdio" },
      },
      pools: { all: { name: "all", workers: ["build1", "k8s"] } },
    });
  });

  it.each([
    [
      '[worker.a]\nurl = "ssh://h"\nidentty = "k"\n',
      "unknown key worker.a.identty (known: url, identity, known-hosts, command, store, platforms, max-builds, timeout)",
    ],
    ['[worker.a]\nidentity = "k"\n', 'worker.a has no url: set url = "ssh://user@host"'],
    ['[worker.a]\nurl = "http://h"\n', 'worker.a.url: worker URL "http://h" has an unknown transport'],
    ['[worker.a]\nurl = "ssh://u:pw@h"\n', 'worker.a.url: worker URL "ssh://u:pw@h" holds a password'],
    [
      '[worker.a]\nurl = "ssh://h"\nmax-builds = 0\n',
      "worker.a.max-builds must be a whole number of at least 1",
    ],
    [
      '[worker.a]\nurl = "ssh://h"\nplatforms = "linux/amd64"\n',
      'worker.a.platforms must be a non-empty array such as ["linux/amd64"]',
    ],
    ['[worker.a]\nurl = "ssh://h"\nplatforms = ["linux/*"]\n', "worker.a.platforms: "],
    [
      '[worker.a]\nurl = "ssh://h"\nstore = "relative/store"\n',
      "worker.a.store must be an absolute path on the worker's host",
    ],
    [
      '[worker.a]\nurl = "ssh://h"\ntimeout = 5\n',
      'worker.a.timeout must be a duration such as "10s" or "1m"',
    ],
    ['[worker."a b"]\nurl = "ssh://h"\n', '[worker.a b]: a name is letters, digits, ".", "_" and "-"'],
    ['[worker.snapshotter]\nurl = "ssh://h"\n', "[worker.snapshotter] cannot name a worker"],
    [
      '[worker.a]\nurl = "ssh://h"\n[pool.p]\nworkers = ["a", "b"]\n',
      'pool.p.workers names "b", which no [worker.b] table defines',
    ],
    [
      '[worker.a]\nurl = "ssh://h"\n[pool.p]\nworkers = []\n',
      "pool.p.workers must be a non-empty array of worker names",
    ],
    ['[worker.a]\nurl = "ssh://h"\n[pool.p]\nworker = ["a"]\n', "unknown key pool.p.worker (known: workers)"],
    ["pool = 3\n", "pool must be a table of [pool.NAME] tables"],
  ])("%j is refused, naming the file and the key", (text, message) => {
    let caught: unknown;
    try {
      read(text);
    } catch (err) {
      caught = err;
    }
    expect((caught as { code?: string }).code).toBe("E_CONFIG");
    const said = (caught as Error).message;
    expect(said.startsWith(`${FILE}: `)).toBe(true);
    expect(said).toContain(message);
    expect(said).not.toContain("\n");
  });

  it("do not stop the local worker's settings from being read, nor an unknown [worker] key from being named", () => {
    const config = parseConfig('[worker]\nsnapshoter = "copy"\n[worker.a]\nurl = "ssh://h"\n', FILE);
    expect(() => readWorkerSettings(config)).toThrow(
      `${FILE}: unknown key worker.snapshoter (known: snapshotter; a remote worker is a [worker.NAME] table)`,
    );
    expect(readWorkerSettings(parseConfig('[worker.a]\nurl = "ssh://h"\nbad = 1\n', FILE))).toEqual({});
  });
});

describe("commands reading them", () => {
  const configFile = (text: string) => {
    const dir = tempDir("worker-config");
    const file = path.join(dir, "config.toml");
    writeFileSync(file, text);
    writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\n");
    return { dir, file, env: { TBUILD_CONFIG: file, TBUILD_ROOT: path.join(dir, "store") } };
  };

  it("tbuild worker ls and tbuild build --worker say the one line, naming file and key", () => {
    const { dir, file, env } = configFile('[worker.a]\nurl = "ssh://h"\nmax-builds = "two"\n');
    for (const args of [
      ["worker", "ls"],
      ["build", "--worker", "pool:p", dir],
      ["build", "--worker", "a", dir],
    ]) {
      const result = tbuild(args, { env });
      expect(result.status, args.join(" ")).toBe(1);
      expect(result.stderr.trim()).toBe(
        `ERROR: ${file}: worker.a.max-builds must be a whole number of at least 1`,
      );
    }
  });

  it("an unknown worker or pool name says what config.toml defines", () => {
    const { dir, file, env } = configFile('[worker.a]\nurl = "ssh://h"\n[pool.p]\nworkers = ["a"]\n');
    const unknown = tbuild(["build", "--worker", "b", dir], { env });
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toContain(`${file} has no [worker.b] table (its workers: a)`);
    const pool = tbuild(["build", "--worker", "p", dir], { env });
    expect(pool.stderr).toContain("[pool.p] is a pool: write --worker pool:p");
    const noPool = tbuild(["build", "--worker", "pool:q", dir], { env: { ...env, TBUILD_WORKER: "" } });
    expect(noPool.stderr).toContain(`${file} has no [pool.q] table (its pools: p)`);
    // TBUILD_WORKER is the default of --worker.
    const fromEnv = tbuild(["build", dir], { env: { ...env, TBUILD_WORKER: "pool:q" } });
    expect(fromEnv.status).toBe(1);
    expect(fromEnv.stderr).toContain(`${file} has no [pool.q] table`);
    for (const r of [unknown, pool, noPool, fromEnv]) expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("a local build is not refused for a remote worker's mistake", () => {
    const { dir, env } = configFile('[worker.a]\nurl = "ssh://h"\nmax-builds = "two"\n');
    const result = tbuild(["build", "--progress=plain", dir], { env });
    expect(result.status, result.stderr).toBe(0);
  });
});
