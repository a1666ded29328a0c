/**
 * The parts of pools that read what the other end says. A worker's `claim` and `affinity` take a
 * store path and a context key from whoever connects (over SSH: anyone with a login there); a
 * client takes `info` from whatever the configured command starts. Neither may write where no
 * store is, read outside the store, or fall over: a lie gets one line, the honest part goes on.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { connect } from "../../worker/remote/protocol.js";
import { projectRoot, tbuildBin } from "../helpers/cli.js";
import { spawnWorker } from "../worker/remote/worker-process.js";
import { hostileWorld, MODES, tbuildCommandLine } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("pool methods of tbuild worker --stdio, asked by a hostile client (%s)", (mode) => {
  it("a claim in someone's directory named as the store is refused with one line, and nothing is written there", async () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const worker = spawnWorker(tbuildCommandLine(mode, store, ["worker", "--stdio"]));
    const client = await connect(worker.stream, { side: "client", peer: "worker w", store: canary.dir });
    const refused = await client.request("claim", {}).then(
      () => undefined,
      (err: Error & { code?: string }) => err,
    );
    client.close();
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    expect(refused?.code).toBe("E_WORKER_STORE");
    expect(refused?.message).toBe(
      `${canary.dir} on this worker is not a tbuild store (it has no oci-layout, and holds "secret"): name a store, or a new directory`,
    );
    canary.expectUntouched(refused?.message ?? "", worker.stderr());
    world.expectStoreUsable(mode, store);
  });

  it("an affinity question whose context key climbs out of the store reads nothing out there", async () => {
    const store = world.store(mode);
    // What the worker would count if it followed the key: a keys record of two builds' keys.
    const planted = world.dir("planted", mode);
    writeFileSync(
      path.join(planted, "evil.keys.json"),
      JSON.stringify({ builds: [{ dockerfile: "sha256:x", keys: ["k1", "k2"], at: 0 }] }),
    );
    const climb = path.relative(path.join(store, "remote-contexts"), path.join(planted, "evil"));
    const worker = spawnWorker(tbuildCommandLine(mode, store, ["worker", "--stdio"]));
    const client = await connect(worker.stream, { side: "client", peer: "worker w" });
    const answer = await client.request("affinity", { contextKey: climb, dockerfile: "sha256:x" });
    client.close();
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    expect(answer).toEqual({ cached: 0, keys: 0 });
    world.expectStoreUsable(mode, store);
  });
});

/**
 * A worker process that speaks the protocol but answers `info` with nonsense: a negative count of
 * running builds and platforms that are no list. Through `cmd://`, what any configured command
 * can start.
 */
function lyingWorker(mode: (typeof MODES)[number]): string {
  const dir = world.dir("liar", mode);
  const script = path.join(dir, "liar.mjs");
  const protocol = pathToFileURL(path.join(projectRoot, "dist/worker/remote/protocol.js")).href;
  writeFileSync(
    script,
    `import { Duplex } from "node:stream";
import { connect } from ${JSON.stringify(protocol)};
const stream = Duplex.from({ readable: process.stdin, writable: process.stdout });
const connection = await connect(stream, {
  side: "worker",
  peer: "the client",
  handlers: {
    info: () => ({ tbuild: "0.1.0", protocol: 1, platforms: "all of them", runningBuilds: -1e9, cacheSize: 1 }),
    affinity: () => ({ cached: 1e9, keys: 1e9 }),
    claim: () => ({ before: -5 }),
  },
});
await connection.closed;
`,
    { mode: 0o644 },
  );
  // The checkout's Node, which the rootless user can reach (this process's may lie in a private directory).
  return `cmd://${path.join(projectRoot, "node_modules/node/bin/node")} ${script}`;
}

describe.each(MODES)("a pool with a worker that lies in info (%s)", (mode) => {
  it("the liar is skipped as down with one line naming it, and the build runs on the honest worker", () => {
    const store = world.store(mode);
    const client = world.store(mode);
    const ctx = world.context({ Dockerfile: "FROM busybox\nRUN echo honest > /honest\n" });
    const configDir = world.dir("config", mode);
    const config = path.join(configDir, "config.toml");
    writeFileSync(
      config,
      [
        "[worker.liar]",
        `url = "${lyingWorker(mode)}"`,
        "[worker.honest]",
        `url = "cmd://TBUILD_ROOT=${store} ${tbuildBin} worker --stdio"`,
        "[pool.p]",
        'workers = ["liar", "honest"]',
        "",
      ].join("\n"),
    );
    const built = world.tbuild(
      mode,
      client,
      ["build", "--progress=plain", "--worker", "pool:p", "-t", "x:1", ctx],
      {
        env: { TBUILD_CONFIG: config },
      },
    );
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toMatch(
      /WARNING: worker liar \(cmd:\/\/[^)]+\) of pool p is down, skipped: worker liar \(cmd:\/\/[^)]+\) answered `info` with malformed data\n/,
    );
    expect(built.stderr).toMatch(/#0 building on worker honest \(/);
    const images = world.tbuild(mode, client, ["images"]);
    expect(images.stdout).toMatch(/\nx +1 /);
    const listed = world.tbuild(mode, client, ["worker", "ls", "--format", "json"], {
      env: { TBUILD_CONFIG: config },
    });
    expect(listed.status, listed.stderr).toBe(0);
    const rows = JSON.parse(listed.stdout) as {
      name: string;
      reachable: boolean;
      error?: { message: string };
    }[];
    expect(rows.map((r) => [r.name, r.reachable])).toEqual([
      ["liar", false],
      ["honest", true],
    ]);
    expect(rows[0]!.error!.message).toMatch(/answered `info` with malformed data$/);
    world.expectStoreUsable(mode, store);
    world.expectStoreUsable(mode, client);
  });
});
