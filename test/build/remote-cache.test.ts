/**
 * type=local build caches with a remote worker, as a user of `docker buildx build` with a remote
 * builder expects them: `--cache-to type=local,dest=DIR` writes the client's DIR (the layout a
 * local build writes there), and `--cache-from type=local,src=DIR` reads it, so that an empty
 * worker store builds from it running nothing. Bytes are counted between client and worker: the
 * blobs DIR already holds never travel again, and an import fetches only the blobs the build uses.
 *
 * As root, the worker is a `cmd://` command whose stdin and stdout pass through `tee` into count
 * files; rootless, it is the unprivileged `tbuild-test` behind a real sshd, through a counting proxy.
 * The RUN steps write random bytes: a step that ran again would write others.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, tbuild, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { type RunningSshd, startSshd } from "../helpers/sshd.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const BIG = 3_000_000;

/** A stage with a big random layer, one with a small nonce, and the final stage taking both. */
const DOCKERFILE = `FROM busybox AS big
RUN head -c ${BIG} /dev/urandom > /big
FROM busybox AS small
COPY id /id
RUN head -c 8 /dev/urandom > /nonce
FROM small
COPY --from=big /big /big
`;

interface Counted extends CliResult {
  /** Bytes from the client to the worker, and back, during this build. */
  up: number;
  down: number;
}

/** How builds reach a worker building in a given store, and count what travels. */
interface Remote {
  build(store: string, args: string[]): Promise<Counted>;
  /** A worker store holding busybox only, as a fresh host's. */
  freshStore(): Promise<string>;
}

/** The cache layout's records, by key, with the step names: what a build imports from it. */
function recordsOf(dir: string): { keys: string[]; names: string[] } {
  const index = JSON.parse(readFileSync(path.join(dir, "index.json"), "utf8")) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  expect(index.manifests).toHaveLength(1);
  expect(index.manifests[0]!.annotations?.["org.opencontainers.image.ref.name"]).toBe("latest");
  const blob = (digest: string) => readFileSync(path.join(dir, "blobs", ...digest.split(":")), "utf8");
  const manifest = JSON.parse(blob(index.manifests[0]!.digest)) as {
    config: { digest: string; mediaType: string };
    layers: { digest: string }[];
  };
  expect(manifest.config.mediaType).toBe("application/vnd.tbuild.cache.config.v0+json");
  for (const layer of manifest.layers)
    expect(statSync(path.join(dir, "blobs", ...layer.digest.split(":"))).isFile()).toBe(true);
  const records = (JSON.parse(blob(manifest.config.digest)) as { records: { key: string; name: string }[] })
    .records;
  return { keys: records.map((r) => r.key).sort(), names: records.map((r) => r.name).sort() };
}

/** Every file under `dir` with its inode and mtime: a file written again shows. */
function filesOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const full = path.join(entry.parentPath, entry.name);
    const info = statSync(full);
    if (info.isFile()) out[path.relative(dir, full)] = `${info.ino}:${info.mtimeMs}`;
  }
  return out;
}

const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

function project(): string {
  const dir = tempDir("rcache-project");
  writeFileSync(path.join(dir, "Dockerfile"), DOCKERFILE);
  writeFileSync(path.join(dir, "id"), "remote cache\n");
  chmodSync(dir, 0o755);
  return dir;
}

/** As root: `cmd://`, its stdin and stdout counted by `tee` into files of this build's own. */
function rootRemote(): Remote {
  return {
    freshStore: async () => {
      const store = tempDir("rcache-root-worker");
      await importBusybox(store, "busybox");
      return store;
    },
    build: async (store, args) => {
      const counts = tempDir("rcache-counts");
      const up = path.join(counts, "up");
      const down = path.join(counts, "down");
      writeFileSync(up, "");
      writeFileSync(down, "");
      const client = tempDir("rcache-client");
      const result = await tbuildAsync(
        [
          "build",
          "--progress=plain",
          "--worker",
          `cmd://tee ${up} | TBUILD_ROOT=${store} ${tbuildBin} worker --stdio | tee ${down}`,
          ...args,
        ],
        { env: { TBUILD_ROOT: client, SOURCE_DATE_EPOCH: EPOCH } },
      );
      return { ...result, up: statSync(up).size, down: statSync(down).size };
    },
  };
}

/** Rootless: `tbuild-test` behind sshd, through a counting proxy. */
function rootlessRemote(sshd: () => RunningSshd, proxy: () => TcpProxy, home: () => string): Remote {
  return {
    freshStore: async () => {
      const parent = tempDir("rcache-rootless-worker");
      const store = path.join(parent, "store");
      mkdirSync(store);
      await importBusybox(store, "busybox");
      execFileSync("chown", ["-R", "tbuild-test:", parent]);
      chmodSync(parent, 0o755);
      return store;
    },
    build: async (store, args) => {
      const before = { ...proxy().bytes };
      const result = await tbuildAsync(
        ["build", "--progress=plain", "--worker", `ssh://${sshd().user}@127.0.0.1:${proxy().port}`, ...args],
        {
          env: {
            HOME: home(),
            SSH_AUTH_SOCK: "",
            TBUILD_ROOT: tempDir("rcache-client"),
            SOURCE_DATE_EPOCH: EPOCH,
            TBUILD_WORKER_COMMAND: `TBUILD_ROOT=${store} ${tbuildBin} worker --stdio`,
          },
        },
      );
      return { ...result, up: proxy().bytes.up - before.up, down: proxy().bytes.down - before.down };
    },
  };
}

let sshd: RunningSshd;
let proxy: TcpProxy;
let home = "";
let local: { keys: string[]; names: string[] } = { keys: [], names: [] };
let context = "";

beforeAll(async () => {
  context = project();
  // What a local build writes into a cache directory: the records a remote build's must equal.
  const localStore = tempDir("rcache-local-store");
  await importBusybox(localStore, "busybox");
  const localCache = path.join(tempDir("rcache-local-cache"), "cache");
  const built = tbuild(
    ["build", "--progress=plain", "--cache-to", `type=local,dest=${localCache},mode=max`, context],
    { env: { TBUILD_ROOT: localStore, SOURCE_DATE_EPOCH: EPOCH } },
  );
  expect(built.status, built.stderr).toBe(0);
  local = recordsOf(localCache);

  sshd = await startSshd();
  proxy = await startTcpProxy({ port: sshd.port });
  home = tempDir("rcache-home");
  mkdirSync(path.join(home, ".ssh"), { mode: 0o700 });
  writeFileSync(path.join(home, ".ssh", "id_ed25519"), readFileSync(sshd.clientKey), { mode: 0o600 });
  writeFileSync(
    path.join(home, ".ssh", "known_hosts"),
    readFileSync(sshd.knownHosts, "utf8").replaceAll(`]:${sshd.port} `, `]:${proxy.port} `),
  );
}, 180_000);

afterAll(async () => {
  await proxy?.stop();
  await sshd?.stop();
});

describe.each([
  ["root", () => rootRemote()],
  [
    "rootless",
    () =>
      rootlessRemote(
        () => sshd,
        () => proxy,
        () => home,
      ),
  ],
] as const)("a type=local build cache with a remote worker (%s)", (_mode, makeRemote) => {
  it("is written into the client's directory as a local build writes it, and an empty worker store builds from it running nothing, fetching only what it uses", async () => {
    const remote = makeRemote();
    const cache = path.join(tempDir("rcache-dir"), "cache");
    const outA = path.join(tempDir("rcache-out"), "a");
    const warm = await remote.freshStore();
    const first = await remote.build(warm, [
      "--cache-to",
      `type=local,dest=${cache},mode=max`,
      "-o",
      `type=local,dest=${outA}`,
      context,
    ]);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toContain("exporting cache");
    expect(first.stderr).toMatch(/: 5 step\(s\) ran/);
    // The layout a local build writes there: its files, one manifest tagged `latest`, the same records.
    expect(readdirSync(cache).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
    expect(recordsOf(cache)).toEqual(local);
    // The blobs came down (the big layer in the cache, and the big file in the output).
    expect(first.down).toBeGreaterThan(2 * BIG);

    // A second export of the unchanged build sends no blob, and writes none again: the same cache.
    const written = filesOf(path.join(cache, "blobs"));
    const index = readFileSync(path.join(cache, "index.json"), "utf8");
    const again = await remote.build(warm, ["--cache-to", `type=local,dest=${cache},mode=max`, context]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/: 0 step\(s\) ran/);
    expect(again.stderr).toContain("exporting cache");
    expect(again.down).toBeLessThan(256 * 1024);
    expect(filesOf(path.join(cache, "blobs"))).toEqual(written);
    expect(readFileSync(path.join(cache, "index.json"), "utf8")).toBe(index);

    // An empty worker store, one stage: its records only; the big layer stays on the client.
    const outB = path.join(tempDir("rcache-out"), "b");
    const small = await remote.build(await remote.freshStore(), [
      "--cache-from",
      `type=local,src=${cache}`,
      "--target",
      "small",
      "-o",
      `type=local,dest=${outB}`,
      context,
    ]);
    expect(small.status, small.stderr).toBe(0);
    expect(small.stderr).toMatch(/: 0 step\(s\) ran/);
    expect(readFileSync(path.join(outB, "nonce"))).toEqual(readFileSync(path.join(outA, "nonce")));
    expect(small.up).toBeLessThan(BIG / 3);

    // An empty worker store, the whole build: every step from the client's directory.
    const outC = path.join(tempDir("rcache-out"), "c");
    const whole = await remote.build(await remote.freshStore(), [
      "--cache-from",
      `type=local,src=${cache}`,
      "-o",
      `type=local,dest=${outC}`,
      context,
    ]);
    expect(whole.status, whole.stderr).toBe(0);
    expect(whole.stderr).toMatch(/: 0 step\(s\) ran/);
    expect(whole.up).toBeGreaterThan(BIG);
    expect(readFileSync(path.join(outC, "nonce"))).toEqual(readFileSync(path.join(outA, "nonce")));
    expect(sha(path.join(outC, "big"))).toBe(sha(path.join(outA, "big")));
  }, 600_000);

  it("a cache directory that holds no cache fails the build with one line naming it", async () => {
    const remote = makeRemote();
    const empty = tempDir("rcache-empty");
    const built = await remote.build(await remote.freshStore(), [
      "--cache-from",
      `type=local,src=${empty}`,
      context,
    ]);
    expect(built.status, built.stderr).toBe(1);
    expect(built.stderr).toContain(`--cache-from type=local,src=${empty}: no readable OCI layout there`);
    expect(built.stderr).not.toContain("    at ");
  }, 300_000);
});
