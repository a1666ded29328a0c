import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { CacheIndex } from "../../solver/cache.js";
import { tbuild, tbuildBin } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** Every cache record's layers are in the content store. */
function recordsPointAtStoredBlobs(store: string): boolean {
  const file = path.join(store, "cache", "index.db");
  if (!existsSync(file)) return true;
  const cache = new CacheIndex(file);
  try {
    return cache
      .all()
      .every((record) =>
        record.result.layers.every((l) =>
          existsSync(path.join(store, "blobs", ...l.descriptor.digest.split(":"))),
        ),
      );
  } finally {
    cache.close();
  }
}

describe("a build killed at any moment", () => {
  it("leaves a store the next build uses, with no cache record pointing at missing content", async () => {
    const store = tempDir("kill-store");
    await importBusybox(store, "busybox");
    const dir = tempDir("kill-ctx");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, "Dockerfile"),
      "FROM busybox\nRUN head -c 2000000 /dev/urandom > /a\nRUN sleep 0.3 && head -c 2000000 /dev/urandom > /b\nCOPY Dockerfile /d\nRUN cat /d > /e\n",
    );
    for (const delay of [150, 400, 700, 1000, 1400]) {
      const child = spawn(tbuildBin, ["build", "--no-cache", "-t", "killed:1", dir], {
        env: { ...process.env, TBUILD_ROOT: store },
        stdio: "ignore",
        detached: true,
      });
      // Listened for from the start: a build that ends before its kill moment has exited already.
      const exited = new Promise((resolve) => child.once("exit", resolve));
      await new Promise((resolve) => setTimeout(resolve, delay));
      // The whole group: a rootless build runs again inside a user namespace as a child.
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {}
      await exited;
      expect(recordsPointAtStoredBlobs(store)).toBe(true);
    }
    const next = tbuild(["build", "-t", "killed:1", dir], { env: { TBUILD_ROOT: store } });
    expect(next.status, next.stderr).toBe(0);
    expect(recordsPointAtStoredBlobs(store)).toBe(true);
    expect(
      tbuild(["run", "--rm", "killed:1", "wc", "-c", "/b"], { env: { TBUILD_ROOT: store } }).stdout,
    ).toContain("2000000");
  });
});
