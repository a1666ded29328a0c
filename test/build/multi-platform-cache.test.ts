/**
 * Build cache for a build of several platforms, as BuildKit keeps it: `--cache-to` writes one
 * cache holding every platform's records, and `--cache-from` gives each platform's solve the
 * records made for it, so that a two-platform build imported into an empty store runs nothing for
 * either platform and makes the same index. The RUN steps write a random nonce: a step that ran
 * again would write another. The base is a two-platform busybox index in the test registry (amd64,
 * and Debian's arm64 busybox-static, run under QEMU), pulled by each empty store.
 */
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH, importArm64Busybox, importBusybox } from "../helpers/images.js";
import { tbuildAs, userIds } from "../helpers/judges.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { lockBinfmt } from "../hostile/binfmt.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const TEST_USER = "tbuild-test";
const PLATFORMS = "linux/amd64,linux/arm64";
const DIRS = ["linux_amd64", "linux_arm64"];

describe("build cache of a two-platform build", () => {
  let registry: RunningRegistry;
  let base = "";
  // Its arm64 steps are emulated: the machine's binfmt handlers must not change under them.
  let releaseBinfmt: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    releaseBinfmt = await lockBinfmt();
    registry = await startRegistry();
    const store = tempDir("mpc-base-store");
    await importBusybox(store, "bb-amd64");
    await importArm64Busybox(store, "bb-arm64");
    const dir = tempDir("mpc-base");
    writeFileSync(path.join(dir, "Dockerfile"), "FROM bb-$TARGETARCH\n");
    base = `${registry.host}/library/busybox:multi`;
    const pushed = tbuild(["build", "--progress=plain", "--platform", PLATFORMS, "-t", base, "--push", dir], {
      env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH },
    });
    expect(pushed.status, pushed.stderr).toBe(0);
  }, 180_000);
  afterAll(async () => {
    await registry?.stop();
    await releaseBinfmt?.();
  });

  /**
   * A work directory (reachable by `user`, and owned by it): an empty store, the project, and
   * the Dockerfile: an intermediate stage (only in a mode=max cache) and a final stage, each
   * writing a nonce per platform.
   */
  function project(name: string, user: string | undefined) {
    const work = tempDir(name);
    chmodSync(work, 0o755);
    const dir = path.join(work, "project");
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, "Dockerfile"),
      `FROM ${base} AS tools\nRUN head -c 8 /dev/urandom > /tool-nonce\n` +
        `FROM ${base}\nRUN uname -m > /arch\nRUN head -c 8 /dev/urandom > /nonce\n` +
        "COPY --from=tools /tool-nonce /tool-nonce\n",
    );
    const owned = (sub: string) => {
      const made = path.join(work, sub);
      mkdirSync(made, { recursive: true });
      if (user) chownSync(made, userIds(user).uid, userIds(user).gid);
      return made;
    };
    if (user) chownSync(work, userIds(user).uid, userIds(user).gid);
    const build = (args: string[]) => {
      const store = owned(`store-${Math.random().toString(16).slice(2)}`);
      const out = path.join(work, `out-${path.basename(store)}`);
      const result = tbuildAs(user, { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH }, [
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS,
        "-o",
        `type=local,dest=${out}`,
        ...args,
        dir,
      ]);
      const digest = /image (sha256:[a-f0-9]{64})/.exec(result.stderr)?.[1];
      const file = (platform: string, name: string) =>
        readFileSync(path.join(out, platform, name), name === "arch" ? "utf8" : "hex");
      return { ...result, digest, file };
    };
    return { build, owned, dir };
  }

  /** Each platform's files: its architecture and the nonces its RUN steps wrote. */
  const filesOf = (built: { file: (platform: string, name: string) => string }) =>
    DIRS.map((d) => ({
      arch: built.file(d, "arch"),
      nonce: built.file(d, "nonce"),
      tool: built.file(d, "tool-nonce"),
    }));

  it("mode=max through a registry: an empty store runs nothing for either platform, same index, same nonces", async () => {
    const { build } = project("mpc-registry", undefined);
    const ref = `${registry.host}/cache/multi:max`;
    const first = build(["--cache-to", `type=registry,ref=${ref},mode=max`]);
    expect(first.status, first.stderr).toBe(0);
    // Five steps (FROM, three RUN, COPY) for each platform.
    expect(first.stderr).toContain("10 step(s) ran");
    // One cache manifest at the ref, with every RUN of both platforms (the tools stage's too: mode=max).
    const names = await registryCacheNames(registry.host, "cache/multi", "max");
    for (const platform of ["linux/amd64", "linux/arm64"]) {
      for (const step of [
        "RUN head -c 8 /dev/urandom > /tool-nonce",
        "RUN uname -m",
        "RUN head -c 8 /dev/urandom > /nonce",
      ])
        expect(names.filter((n) => n.includes(platform) && n.includes(step))).toHaveLength(1);
    }
    const made = filesOf(first);
    expect(made.map((f) => f.arch)).toEqual(["x86_64\n", "aarch64\n"]);
    // Each platform's step ran on its own: their nonces differ.
    expect(made[0]!.nonce).not.toBe(made[1]!.nonce);

    const again = build(["--cache-from", `type=registry,ref=${ref}`]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain("0 step(s) ran");
    for (const platform of ["linux/amd64", "linux/arm64"]) {
      expect(again.stderr).toMatch(
        new RegExp(`\\[${platform} stage-1 3/4\\] RUN head -c 8 /dev/urandom > /nonce\\n#\\d+ CACHED`),
      );
    }
    expect(again.digest).toBe(first.digest);
    expect(filesOf(again)).toEqual(made);
  }, 300_000);

  it("rootless, a type=local directory with mode=min: one cache of both platforms' final steps, imported by an empty store", () => {
    const { build, owned } = project("mpc-local", TEST_USER);
    const cacheDir = owned("cache");
    const first = build(["--cache-to", `type=local,dest=${cacheDir},mode=min`]);
    expect(first.status, first.stderr).toBe(0);
    const made = filesOf(first);
    expect(made.map((f) => f.arch)).toEqual(["x86_64\n", "aarch64\n"]);

    // One cache manifest, holding the final stage's RUN steps of each platform (not the tools stage's).
    const index = JSON.parse(readFileSync(path.join(cacheDir, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    expect(index.manifests).toHaveLength(1);
    const blob = (digest: string) => readFileSync(path.join(cacheDir, "blobs", ...digest.split(":")), "utf8");
    const manifest = JSON.parse(blob(index.manifests[0]!.digest)) as { config: { digest: string } };
    const names = (JSON.parse(blob(manifest.config.digest)) as { records: { name: string }[] }).records.map(
      (r) => r.name,
    );
    for (const platform of ["linux/amd64", "linux/arm64"]) {
      expect(names.filter((n) => n.includes(platform) && n.includes("RUN head -c 8"))).toHaveLength(1);
      expect(names.some((n) => n.includes(platform) && n.includes("RUN uname -m"))).toBe(true);
      expect(names.some((n) => n.includes(platform) && n.includes("> /tool-nonce"))).toBe(false);
    }
    expect(readdirSync(cacheDir).sort()).toEqual(["blobs", "index.json", "oci-layout"]);

    const again = build(["--cache-from", `type=local,src=${cacheDir}`]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain("0 step(s) ran");
    expect(again.digest).toBe(first.digest);
    expect(filesOf(again)).toEqual(made);
  }, 300_000);

  it("an amd64-only cache serves only amd64: the arm64 steps run, on their own image", async () => {
    const { build, dir } = project("mpc-one", undefined);
    const ref = `${registry.host}/cache/multi:amd64`;
    const oneStore = tempDir("mpc-one-store");
    const oneOut = tempDir("mpc-one-out");
    const one = tbuild(
      [
        "build",
        "--progress=plain",
        "--platform",
        "linux/amd64",
        "--cache-to",
        `type=registry,ref=${ref},mode=max`,
        "-o",
        `type=local,dest=${oneOut}`,
        dir,
      ],
      { env: { TBUILD_ROOT: oneStore, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(one.status, one.stderr).toBe(0);
    const oneNonce = readFileSync(path.join(oneOut, "nonce"), "hex");

    const both = build(["--cache-from", `type=registry,ref=${ref}`]);
    expect(both.status, both.stderr).toBe(0);
    // amd64's five steps are the cache's; arm64's FROM and three RUN steps run, its COPY too.
    expect(both.stderr).toContain("5 step(s) ran, 5 cached");
    expect(both.file("linux_amd64", "nonce")).toBe(oneNonce);
    expect(both.file("linux_arm64", "arch")).toBe("aarch64\n");
    expect(both.file("linux_arm64", "nonce")).not.toBe(oneNonce);
  }, 300_000);

  it("inline: each platform's pushed image carries its own cache, and an empty store building from it runs nothing", () => {
    const { build } = project("mpc-inline", undefined);
    const ref = `${registry.host}/team/inline:1`;
    const first = build(["-t", ref, "--push", "--cache-to", "type=inline"]);
    expect(first.status, first.stderr).toBe(0);
    const made = filesOf(first);

    const again = build(["--cache-from", ref]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain("0 step(s) ran");
    expect(filesOf(again).map((f) => f.nonce)).toEqual(made.map((f) => f.nonce));
  }, 300_000);

  it("mounts=true: the cache mount both platforms' steps share travels, and seeds an empty store's --no-cache build", () => {
    const work = tempDir("mpc-mounts");
    const dir = path.join(work, "project");
    mkdirSync(dir);
    // One cache mount (its id is its target, whatever the platform, as BuildKit's), which each
    // platform's step reads and then adds its machine name to. With shell builtins and applets the
    // shell runs itself: an emulated step's process may not exec others (docs/platforms.md).
    writeFileSync(
      path.join(dir, "Dockerfile"),
      `FROM ${base}\nRUN --mount=type=cache,target=/cache touch /cache/machines; while read -r m; do echo "$m"; done < /cache/machines > /seen; uname -m >> /cache/machines\n`,
    );
    const cacheDir = path.join(work, "cache");
    const build = (name: string, args: string[]) => {
      const out = path.join(work, `out-${name}`);
      const result = tbuild(
        ["build", "--progress=plain", "--platform", PLATFORMS, "-o", `type=local,dest=${out}`, ...args, dir],
        { env: { TBUILD_ROOT: path.join(work, `store-${name}`), SOURCE_DATE_EPOCH: EPOCH } },
      );
      expect(result.status, result.stderr).toBe(0);
      return DIRS.map((d) =>
        readFileSync(path.join(out, d, "seen"), "utf8")
          .split("\n")
          .filter(Boolean),
      );
    };
    build("first", ["--cache-to", `type=local,dest=${cacheDir},mode=max,mounts=true`]);
    // The empty store's steps run again (--no-cache); each finds the machine names the first
    // build's two steps left in the mount, whichever of its own platforms runs first.
    const seen = build("seeded", ["--no-cache", "--cache-from", `type=local,src=${cacheDir},mounts=true`]);
    for (const lines of seen) expect([...new Set(lines)].sort()).toEqual(["aarch64", "x86_64"]);
    // Without mounts=true the mount starts empty: a step sees at most the other platform's name.
    const unseeded = build("unseeded", ["--no-cache", "--cache-from", `type=local,src=${cacheDir}`]);
    for (const lines of unseeded) expect(lines.length).toBeLessThan(2);
  }, 300_000);
});

/** The step names of the records in the cache manifest at `repository:tag` of a plain-HTTP registry. */
async function registryCacheNames(host: string, repository: string, tag: string): Promise<string[]> {
  const get = async (what: string, accept?: string) => {
    const response = await fetch(`http://${host}/v2/${repository}/${what}`, {
      headers: accept ? { accept } : {},
    });
    expect(response.status).toBe(200);
    return (await response.json()) as Record<string, unknown>;
  };
  const manifest = (await get(`manifests/${tag}`, "application/vnd.oci.image.manifest.v1+json")) as {
    config: { digest: string };
  };
  const config = (await get(`blobs/${manifest.config.digest}`)) as { records: { name: string }[] };
  return config.records.map((r) => r.name);
}
