import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { ModeEnv, modes } from "./harness.js";

const tempDir = tempDirs();

describe("tbuild run of an image the store does not hold", () => {
  let registry: RunningRegistry;
  beforeAll(async () => {
    registry = await startRegistry();
    const store = tempDir("rt-pull-source");
    await importBusybox(store, "busybox");
    const ref = `${registry.host}/tools/busybox:1`;
    for (const args of [
      ["tag", "busybox", ref],
      ["push", ref],
    ]) {
      const result = tbuild(args, { env: { TBUILD_ROOT: store } });
      if (result.status !== 0) throw new Error(`tbuild ${args.join(" ")} failed: ${result.stderr}`);
    }
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it.each(modes())("pulls it from its registry first, as $name", (mode) => {
    const env = new ModeEnv(mode, tempDir);
    const ref = `${registry.host}/tools/busybox:1`;
    const first = env.run(["run", "--rm", ref, "echo", "pulled and ran"]);
    expect(first.stderr).toMatch(/Unable to find image/);
    expect(first.stdout).toBe("pulled and ran\n");
    expect(first.status).toBe(0);
    // Now in the store: no pull the second time.
    const second = env.run(["run", "--rm", ref, "true"]);
    expect(second.stderr).toBe("");
    expect(second.status).toBe(0);
    expect(env.ok(["images"])).toMatch(/tools\/busybox\s+1/);
  });
});
