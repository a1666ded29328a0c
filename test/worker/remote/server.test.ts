/**
 * The real far end: `bin/tbuild worker --stdio` in a child process on pipes, as root and as the
 * rootless test user (through runuser, as SSH would start it), spoken to with the protocol's
 * client: `info` and `ping`, many calls at once, a method it does not serve, a version mismatch
 * refused on both ends, a worker killed mid-request, and its end when the client hangs up.
 * These tests run as root and need `npm run build` first (they run the built dist/).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { TbuildError } from "../../../errors/index.js";
import { type Connection, connect } from "../../../worker/remote/protocol.js";
import { projectRoot, tbuildBin } from "../../helpers/cli.js";
import { importBusybox } from "../../helpers/images.js";
import { userIds } from "../../helpers/judges.js";
import { tempDirs } from "../../helpers/temp.js";
import { type DecodedFrame, decodeFrames, hello, MAGIC, messageFrame } from "./frames.js";
import { type Mode, ROOTLESS_USER, startWorker, type WorkerProcess } from "./worker-process.js";

const VERSION = (JSON.parse(readFileSync(`${projectRoot}package.json`, "utf8")) as { version: string })
  .version;
const tempDir = tempDirs();
/** This machine's platform as OCI names it, from `uname -m`. */
const NATIVE = `linux/${{ x86_64: "amd64", aarch64: "arm64" }[execFileSync("uname", ["-m"], { encoding: "utf8" }).trim()]}`;

let work: string;

beforeAll(() => {
  if (!existsSync(path.join(projectRoot, "dist/bundle/cli/main.js"))) {
    throw new Error("dist/ is not built: run `npm run build` before these tests");
  }
  work = tempDir("worker-server");
  execFileSync("chmod", ["755", work]);
});

/** A new directory under the work directory, owned by the mode's user. */
function dirFor(mode: Mode, name: string): string {
  const dir = path.join(work, `${name}-${mode}-${Math.random().toString(36).slice(2)}`);
  mkdirSync(dir);
  if (mode === "rootless") {
    const { uid, gid } = userIds(ROOTLESS_USER);
    chownSync(dir, uid, gid);
  }
  return dir;
}

/** A store with busybox in it, owned by the mode's user. */
async function storeWithBusybox(mode: Mode): Promise<string> {
  const store = path.join(dirFor(mode, "store"), "store");
  await importBusybox(store, "busybox");
  if (mode === "rootless") execFileSync("chown", ["-R", ROOTLESS_USER, store]);
  return store;
}

/** `tbuild du --format json`'s total for the store, run as the mode's user. */
function duTotal(mode: Mode, store: string): number {
  const command = ["env", `TBUILD_ROOT=${store}`, tbuildBin, "du", "--format", "json"];
  const argv = mode === "rootless" ? ["runuser", "-u", ROOTLESS_USER, "--", ...command] : command;
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", cwd: "/" });
  if (result.status !== 0) throw new Error(`tbuild du failed: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { total: number }).total;
}

async function connectTo(worker: WorkerProcess, store?: string): Promise<Connection> {
  return connect(worker.stream, {
    side: "client",
    peer: "worker cmd://test",
    ...(store !== undefined ? { store } : {}),
  });
}

describe.each(["root", "rootless"] as const)("tbuild worker --stdio (%s)", (mode) => {
  it("info tells the version, platform, rootlessness, store and the store's size as du counts it", async () => {
    const store = await storeWithBusybox(mode);
    const worker = startWorker(mode, {});
    const client = await connectTo(worker, store);
    const info = await client.request("info", {});
    client.close();
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    expect(info).toEqual({
      tbuild: VERSION,
      protocol: 3,
      platforms: [NATIVE],
      rootless: mode === "rootless",
      store,
      runningBuilds: 0,
      cacheSize: duTotal(mode, store),
    });
    expect((info as { cacheSize: number }).cacheSize).toBeGreaterThan(100_000);
    expect(worker.stderr()).toBe("");
  });

  it("without a store named, info names the worker user's default store, and makes none", async () => {
    const home = dirFor(mode, "home");
    const worker = startWorker(mode, { HOME: home });
    const client = await connectTo(worker);
    const info = (await client.request("info", {})) as { store: string; cacheSize: number };
    client.close();
    await worker.ended;
    expect(info.store).toBe(path.join(home, ".local/share/tbuild"));
    expect(info.cacheSize).toBe(0);
    expect(existsSync(path.join(home, ".local"))).toBe(false);
  });

  it("100 calls at once each get their own answer; a method it does not serve is refused, naming it", async () => {
    const worker = startWorker(mode, { TBUILD_ROOT: dirFor(mode, "store") });
    const client = await connectTo(worker);
    const pings = await Promise.all(Array.from({ length: 100 }, (_, n) => client.request("ping", { n })));
    expect(pings).toEqual(Array.from({ length: 100 }, (_, n) => ({ pong: { n } })));
    const refused = (await client
      .request("solve", { context: "." })
      .catch((err: unknown) => err)) as TbuildError;
    expect(refused.code).toBe("E_NOT_SUPPORTED");
    expect(refused.message).toBe(
      `\`solve\` is not supported yet by this worker (tbuild ${VERSION}, worker protocol 3); it serves: affinity, build, claim, info, ping, release`,
    );
    expect(await client.request("ping", "still there")).toEqual({ pong: "still there" });
    client.close();
    expect(await worker.ended).toEqual({ code: 0, signal: null });
  });

  it("claims from many connections at once on a new store all succeed, each round making one store", async () => {
    for (let round = 0; round < 4; round++) {
      // Not there yet: the first claim makes it while the others look at it.
      const store = path.join(dirFor(mode, "new-store"), "store");
      const workers = Array.from({ length: 6 }, () => startWorker(mode, {}));
      const clients = await Promise.all(workers.map((worker) => connectTo(worker, store)));
      const claims = await Promise.allSettled(clients.map((client) => client.request("claim", {})));
      expect(claims.map((c) => (c.status === "rejected" ? (c.reason as Error).message : "ok"))).toEqual(
        Array.from({ length: 6 }, () => "ok"),
      );
      for (const client of clients) client.close();
      for (const worker of workers) expect(await worker.ended).toEqual({ code: 0, signal: null });
      expect(existsSync(path.join(store, "oci-layout"))).toBe(true);
    }
  });

  it("ends when the client closes the stream, leaving no process behind", async () => {
    const worker = startWorker(mode, { TBUILD_ROOT: dirFor(mode, "store") });
    const client = await connectTo(worker);
    await client.request("ping", {});
    client.close();
    // Exited, and its stdout closed: no process of it (inside the user namespace either) holds it.
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    expect(worker.groupAlive()).toBe(false);
    expect(worker.stderr()).toBe("");
  });

  it("killed mid-request, every pending call rejects with one error naming the worker", async () => {
    const worker = startWorker(mode, { TBUILD_ROOT: dirFor(mode, "store") });
    const client = await connectTo(worker);
    // Stopped, it cannot answer: the calls are surely pending when it dies.
    process.kill(-worker.child.pid!, "SIGSTOP");
    const calls = [client.request("info", {}), client.request("ping", 1), client.request("ping", 2)];
    process.kill(-worker.child.pid!, "SIGKILL");
    const errors = await Promise.all(calls.map((call) => call.catch((err: unknown) => err)));
    expect(new Set(errors).size).toBe(1);
    expect(errors[0]).toMatchObject({ code: "E_WORKER_GONE" });
    expect((errors[0] as Error).message).toBe(
      "lost the connection to worker cmd://test while `info`, `ping`, `ping` were pending: the stream ended",
    );
    expect(await worker.ended).toEqual({ code: null, signal: "SIGKILL" });
    // Every process of it dies (the group's kill reaches each in its own time).
    await worker.groupGone();
  });

  it("a protocol mismatch is refused on both ends, each naming both versions", async () => {
    const worker = startWorker(mode, { TBUILD_ROOT: dirFor(mode, "store") });
    const refused = (await connect(worker.stream, {
      side: "client",
      peer: "worker cmd://test",
      announce: { protocol: 99, tbuild: "9.9.9" },
    }).catch((err: unknown) => err)) as TbuildError;
    expect(refused.code).toBe("E_WORKER_VERSION");
    expect(refused.message).toBe(
      `worker cmd://test runs tbuild ${VERSION} (worker protocol 3) and this tbuild 9.9.9 speaks protocol 99: install tbuild 9.9.9 on the host of worker cmd://test, or run tbuild ${VERSION} here`,
    );
    expect(await worker.ended).toEqual({ code: 1, signal: null });
    expect(worker.stderr()).toBe(
      `ERROR: the client runs tbuild 9.9.9 (worker protocol 99) and this worker's tbuild ${VERSION} speaks protocol 3: install tbuild 9.9.9 on this host, or run tbuild ${VERSION} on the client\n`,
    );
  });
});

describe("starting tbuild worker", () => {
  it("a login banner printed before the worker starts is named by the client, with the likely cause", async () => {
    const worker = startWorker(
      "root",
      { TBUILD_ROOT: dirFor("root", "store") },
      {
        shell: "echo 'Welcome to build1'; exec TBUILD worker --stdio",
      },
    );
    const refused = (await connectTo(worker).catch((err: unknown) => err)) as TbuildError;
    expect(refused.code).toBe("E_WORKER_PROTOCOL");
    expect(refused.message).toMatch(
      /^worker cmd:\/\/test does not speak the tbuild worker protocol: its output begins "Welcome to build1\\n/,
    );
    expect(refused.message).toContain(
      "(does a login script print to standard output, or is the command wrong?)",
    );
    await worker.ended;
  });

  it("a relative store named by a client is refused by info, naming it", async () => {
    const worker = startWorker("root", { TBUILD_ROOT: dirFor("root", "store") });
    const chunks: Buffer[] = [];
    const answered = new Promise<DecodedFrame>((resolve) => {
      worker.stream.on("data", (chunk: Buffer) => {
        chunks.push(chunk);
        const answer = decodeFrames(Buffer.concat(chunks)).find((f) => f.channel === 1);
        if (answer) resolve(answer);
      });
    });
    // A client of another make, which does not check what it sends.
    worker.stream.write(
      Buffer.concat([
        MAGIC,
        hello("client", { store: "relative/store" }),
        messageFrame(1, { type: "call", method: "info", params: {}, stream: false }),
      ]),
    );
    const answer = await answered;
    worker.stream.end();
    expect(answer.kind).toBe(4);
    expect(JSON.parse(answer.payload.toString())).toMatchObject({
      message: 'the store a client names must be an absolute path on this host, not "relative/store"',
      fields: { code: "E_WORKER_STORE" },
    });
    expect(await worker.ended).toEqual({ code: 0, signal: null });
  });

  it("without --stdio it is a usage error saying how it is run", () => {
    const result = spawnSync(tbuildBin, ["worker"], { encoding: "utf8", input: "" });
    expect(result.status).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain("run it as `tbuild worker --stdio`");
  });
});
