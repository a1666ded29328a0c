import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

describe("the [gc] policy of config.toml", () => {
  it("a build that leaves the build cache over keep-storage prunes it down at the end", async () => {
    const store = tempDir("gc-store");
    await importBusybox(store, "busybox");
    const dir = tempDir("gc-ctx");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, "Dockerfile"),
      "FROM busybox AS big\nRUN head -c 300000 /dev/urandom > /blob\nFROM busybox\nCOPY --from=big /blob /b\n",
    );
    const config = path.join(tempDir("gc-config"), "config.toml");
    writeFileSync(config, '[gc]\nkeep-storage = "100kB"\nkeep-duration = "168h"\n');
    const env = { TBUILD_ROOT: store, TBUILD_CONFIG: config };
    const built = tbuild(["build", "-t", "app:1", dir], { env });
    expect(built.status, built.stderr).toBe(0);
    const usage = JSON.parse(tbuild(["du", "--format", "json"], { env }).stdout);
    expect(usage["build-cache"]).toBeLessThanOrEqual(100_000);
    expect(tbuild(["run", "--rm", "app:1", "wc", "-c", "/b"], { env }).stdout).toContain("300000");

    // Without the policy the same build keeps its intermediate layer.
    const unlimited = { TBUILD_ROOT: tempDir("gc-store2") };
    await importBusybox(unlimited.TBUILD_ROOT, "busybox");
    expect(tbuild(["build", "-t", "app:1", dir], { env: unlimited }).status).toBe(0);
    expect(
      JSON.parse(tbuild(["du", "--format", "json"], { env: unlimited }).stdout)["build-cache"],
    ).toBeGreaterThan(300_000);
  });
});
