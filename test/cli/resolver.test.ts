import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageNotLocalError, storeImageResolver } from "../../build/resolver.js";
import type { LoweredBuild } from "../../frontend/lower/index.js";
import { openStore } from "../../oci/store/index.js";
import { tbuild } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

const amd64 = { os: "linux", architecture: "amd64" };

describe("base images for the frontend", () => {
  let registry: RunningRegistry;
  let seeded: string;

  beforeAll(async () => {
    registry = await startRegistry();
    seeded = tempDir("resolver");
    await importBusybox(seeded, `${registry.host}/base/busybox:1`);
    const push = tbuild(["push", `${registry.host}/base/busybox:1`], { env: { TBUILD_ROOT: seeded } });
    expect(push.status, push.stderr).toBe(0);
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it("come from the local store without asking a registry", async () => {
    const root = tempDir("resolver");
    await importBusybox(root, "busybox");
    const resolver = storeImageResolver(await openStore(root), { pull: "never" });
    const image = await resolver.resolveImage("busybox", amd64);
    expect(image.ref).toBe("docker.io/library/busybox:latest");
    expect(image.digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(image.config.config.Cmd).toEqual(["sh"]);
  });

  it("are pulled from the registry when missing, and stay local afterwards", async () => {
    const store = await openStore(tempDir("resolver"));
    const ref = `${registry.host}/base/busybox:1`;
    await expect(
      storeImageResolver(store, { pull: "never" }).resolveImage(ref, amd64),
    ).rejects.toBeInstanceOf(ImageNotLocalError);
    const pulled = await storeImageResolver(store, { pull: "missing" }).resolveImage(ref, amd64);
    const local = await storeImageResolver(store, { pull: "never" }).resolveImage(ref, amd64);
    expect(local.digest).toBe(pulled.digest);
    expect(local.config.config.Cmd).toEqual(["sh"]);
  });

  it("make tbuild debug graph inherit the base image's config", () => {
    const context = tempDir("resolver-ctx");
    writeFileSync(path.join(context, "Dockerfile"), `FROM ${registry.host}/base/busybox:1\nENV A=1\n`);
    const { status, stdout, stderr } = tbuild(["debug", "graph", context], { env: { TBUILD_ROOT: seeded } });
    expect(status, stderr).toBe(0);
    const build = JSON.parse(stdout) as LoweredBuild;
    expect(build.image.config.Cmd).toEqual(["sh"]);
    expect(stderr).not.toContain("not in the local store");
  });
});
