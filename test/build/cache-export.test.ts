import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { busyboxStore, FIXED_EPOCH } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** A fresh store with only the busybox base in it: no build cache at all. */
async function freshStore(): Promise<string> {
  const root = tempDir("cache-store");
  await busyboxStore(tempDir, root, "busybox");
  return root;
}

function context(files: Record<string, string>): string {
  const dir = tempDir("cache-ctx");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

function build(store: string, args: string[]) {
  const result = tbuild(["build", "--progress=plain", ...args], {
    env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
  });
  return { ...result, store, digest: /image (sha256:[a-f0-9]{64})/.exec(result.stderr)?.[1] };
}

/** Two stages: `tools` is intermediate, so its step is only in a mode=max export. */
const DOCKERFILE =
  "FROM busybox AS tools\nRUN echo tool > /tool\n" +
  "FROM busybox\nRUN echo one > /one\nCOPY --from=tools /tool /tool\nCOPY app.txt /app\nRUN cat /app > /copy\n";

let registry: RunningRegistry;
beforeAll(async () => {
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
});

describe("build cache export and import", () => {
  it("mode=max through a registry: a fresh store runs nothing and makes the same image", async () => {
    const dir = context({ Dockerfile: DOCKERFILE, "app.txt": "v1\n" });
    const ref = `${registry.host}/cache/max:1`;
    const first = build(await freshStore(), [
      "-t",
      "app:1",
      "--cache-to",
      `type=registry,ref=${ref},mode=max`,
      dir,
    ]);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/[1-9] step\(s\) ran/);

    const second = build(await freshStore(), [
      "-t",
      "app:1",
      "--cache-from",
      `type=registry,ref=${ref}`,
      dir,
    ]);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toContain("0 step(s) ran");
    expect(second.digest).toBe(first.digest);
  });

  it("type=local writes an OCI layout skopeo reads, and a fresh store imports it", async () => {
    const dir = context({ Dockerfile: DOCKERFILE, "app.txt": "v1\n" });
    const cacheDir = tempDir("cache-local");
    const first = build(await freshStore(), [
      "-t",
      "app:1",
      "--cache-to",
      `type=local,dest=${cacheDir},mode=max`,
      dir,
    ]);
    expect(first.status, first.stderr).toBe(0);
    const inspected = JSON.parse(
      execFileSync("skopeo", ["inspect", "--raw", `oci:${cacheDir}`], { encoding: "utf8" }),
    );
    expect(inspected.config.mediaType).toBe("application/vnd.tbuild.cache.config.v0+json");
    expect(inspected.layers.length).toBeGreaterThan(0);

    const second = build(await freshStore(), [
      "-t",
      "app:1",
      "--cache-from",
      `type=local,src=${cacheDir}`,
      dir,
    ]);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toContain("0 step(s) ran");
    expect(second.digest).toBe(first.digest);
  });

  it("type=local,tag=: one layout holds caches under two tags, and --cache-from tag= reads only its own", async () => {
    const cacheDir = tempDir("cache-tags");
    const one = context({ Dockerfile: "FROM busybox\nRUN echo one > /one\n" });
    const two = context({ Dockerfile: "FROM busybox\nRUN echo two > /two\n" });
    expect(build(await freshStore(), ["--cache-to", `type=local,dest=${cacheDir},tag=one`, one]).status).toBe(
      0,
    );
    expect(build(await freshStore(), ["--cache-to", `type=local,dest=${cacheDir},tag=two`, two]).status).toBe(
      0,
    );
    const fromOne = build(await freshStore(), ["--cache-from", `type=local,src=${cacheDir},tag=one`, one]);
    expect(fromOne.stderr).toContain("0 step(s) ran");
    const wrongTag = build(await freshStore(), ["--cache-from", `type=local,src=${cacheDir},tag=one`, two]);
    expect(wrongTag.stderr).toContain("1 step(s) ran");
    const missing = build(await freshStore(), ["--cache-from", `type=local,src=${cacheDir},tag=three`, one]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("has no cache of tag three");
  });

  it("ignore-error=true: a cache that cannot be written is a warning, and the image is made", async () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo one > /one\n" });
    const file = path.join(tempDir("cache-blocked"), "a-file");
    writeFileSync(file, "not a directory\n");
    const ignored = build(await freshStore(), [
      "-t",
      "app:1",
      "--cache-to",
      `type=local,dest=${file}/cache,ignore-error=true`,
      dir,
    ]);
    expect(ignored.status, ignored.stderr).toBe(0);
    expect(ignored.stderr).toMatch(/WARNING: the cache was not exported \(ignore-error=true\): .*ENOTDIR/);
    expect(ignored.digest).toBeDefined();
    const failed = build(await freshStore(), [
      "-t",
      "app:1",
      "--cache-to",
      `type=local,dest=${file}/cache`,
      dir,
    ]);
    expect(failed.status).toBe(1);
  });

  it("inline cache: an image pushed with --cache-to type=inline is cache for --cache-from REF", async () => {
    const dir = context({ Dockerfile: DOCKERFILE, "app.txt": "v1\n" });
    const ref = `${registry.host}/cache/inline:1`;
    const first = build(await freshStore(), ["-t", ref, "--push", "--cache-to", "type=inline", dir]);
    expect(first.status, first.stderr).toBe(0);
    const second = build(await freshStore(), ["-t", "app:1", "--cache-from", ref, dir]);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toContain("0 step(s) ran");
    // Not the same digest: the second image carries no inline cache in its config.
    expect(
      tbuild(["run", "--rm", "app:1", "cat", "/copy"], { env: { TBUILD_ROOT: second.store } }).stdout,
    ).toBe("v1\n");
  });

  it("mode=min leaves an intermediate stage's steps out; mode=max keeps them", async () => {
    const dir = context({ Dockerfile: DOCKERFILE, "app.txt": "v1\n" });
    const records = (cacheDir: string) => {
      const manifest = JSON.parse(
        execFileSync("skopeo", ["inspect", "--raw", `oci:${cacheDir}`], { encoding: "utf8" }),
      );
      const config = JSON.parse(
        execFileSync("cat", [path.join(cacheDir, "blobs", ...manifest.config.digest.split(":"))], {
          encoding: "utf8",
        }),
      );
      return (config.records as { name: string }[]).map((r) => r.name);
    };
    const min = tempDir("cache-min");
    const max = tempDir("cache-max");
    expect(build(await freshStore(), ["--cache-to", `type=local,dest=${min},mode=min`, dir]).status).toBe(0);
    expect(build(await freshStore(), ["--cache-to", `type=local,dest=${max},mode=max`, dir]).status).toBe(0);
    expect(records(max).some((name) => name.includes("RUN echo tool"))).toBe(true);
    expect(records(min).some((name) => name.includes("RUN echo tool"))).toBe(false);
    expect(records(min).some((name) => name.includes("RUN cat /app"))).toBe(true);

    // The final stage's steps hit from the min cache, so the tools stage never has to run.
    const fromMin = build(await freshStore(), ["--cache-from", `type=local,src=${min}`, dir]);
    expect(fromMin.stderr).toContain("0 step(s) ran");
  });

  it("a changed file with imported cache runs only the steps after it", async () => {
    const dir = context({ Dockerfile: DOCKERFILE, "app.txt": "v1\n" });
    const cacheDir = tempDir("cache-changed");
    expect(
      build(await freshStore(), ["--cache-to", `type=local,dest=${cacheDir},mode=max`, dir]).status,
    ).toBe(0);
    writeFileSync(path.join(dir, "app.txt"), "v2\n");
    const store = await freshStore();
    const rebuilt = build(store, ["-t", "changed:1", "--cache-from", `type=local,src=${cacheDir}`, dir]);
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    expect(rebuilt.stderr).toContain("2 step(s) ran");
    const ran = tbuild(["run", "--rm", "changed:1", "cat", "/copy", "/tool", "/one"], {
      env: { TBUILD_ROOT: store },
    });
    expect(ran.stdout).toBe("v2\ntool\none\n");
  });
});
