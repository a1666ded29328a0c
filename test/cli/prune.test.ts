import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

function context(dockerfile: string): string {
  const dir = tempDir("prune-ctx");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "Dockerfile"), dockerfile);
  return dir;
}

function du(store: string): Record<string, number> {
  const shown = tbuild(["du", "--format", "json"], { env: { TBUILD_ROOT: store } });
  expect(shown.status, shown.stderr).toBe(0);
  return JSON.parse(shown.stdout);
}

describe("tbuild du and tbuild prune", () => {
  it("du's numbers add up; prune frees the build cache and the next build still works", async () => {
    const store = tempDir("prune-store");
    await importBusybox(store, "busybox");
    const dir = context(
      "FROM busybox AS big\nRUN head -c 300000 /dev/urandom > /blob\nFROM busybox\nCOPY --from=big /blob /blob\nRUN echo done > /d\n",
    );
    const env = { TBUILD_ROOT: store };
    expect(tbuild(["build", "-t", "app:1", dir], { env }).status).toBe(0);
    const before = du(store);
    const parts = [
      "images",
      "build-cache",
      "unreferenced",
      "cache-mounts",
      "snapshots",
      "containers",
      "remote-contexts",
    ];
    expect(parts.reduce((sum, name) => sum + before[name]!, 0)).toBe(before.total);
    // The intermediate stage's 300 kB layer is in no image: build cache only.
    expect(before["build-cache"]).toBeGreaterThan(300_000);
    expect(before.records).toBeGreaterThan(0);

    // Records used within the last hour are kept by until=1h.
    const kept = tbuild(["prune", "-f", "--filter", "until=1h"], { env });
    expect(kept.stdout).toContain("removed 0 build cache record(s)");

    const pruned = tbuild(["prune", "-f", "--all"], { env });
    expect(pruned.status, pruned.stderr).toBe(0);
    const after = du(store);
    expect(after["build-cache"]).toBe(0);
    expect(after.records).toBe(0);
    expect(after.images).toBe(before.images);
    expect(after.total).toBeLessThan(before.total - 300_000);

    const rebuilt = tbuild(["build", "--progress=plain", "-t", "app:1", dir], { env });
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    expect(tbuild(["run", "--rm", "app:1", "cat", "/d"], { env }).stdout).toBe("done\n");
  });

  it("frees the unpacked layers only pruned records needed, and keeps what images use", async () => {
    const store = tempDir("prune-unpacked");
    await importBusybox(store, "busybox");
    const env = { TBUILD_ROOT: store };
    const dir = context("FROM busybox\nCOPY data /data\nRUN head -c 400000 /dev/urandom > /random\n");
    const build = (data: string, tag: string) => {
      writeFileSync(path.join(dir, "data"), data);
      const result = tbuild(["build", "--progress=plain", "-t", tag, dir], { env });
      expect(result.status, result.stderr).toBe(0);
    };
    build("one\n", "first:1");
    build("two\n", "app:1");
    build("three\n", "app:1");
    const before = du(store);

    // No limit: every record goes, and with them the layers only they needed: the second
    // build's step results (400 kB of random bytes) and every context snapshot.
    const pruned = tbuild(["prune", "-f"], { env });
    expect(pruned.status, pruned.stderr).toBe(0);
    expect(/total reclaimed space: (.*)$/m.exec(pruned.stdout)?.[1]).toMatch(/kB|MB/);
    const after = du(store);
    expect(after.snapshots).toBeLessThan(before.snapshots - 400_000);
    expect(after.images).toBe(before.images);

    const random = (tag: string) => tbuild(["run", "--rm", tag, "md5sum", "/random"], { env }).stdout;
    expect(random("first:1")).toMatch(/^[0-9a-f]{32} /);
    expect(tbuild(["run", "--rm", "app:1", "cat", "/data"], { env }).stdout).toBe("three\n");
    // A rebuild after a change finds the layers its records of reuse name gone, and copes.
    build("four\n", "app:1");
    expect(tbuild(["run", "--rm", "app:1", "cat", "/data"], { env }).stdout).toBe("four\n");
  });

  it("--keep-storage removes least recently used records only down to the size asked", async () => {
    const store = tempDir("prune-keep");
    await importBusybox(store, "busybox");
    const env = { TBUILD_ROOT: store };
    for (const n of [1, 2, 3]) {
      const built = tbuild(["build", context(`FROM busybox\nRUN head -c 200000 /dev/urandom > /r${n}\n`)], {
        env,
      });
      expect(built.status, built.stderr).toBe(0);
    }
    expect(du(store)["build-cache"]).toBeGreaterThan(600_000);
    expect(tbuild(["prune", "-f", "--keep-storage", "450kB"], { env }).status).toBe(0);
    const left = du(store)["build-cache"]!;
    expect(left).toBeLessThanOrEqual(450_000);
    expect(left).toBeGreaterThan(200_000);
  });
});
