/**
 * Cache mounts under `tbuild prune --filter type=cache-mount` and config.toml's `[gc]`: least
 * recently used first, by age and by size, never while another tbuild process may be using them,
 * as root and rootless (where a mount's files belong to subordinate ids).
 */
import { chownSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { tempDirs } from "../helpers/temp.js";
import { eventually, type ModeEnv, modes, setUpMode } from "../runtime/harness.js";

const tempDir = tempDirs();

/**
 * A build whose step fills the cache mount `id` with `kB` kilobytes of random bytes owned by uid
 * 1000, in a directory of uid 1000, and says `filled-ID` (only when it runs, not when cached).
 */
function fillingMount(id: string, kB: number): string {
  return `FROM busybox\nRUN --mount=type=cache,id=${id},target=/cache sh -c 'mkdir -p /cache/d && head -c ${kB}000 /dev/urandom > /cache/d/${id} && chown -R 1000:1000 /cache/d && echo filled-${id} > /done-${id} && echo filled-${id}'\n`;
}

/** The ids of the store's cache mounts, as their records say. */
function mountIds(env: ModeEnv): string[] {
  const dir = path.join(env.store, "cache-mounts");
  return readdirSync(dir)
    .filter((name) => /^[0-9a-f]{32}$/.test(name))
    .map((name) => JSON.parse(readFileSync(path.join(dir, name, "mount.json"), "utf8")).id as string)
    .sort();
}

/** The directory of the store's cache mount `id`. */
function mountDir(env: ModeEnv, id: string): string {
  const dir = path.join(env.store, "cache-mounts");
  const key = readdirSync(dir).find(
    (name) =>
      existsSync(path.join(dir, name, "mount.json")) &&
      JSON.parse(readFileSync(path.join(dir, name, "mount.json"), "utf8")).id === id,
  );
  if (key === undefined) throw new Error(`no cache mount ${id} in ${dir}`);
  return path.join(dir, key);
}

/** SIGKILLs every process whose command line contains `marker` (a container's shell ignores SIGTERM). */
function killProcessesRunning(marker: string): void {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker))
        process.kill(Number(entry), "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

/** What is in the cache mounts directory besides the mounts: nothing a removal left behind. */
function leftovers(env: ModeEnv): string[] {
  return readdirSync(path.join(env.store, "cache-mounts")).filter((name) => !/^[0-9a-f]{32}$/.test(name));
}

function du(env: ModeEnv): Record<string, number> {
  return JSON.parse(env.ok(["du", "--format", "json"]));
}

describe.each(modes())("cache mounts under prune and [gc] ($name)", (mode) => {
  function context(env: ModeEnv, dockerfile: string): string {
    const dir = env.ownedDir("ctx");
    writeFileSync(path.join(dir, "Dockerfile"), dockerfile);
    if (mode.user) chownSync(path.join(dir, "Dockerfile"), mode.user.uid, mode.user.gid);
    return dir;
  }

  function build(env: ModeEnv, dir: string, tag: string, extraEnv: Record<string, string> = {}): string {
    const built = env.run(["build", "--progress=plain", "-t", tag, dir], { env: extraEnv });
    expect(built.status, built.stderr).toBe(0);
    return built.stderr;
  }

  it("--filter type=cache-mount --filter until= removes only the mounts unused for longer; the build cache stays", async () => {
    const env = await setUpMode(mode, tempDir);
    const old = context(env, fillingMount("old", 200));
    build(env, old, "old:1");
    const oldBuilt = Date.now();
    // The old mount has to be measurably older than the new one: older by more than the prune takes.
    await sleep(4000);
    build(env, context(env, fillingMount("new", 200)), "new:1");
    const before = du(env);
    expect(before["cache-mounts"]).toBeGreaterThan(400_000);

    const age = Date.now() - oldBuilt;
    const pruned = env.run(["prune", "--filter", "type=cache-mount", "--filter", `until=${age}ms`]);
    expect(pruned.status, pruned.stderr).toBe(0);
    expect(pruned.stdout).toContain("removed cache mount old (/cache)\n");
    expect(pruned.stdout).toMatch(/^removed 1 cache mount\(s\); total reclaimed space: 2\d\d(\.\d+)?kB$/m);
    expect(mountIds(env)).toEqual(["new"]);
    // Its files, owned by uid 1000 in the container (a subordinate id rootless), went with it.
    expect(leftovers(env)).toEqual([]);

    const after = du(env);
    expect(before["cache-mounts"]! - after["cache-mounts"]!).toBeGreaterThan(200_000);
    expect(after["build-cache"]).toBe(before["build-cache"]);
    expect(after.records).toBe(before.records);
    expect(after.images).toBe(before.images);
    // The step that filled the removed mount is still cached: the mount is a cache, not a result.
    const rebuilt = build(env, old, "old:1");
    expect(rebuilt).toMatch(/^#\d+ CACHED$/m);
    expect(rebuilt).not.toMatch(/^#\d+ [\d.]+ filled-old$/m);
    expect(env.ok(["run", "--rm", "old:1", "cat", "/done-old"])).toBe("filled-old\n");
  });

  it("--filter type=cache-mount --keep-storage removes least recently used mounts until the rest fit", async () => {
    const env = await setUpMode(mode, tempDir);
    for (const id of ["first", "second", "third"]) build(env, context(env, fillingMount(id, 200)), `${id}:1`);
    const records = du(env).records;

    const pruned = env.run(["prune", "--filter", "type=cache-mount", "--keep-storage", "450kB"]);
    expect(pruned.status, pruned.stderr).toBe(0);
    expect(pruned.stdout).toContain("removed 1 cache mount(s)");
    expect(mountIds(env)).toEqual(["second", "third"]);
    const left = du(env);
    expect(left["cache-mounts"]).toBeLessThanOrEqual(450_000);
    expect(left.records).toBe(records);

    const bad = env.run(["prune", "--filter", "type=regular"]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain(
      '--filter type= takes cache-mount or exec.cachemount (prune only cache mounts), not "regular"',
    );
    expect(bad.stderr).not.toContain("    at ");
  });

  it("[gc] keep-storage: a build ends with older cache mounts removed and its own kept", async () => {
    const env = await setUpMode(mode, tempDir);
    const config = path.join(env.ownedDir("config"), "config.toml");
    // Smaller than the new mount alone: the build's own mount stays all the same.
    writeFileSync(config, '[gc]\nkeep-storage = "100kB"\n');
    const withGc = { TBUILD_CONFIG: config };
    build(env, context(env, fillingMount("older", 300)), "older:1");
    build(env, context(env, fillingMount("newer", 300)), "newer:1", withGc);
    expect(mountIds(env)).toEqual(["newer"]);
    expect(leftovers(env)).toEqual([]);
    expect(du(env)["cache-mounts"]).toBeGreaterThan(300_000);
  });

  it("[gc] keep-duration: a build ends with the mounts unused for longer removed", async () => {
    const env = await setUpMode(mode, tempDir);
    const config = path.join(env.ownedDir("config"), "config.toml");
    writeFileSync(config, '[gc]\nkeep-duration = "3s"\n');
    build(env, context(env, fillingMount("stale", 100)), "stale:1");
    const staleBuilt = Date.now();
    // The age limit is the point here: the stale mount has to become older than it.
    await sleep(Math.max(0, staleBuilt + 3500 - Date.now()));
    build(env, context(env, fillingMount("fresh", 100)), "fresh:1", { TBUILD_CONFIG: config });
    expect(mountIds(env)).toEqual(["fresh"]);
  });

  it("while another tbuild process is running, prune keeps every mount and says why", async () => {
    const env = await setUpMode(mode, tempDir);
    build(env, context(env, fillingMount("idle", 100)), "idle:1");
    // A build that holds its mount until the test drops a file into it.
    const marker = `waiting-for-go-${process.pid}-${mode.name}`;
    const waiting = env.spawn([
      "build",
      "--progress=plain",
      context(
        env,
        `FROM busybox\nRUN --mount=type=cache,id=busy,target=/cache sh -c 'echo ${marker}; while [ ! -e /cache/go ]; do sleep 0.1; done'\n`,
      ),
    ]);
    try {
      expect(
        await eventually(() => waiting.output().stderr.includes(`${marker}\n`), 60_000),
        waiting.output().stderr,
      ).toBe(true);

      const pruned = env.run(["prune", "--filter", "type=cache-mount"]);
      expect(pruned.status, pruned.stderr).toBe(0);
      expect(pruned.stderr).toContain("another tbuild process is running: cache mounts are kept");
      expect(pruned.stdout).toContain("removed 0 cache mount(s)");
      expect(mountIds(env)).toEqual(["busy", "idle"]);

      writeFileSync(path.join(mountDir(env, "busy"), "data", "go"), "");
      expect((await waiting.exited).code, waiting.output().stderr).toBe(0);
    } finally {
      // A failure above leaves the step waiting: end it, so that its build ends too.
      killProcessesRunning(marker);
    }

    // Once it has ended, nothing holds them.
    const again = env.run(["prune", "--filter", "type=cache-mount"]);
    expect(again.stdout).toContain("removed 2 cache mount(s)");
    expect(mountIds(env)).toEqual([]);
    expect(du(env)["cache-mounts"]).toBe(0);
  });
});
