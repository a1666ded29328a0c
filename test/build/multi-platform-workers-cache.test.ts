/**
 * Build cache of a two-platform build on remote workers (issues 14 and 15): each platform's part
 * runs on its worker of a pool, and the cache ends up as a local build of both platforms writes
 * it: one cache holding every platform's records (registry, or the client's type=local
 * directory), or each platform's records inline in its image config. A second build on a pool of
 * empty stores, importing it, runs nothing for either platform: the nonce each platform's RUN
 * wrote is unchanged, and so is the index.
 *
 * The pool's workers say in config.toml that one runs linux/amd64 and the other linux/arm64 (both
 * run on this amd64 host: the arm64 one runs its steps under QEMU). As root they are `cmd://`
 * commands; rootless, `tbuild-test` behind a real sshd, each with a store of its own. The base is a
 * two-platform busybox index in the test registry (Debian's busybox-static for amd64 and arm64).
 *
 * The emulated steps run through whatever the kernel's binfmt_misc handlers are; a test file that
 * registers or removes one while a build runs makes a step fail with `exec format error`. So this
 * file holds the handlers' lock (test/hostile/binfmt.ts) while it builds, whatever their state.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, tbuild, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importArm64Busybox, importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { type RunningSshd, startSshd } from "../helpers/sshd.js";
import { tempDirs } from "../helpers/temp.js";
import { lockBinfmt } from "../hostile/binfmt.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const PLATFORMS = "linux/amd64,linux/arm64";
const DIRS = ["linux_amd64", "linux_arm64"];

let registry: RunningRegistry;
let sshd: RunningSshd;
let project = "";
let releaseBinfmt: (() => Promise<void>) | undefined;
/** The cache keys a local build of both platforms exports, by mode. */
const localKeys = { min: [] as string[], max: [] as string[] };

beforeAll(async () => {
  releaseBinfmt = await lockBinfmt();
  registry = await startRegistry();
  const baseStore = tempDir("mpwc-base-store");
  await importBusybox(baseStore, "bb-amd64");
  await importArm64Busybox(baseStore, "bb-arm64");
  const baseDir = tempDir("mpwc-base");
  writeFileSync(path.join(baseDir, "Dockerfile"), "FROM bb-$TARGETARCH\n");
  const base = `${registry.host}/library/busybox:multi`;
  const pushed = tbuild(
    ["build", "--progress=plain", "--platform", PLATFORMS, "-t", base, "--push", baseDir],
    {
      env: { TBUILD_ROOT: baseStore, SOURCE_DATE_EPOCH: EPOCH },
    },
  );
  expect(pushed.status, pushed.stderr).toBe(0);
  project = tempDir("mpwc-project");
  chmodSync(project, 0o755);
  // An intermediate stage (in a mode=max cache only) and a final one, each writing a nonce.
  writeFileSync(
    path.join(project, "Dockerfile"),
    `FROM ${base} AS tools\nRUN head -c 8 /dev/urandom > /tool-nonce\n` +
      `FROM ${base}\nRUN uname -m > /arch\nRUN head -c 8 /dev/urandom > /nonce\n` +
      "COPY --from=tools /tool-nonce /tool-nonce\n",
  );
  for (const mode of ["min", "max"] as const) {
    const store = tempDir("mpwc-local-store");
    const cache = path.join(tempDir("mpwc-local-cache"), "cache");
    const local = tbuild(
      [
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS,
        "--cache-to",
        `type=local,dest=${cache},mode=${mode}`,
        project,
      ],
      { env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(local.status, local.stderr).toBe(0);
    localKeys[mode] = localCacheKeys(cache);
  }
  sshd = await startSshd();
}, 300_000);

afterAll(async () => {
  await sshd?.stop();
  await registry?.stop();
  await releaseBinfmt?.();
});

interface Built extends CliResult {
  /** The index's digest (--iidfile). */
  digest: string;
  /** Each platform's files: its architecture and the nonces its RUN steps wrote. */
  files: { arch: string; nonce: string; tool: string }[];
}

/**
 * A client with a pool `p` of two workers with empty stores of their own (amd64 and arm64), and a
 * build of both platforms on it. `single`: one worker of no stated platform, building both.
 */
function poolClient(mode: "root" | "rootless", options: { single?: boolean } = {}) {
  const client = tempDir(`mpwc-client-${mode}`);
  chmodSync(client, 0o755);
  const names = options.single ? ["one"] : ["amd", "arm"];
  const platformOf: Record<string, string> = { amd: "linux/amd64", arm: "linux/arm64" };
  const workers = names.map((name) => {
    const store = path.join(client, `worker-${name}`, "store");
    mkdirSync(store, { recursive: true });
    const lines = [`[worker.${name}]`];
    if (mode === "root") {
      lines.push(`url = "cmd://TBUILD_ROOT=${store} ${tbuildBin} worker --stdio"`);
    } else {
      execFileSync("chown", ["-R", "tbuild-test:", path.dirname(store)]);
      copyFileSync(sshd.clientKey, path.join(client, "worker.key"));
      copyFileSync(sshd.knownHosts, path.join(client, "known_hosts"));
      lines.push(
        `url = "${sshd.url}"`,
        `identity = "worker.key"`,
        `known-hosts = "known_hosts"`,
        `command = "${tbuildBin} worker --stdio"`,
        `store = "${store}"`,
      );
    }
    if (platformOf[name]) lines.push(`platforms = ["${platformOf[name]}"]`);
    return `${lines.join("\n")}\n`;
  });
  const config = path.join(client, "config.toml");
  writeFileSync(
    config,
    `${workers.join("")}[pool.p]\nworkers = [${names.map((n) => `"${n}"`).join(", ")}]\n`,
  );
  const build = async (args: string[]): Promise<Built> => {
    const out = path.join(client, `out-${Math.random().toString(16).slice(2)}`);
    const iid = `${out}.iid`;
    const result = await tbuildAsync(
      [
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS,
        "--worker",
        "pool:p",
        "-o",
        `type=local,dest=${out}`,
        "--iidfile",
        iid,
        ...args,
        project,
      ],
      {
        env: {
          TBUILD_CONFIG: config,
          TBUILD_ROOT: path.join(client, "store"),
          HOME: client,
          SSH_AUTH_SOCK: "",
          TBUILD_WORKER_COMMAND: "",
          SOURCE_DATE_EPOCH: EPOCH,
        },
      },
    );
    if (result.status !== 0) return { ...result, digest: "", files: [] };
    const file = (dir: string, name: string) =>
      readFileSync(path.join(out, dir, name), name === "arch" ? "utf8" : "hex");
    return {
      ...result,
      digest: readFileSync(iid, "utf8").trim(),
      files: DIRS.map((d) => ({
        arch: file(d, "arch"),
        nonce: file(d, "nonce"),
        tool: file(d, "tool-nonce"),
      })),
    };
  };
  return { build, dir: client };
}

/** The records a cache manifest's config (or an image's inline cache) holds: keys, and each step's platform. */
function recordsIn(config: unknown): { key: string; name: string; architecture?: string }[] {
  return (
    config as {
      records: { key: string; name: string; material: { op: { platform?: { architecture: string } } } }[];
    }
  ).records.map((r) => ({ key: r.key, name: r.name, architecture: r.material.op.platform?.architecture }));
}

/** The keys of a cache a local build of both platforms writes, read from its directory. */
function localCacheKeys(dir: string): string[] {
  return recordsIn(cacheDirConfig(dir))
    .map((r) => r.key)
    .sort();
}

/** The config of the one cache manifest of a layout directory. */
function cacheDirConfig(dir: string): unknown {
  const index = JSON.parse(readFileSync(path.join(dir, "index.json"), "utf8")) as {
    manifests: { digest: string }[];
  };
  expect(index.manifests).toHaveLength(1);
  const blob = (digest: string) =>
    JSON.parse(readFileSync(path.join(dir, "blobs", ...digest.split(":")), "utf8")) as unknown;
  const manifest = blob(index.manifests[0]!.digest) as { config: { digest: string } };
  return blob(manifest.config.digest);
}

/**
 * The cache holds what a local build of both platforms writes (the same keys: every platform's
 * steps), with the RUN steps of each platform there.
 */
function expectLocalRecords(config: unknown, mode: "min" | "max") {
  const records = recordsIn(config);
  expect(records.map((r) => r.key).sort()).toEqual(localKeys[mode]);
  for (const architecture of ["amd64", "arm64"]) {
    expect(
      records.filter((r) => r.architecture === architecture && r.name.includes("> /nonce")),
    ).toHaveLength(1);
  }
}

/** The first build and the one importing its cache: both platforms ran, then neither. */
function expectImported(first: Built, again: Built) {
  expect(first.status, first.stderr).toBe(0);
  expect(first.files.map((f) => f.arch)).toEqual(["x86_64\n", "aarch64\n"]);
  expect(first.files[0]!.nonce).not.toBe(first.files[1]!.nonce);
  expect(again.status, again.stderr).toBe(0);
  expect(again.stderr).toContain("0 step(s) ran");
  for (const platform of ["linux/amd64", "linux/arm64"]) {
    expect(again.stderr).toMatch(
      new RegExp(`\\[${platform} stage-1 3/4\\] RUN head -c 8 /dev/urandom > /nonce\\n#\\d+ CACHED`),
    );
  }
  expect(again.files).toEqual(first.files);
  expect(again.digest).toBe(first.digest);
}

async function registryJson(what: string, accept?: string): Promise<unknown> {
  const response = await fetch(`http://${registry.host}/v2/${what}`, { headers: accept ? { accept } : {} });
  expect(response.status, what).toBe(200);
  return response.json();
}

/** The config of the cache manifest at `repository:tag`. */
async function registryCacheConfig(repository: string, tag: string): Promise<unknown> {
  const manifest = (await registryJson(
    `${repository}/manifests/${tag}`,
    "application/vnd.oci.image.manifest.v1+json",
  )) as { config: { digest: string } };
  return registryJson(`${repository}/blobs/${manifest.config.digest}`);
}

describe.each(["root", "rootless"] as const)(
  "a two-platform build's cache on a pool of workers (%s)",
  (mode) => {
    it("registry, mode=max: the workers' caches merge at the ref, and a pool of empty stores runs nothing", async () => {
      const ref = `${registry.host}/cache/pool-${mode}:max`;
      const first = await poolClient(mode).build(["--cache-to", `type=registry,ref=${ref},mode=max`]);
      expect(first.status, first.stderr).toBe(0);
      expect(first.stderr).toContain("#0 building linux/amd64 on worker amd");
      expect(first.stderr).toContain("#0 building linux/arm64 on worker arm");
      expectLocalRecords(await registryCacheConfig(`cache/pool-${mode}`, "max"), "max");
      const again = await poolClient(mode).build(["--cache-from", `type=registry,ref=${ref}`]);
      expectImported(first, again);
    }, 600_000);
  },
);

// The cache's records, and how the client merges and writes them, do not depend on the workers'
// privilege: the rootless workers (ssh, user namespaces) are judged by the registry cache above.
describe("a two-platform build's cache on a pool of workers, local and inline (root)", () => {
  const mode = "root";

  it("type=local, mode=min: one cache of both platforms in the client's directory, imported by a pool of empty stores", async () => {
    const cache = path.join(tempDir(`mpwc-cache-${mode}`), "cache");
    const first = await poolClient(mode).build(["--cache-to", `type=local,dest=${cache},mode=min`]);
    expect(first.status, first.stderr).toBe(0);
    // One manifest, as a local build of both platforms writes: every platform's records in it.
    expectLocalRecords(cacheDirConfig(cache), "min");
    const again = await poolClient(mode).build(["--cache-from", `type=local,src=${cache}`]);
    expectImported(first, again);
  }, 600_000);

  it("inline: each platform's pushed image carries its own records, and a pool of empty stores building from it runs nothing", async () => {
    const ref = `${registry.host}/team/inline-${mode}:1`;
    const first = await poolClient(mode).build(["-t", ref, "--push", "--cache-to", "type=inline"]);
    expect(first.status, first.stderr).toBe(0);
    const index = (await registryJson(
      `team/inline-${mode}/manifests/1`,
      "application/vnd.oci.image.index.v1+json",
    )) as { manifests: { digest: string; platform: { architecture: string } }[] };
    for (const entry of index.manifests) {
      const image = (await registryJson(
        `team/inline-${mode}/manifests/${entry.digest}`,
        "application/vnd.oci.image.manifest.v1+json",
      )) as { config: { digest: string } };
      const config = (await registryJson(`team/inline-${mode}/blobs/${image.config.digest}`)) as Record<
        string,
        unknown
      >;
      // Each platform's image: its own steps' records, none of the other's.
      const records = recordsIn(config["tbuild.cache.v0"]);
      expect(records.filter((r) => r.name.includes("> /nonce")).map((r) => r.architecture)).toEqual([
        entry.platform.architecture,
      ]);
      expect(
        records.every((r) => r.architecture === undefined || r.architecture === entry.platform.architecture),
      ).toBe(true);
    }
    // Exported inline again: the same images, records and all.
    const again = await poolClient(mode).build(["--cache-from", ref, "--cache-to", "type=inline"]);
    expectImported(first, again);
  }, 600_000);
});

describe("one worker building both platforms at once", () => {
  it("writes both platforms' records to one registry ref without either overwriting the other", async () => {
    const ref = `${registry.host}/cache/single:max`;
    const first = await poolClient("root", { single: true }).build([
      "--cache-to",
      `type=registry,ref=${ref},mode=max`,
    ]);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toContain("#0 building linux/amd64 on worker one");
    expect(first.stderr).toContain("#0 building linux/arm64 on worker one");
    expectLocalRecords(await registryCacheConfig("cache/single", "max"), "max");
    const again = await poolClient("root").build(["--cache-from", `type=registry,ref=${ref}`]);
    expectImported(first, again);
  }, 600_000);
});
