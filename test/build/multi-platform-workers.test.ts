/**
 * A build of several platforms on remote workers (issue 15, "native workers first"): two `cmd://`
 * workers in a pool, config.toml saying one runs linux/amd64 and the other linux/arm64 (both run
 * on this amd64 host: the arm64 one runs its steps under QEMU, worker/emulation.ts). Each platform
 * goes to its worker, and the index the client assembles is the one a local build makes
 * (SOURCE_DATE_EPOCH), in the client's store, in the registry it is pushed to, and as
 * `-o type=local` directories. A single worker given several platforms gives the same index.
 *
 * The base is a two-platform busybox index in the test registry (Debian's busybox-static for amd64
 * and arm64), as in multi-platform-emulated.test.ts.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importArm64Busybox, importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { lockBinfmt } from "../hostile/binfmt.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const PLATFORMS = "linux/amd64,linux/arm64";

/** A blob of a store, by digest, or undefined when the store lacks it. */
function blob(store: string, digest: string): string | undefined {
  const file = path.join(store, "blobs", ...digest.split(":"));
  return existsSync(file) ? readFileSync(file, "utf8") : undefined;
}

/** The platform each manifest of a stored index is for, `os/arch` → manifest digest. */
function manifestsOf(store: string, indexDigest: string): Record<string, string> {
  const index = JSON.parse(blob(store, indexDigest) ?? "null") as {
    manifests: { digest: string; platform: { os: string; architecture: string } }[];
  } | null;
  expect(index, `index ${indexDigest} in ${store}`).not.toBeNull();
  return Object.fromEntries(
    index!.manifests.map((m) => [`${m.platform.os}/${m.platform.architecture}`, m.digest]),
  );
}

describe("a two-platform build on remote workers", () => {
  let registry: RunningRegistry;
  let project = "";
  let localDigest = "";
  let localManifests: Record<string, string> = {};

  // Its arm64 steps are emulated: the machine's binfmt handlers must not change under them.
  let releaseBinfmt: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    releaseBinfmt = await lockBinfmt();
    registry = await startRegistry();
    // The base: one index of busybox for amd64 and for arm64, made and pushed by a build for both.
    const baseStore = tempDir("mpw-base-store");
    await importBusybox(baseStore, "bb-amd64");
    await importArm64Busybox(baseStore, "bb-arm64");
    const baseDir = tempDir("mpw-base");
    writeFileSync(path.join(baseDir, "Dockerfile"), "FROM bb-$TARGETARCH\n");
    const base = `${registry.host}/library/busybox:multi`;
    const pushed = tbuild(
      ["build", "--progress=plain", "--platform", PLATFORMS, "-t", base, "--push", baseDir],
      {
        env: { TBUILD_ROOT: baseStore, SOURCE_DATE_EPOCH: EPOCH },
      },
    );
    expect(pushed.status, pushed.stderr).toBe(0);

    project = tempDir("mpw-project");
    writeFileSync(path.join(project, "Dockerfile"), `FROM ${base}\nCOPY id /id\nRUN uname -m > /arch\n`);
    writeFileSync(path.join(project, "id"), "mpw\n");
    // What a local build of both platforms makes: the index every remote build must equal.
    const localStore = tempDir("mpw-local-store");
    const iid = path.join(tempDir("mpw-local-iid"), "iid");
    const local = tbuild(
      ["build", "--progress=plain", "--platform", PLATFORMS, "-t", "app:local", "--iidfile", iid, project],
      { env: { TBUILD_ROOT: localStore, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(local.status, local.stderr).toBe(0);
    localDigest = readFileSync(iid, "utf8").trim();
    localManifests = manifestsOf(localStore, localDigest);
    expect(Object.keys(localManifests).sort()).toEqual(["linux/amd64", "linux/arm64"]);
  }, 300_000);

  afterAll(async () => {
    await registry?.stop();
    await releaseBinfmt?.();
  });

  it("in a pool, each platform goes to the worker that runs it natively; the index equals a local build's", async () => {
    const stores = { amd: tempDir("mpw-amd-store"), arm: tempDir("mpw-arm-store") };
    const client = tempDir("mpw-client");
    const config = path.join(client, "config.toml");
    const worker = (name: "amd" | "arm", platform: string) =>
      [
        `[worker.${name}]`,
        `url = "cmd://TBUILD_ROOT=${stores[name]} ${tbuildBin} worker --stdio"`,
        `platforms = ["${platform}"]`,
        "",
      ].join("\n");
    // The arm64 worker first: the pool's order alone would send amd64 there too.
    writeFileSync(
      config,
      `${worker("arm", "linux/arm64")}${worker("amd", "linux/amd64")}[pool.p]\nworkers = ["arm", "amd"]\n`,
    );
    const clientStore = path.join(client, "store");
    const out = path.join(client, "out");
    const iid = path.join(client, "iid");
    const ref = `${registry.host}/team/app:pool`;
    const built = await tbuildAsync(
      [
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS,
        "--worker",
        "pool:p",
        "-t",
        ref,
        "--push",
        "-o",
        `type=local,dest=${out}`,
        "--iidfile",
        iid,
        project,
      ],
      {
        env: {
          TBUILD_CONFIG: config,
          TBUILD_ROOT: clientStore,
          TBUILD_WORKER_COMMAND: "",
          SOURCE_DATE_EPOCH: EPOCH,
        },
      },
    );
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("#0 building linux/amd64 on worker amd (cmd://");
    expect(built.stderr).toContain("#0 building linux/arm64 on worker arm (cmd://");
    expect(built.stderr).not.toContain("natively");
    expect(built.stderr).toMatch(/\[linux\/arm64 \d\/\d\] RUN uname -m > \/arch/);

    // The client's index: the local build's, named here.
    expect(readFileSync(iid, "utf8").trim()).toBe(localDigest);
    const images = tbuild(["images", "--format", "json"], { env: { TBUILD_ROOT: clientStore } });
    const row = (JSON.parse(images.stdout) as { name: string; digest: string }[]).find((i) => i.name === ref);
    expect(row?.digest, images.stdout).toBe(localDigest);
    expect(manifestsOf(clientStore, localDigest)).toEqual(localManifests);
    // Each worker built its own platform's image, and not the other's.
    expect(blob(stores.amd, localManifests["linux/amd64"]!)).toBeDefined();
    expect(blob(stores.amd, localManifests["linux/arm64"]!)).toBeUndefined();
    expect(blob(stores.arm, localManifests["linux/arm64"]!)).toBeDefined();
    expect(blob(stores.arm, localManifests["linux/amd64"]!)).toBeUndefined();
    // Each platform's RUN ran on its own machine's kind (the arm64 one emulated).
    expect(readFileSync(path.join(out, "linux_amd64", "arch"), "utf8")).toBe("x86_64\n");
    expect(readFileSync(path.join(out, "linux_arm64", "arch"), "utf8")).toBe("aarch64\n");
    // The registry holds the same index under the pushed name.
    const answer = await fetch(`http://${registry.host}/v2/team/app/manifests/pool`, {
      method: "HEAD",
      headers: { Accept: "application/vnd.oci.image.index.v1+json" },
    });
    expect(answer.status).toBe(200);
    expect(answer.headers.get("docker-content-digest")).toBe(localDigest);
  }, 600_000);

  it("a platform no worker of the pool runs natively goes to the pool's worker, which emulates it, saying so", async () => {
    const store = tempDir("mpw-only-amd-store");
    const client = tempDir("mpw-only-amd");
    const config = path.join(client, "config.toml");
    writeFileSync(
      config,
      `[worker.amd]\nurl = "cmd://TBUILD_ROOT=${store} ${tbuildBin} worker --stdio"\nplatforms = ["linux/amd64"]\n[pool.p]\nworkers = ["amd"]\n`,
    );
    const clientStore = path.join(client, "store");
    const iid = path.join(client, "iid");
    const built = await tbuildAsync(
      [
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS,
        "--worker",
        "pool:p",
        "-t",
        "app:emulated",
      ].concat(["--iidfile", iid, project]),
      {
        env: {
          TBUILD_CONFIG: config,
          TBUILD_ROOT: clientStore,
          TBUILD_WORKER_COMMAND: "",
          SOURCE_DATE_EPOCH: EPOCH,
        },
      },
    );
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("#0 building linux/amd64 on worker amd (cmd://");
    expect(built.stderr).toContain("#0 building linux/arm64 on worker amd (cmd://");
    expect(built.stderr).toContain(
      "WARNING: no worker of pool p builds linux/arm64 natively: its steps run under emulation where the worker has it\n",
    );
    expect(built.stderr).not.toContain("builds linux/amd64 natively");
    expect(readFileSync(iid, "utf8").trim()).toBe(localDigest);
  }, 600_000);

  it("a platform whose step fails fails the build with that step's error; no index is named and the store stays usable", async () => {
    const failing = tempDir("mpw-failing");
    writeFileSync(
      path.join(failing, "Dockerfile"),
      `FROM ${registry.host}/library/busybox:multi\nRUN test "$(uname -m)" = x86_64\n`,
    );
    const workerStore = tempDir("mpw-failing-worker");
    const clientStore = path.join(tempDir("mpw-failing-client"), "store");
    const env = { TBUILD_ROOT: clientStore, SOURCE_DATE_EPOCH: EPOCH };
    const built = await tbuildAsync(
      ["build", "--progress=plain", "--platform", PLATFORMS, "-t", "app:failing", "--worker"].concat([
        `cmd://TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
        failing,
      ]),
      { env },
    );
    expect(built.status, built.stderr).toBe(1);
    expect(built.stderr).toMatch(/\n#\d+ ERROR: .*exit code: 1\n/);
    expect(built.stderr).toContain('[linux/arm64 2/2] RUN test "$(uname -m)" = x86_64');
    expect(built.stderr).not.toContain("Error:\n    at ");
    const images = tbuild(["images", "--format", "json"], { env });
    expect(images.status, images.stderr).toBe(0);
    expect(images.stdout).not.toContain("app");
  }, 600_000);

  it("a single worker given both platforms builds both, and its index equals a local build's", async () => {
    const workerStore = tempDir("mpw-single-store");
    const client = tempDir("mpw-single-client");
    const clientStore = path.join(client, "store");
    const iid = path.join(client, "iid");
    const built = await tbuildAsync(
      [
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS,
        "--worker",
        `cmd://TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
        "-t",
        "app:single",
        "--iidfile",
        iid,
        project,
      ],
      { env: { TBUILD_ROOT: clientStore, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("#0 building linux/amd64 on worker cmd://");
    expect(built.stderr).toContain("#0 building linux/arm64 on worker cmd://");
    expect(readFileSync(iid, "utf8").trim()).toBe(localDigest);
    expect(manifestsOf(clientStore, localDigest)).toEqual(localManifests);
    for (const digest of Object.values(localManifests)) expect(blob(workerStore, digest)).toBeDefined();
  }, 600_000);

  it("--explain on one worker building both platforms names, for each, what changed for its steps", async () => {
    const workerStore = tempDir("mpw-explain-store");
    const dir = tempDir("mpw-explain-project");
    writeFileSync(
      path.join(dir, "Dockerfile"),
      `FROM ${registry.host}/library/busybox:multi\nARG TARGETARCH\nCOPY arch-$TARGETARCH /arch\nRUN read -r a < /arch && echo "$a" > /seen\n`,
    );
    // A shell builtin reads it: as root, the mounted emulator runs only the step's first program.
    for (const arch of ["amd64", "arm64"]) writeFileSync(path.join(dir, `arch-${arch}`), `${arch}\n`);
    const explained = async () => {
      const built = await tbuildAsync(
        [
          "build",
          "--progress=plain",
          "--explain",
          "--platform",
          PLATFORMS,
          "--worker",
          `cmd://TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
          dir,
        ],
        { env: { TBUILD_ROOT: path.join(tempDir("mpw-explain-client"), "store") } },
      );
      expect(built.status, built.stderr).toBe(0);
      return built.stderr
        .split("\n")
        .filter((line) => line.startsWith("explain: "))
        .sort();
    };
    await explained();
    writeFileSync(path.join(dir, "arch-arm64"), "arm64, edited\n");
    // The same worker holds both platforms' records of each step: each platform is compared with its own.
    expect(await explained()).toEqual([
      "explain: [linux/arm64 2/3] COPY arch-$TARGETARCH /arch: input file arch-arm64 changed",
      'explain: [linux/arm64 3/3] RUN read -r a < /arch && echo "$a" > /seen: [linux/arm64 2/3] COPY arch-$TARGETARCH /arch changed: input file arch-arm64 changed',
    ]);
  }, 600_000);
});
