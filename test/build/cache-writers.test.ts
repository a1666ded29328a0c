/**
 * One registry cache ref written by several stores (the workers of a pool, CI runners): each
 * writer's cache must survive the others', and a store with `--cache-from` that ref must run
 * nothing for any of the builds that wrote it, whatever order or overlap the writers had.
 */
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild, tbuildBin } from "../helpers/cli.js";
import { busyboxStore, FIXED_EPOCH } from "../helpers/images.js";
import { freePort, type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

async function freshStore(): Promise<string> {
  const root = tempDir("writers-store");
  await busyboxStore(tempDir, root, "busybox");
  return root;
}

function context(files: Record<string, string>): string {
  const dir = tempDir("writers-ctx");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

const env = (store: string) => ({ TBUILD_ROOT: store, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) });
const digestIn = (stderr: string) => /image (sha256:[a-f0-9]{64})/.exec(stderr)?.[1];

function build(store: string, args: string[]) {
  const result = tbuild(["build", "--progress=plain", ...args], { env: env(store) });
  return { ...result, digest: digestIn(result.stderr) };
}

/** The same build, started and awaited by its exit: for writers that overlap. */
function buildAsync(store: string, args: string[]) {
  const child = spawn(tbuildBin, ["build", "--progress=plain", ...args], {
    env: { ...process.env, ...env(store) },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    stderr += d;
  });
  return new Promise<{ status: number | null; stderr: string; digest: string | undefined }>((resolve) =>
    child.on("close", (status) => resolve({ status, stderr, digest: digestIn(stderr) })),
  );
}

/** Two projects: A has an intermediate stage (its step is only in a mode=max cache), B is plain. */
const PROJECT_A = {
  Dockerfile:
    "FROM busybox AS tools\nRUN echo tool-a > /tool\n" +
    "FROM busybox\nRUN echo a > /a\nCOPY --from=tools /tool /tool\nCOPY app.txt /app\nRUN cat /app > /copy\n",
  "app.txt": "project a\n",
};
const PROJECT_B = {
  Dockerfile: "FROM busybox\nRUN echo b > /b\nCOPY app.txt /app\nRUN wc -c /app > /size\n",
  "app.txt": "project b\n",
};

let registry: RunningRegistry;
let refs = 0;
/** A ref of its own for each case, so that no case sees another's writers. */
const newRef = () => `${registry.host}/shared/cache${++refs}:main`;

beforeAll(async () => {
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
});

/** A fresh store importing `ref` builds `dir` without running a step, into the image `digest`. */
async function expectRunsNothing(ref: string, dir: string, digest: string | undefined) {
  const imported = build(await freshStore(), ["--cache-from", `type=registry,ref=${ref}`, dir]);
  expect(imported.status, imported.stderr).toBe(0);
  expect(imported.stderr).toContain("0 step(s) ran");
  expect(imported.digest).toBeDefined();
  expect(imported.digest).toBe(digest);
  return imported;
}

async function registryJson(pathname: string, accept = "application/vnd.oci.image.manifest.v1+json") {
  const res = await fetch(`http://${registry.host}${pathname}`, { headers: { accept } });
  expect(res.status, pathname).toBe(200);
  return {
    json: (await res.json()) as Record<string, unknown>,
    digest: res.headers.get("docker-content-digest"),
  };
}

describe("a registry cache ref shared by several writers", () => {
  it.each([
    ["A then B", false],
    ["B then A", true],
  ])(
    "two stores writing different projects (%s): both projects run nothing from the ref",
    async (_, reversed) => {
      const ref = newRef();
      const a = context(PROJECT_A);
      const b = context(PROJECT_B);
      const writers = reversed ? [b, a] : [a, b];
      const digests = new Map<string, string | undefined>();
      for (const dir of writers) {
        const written = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref},mode=max`, dir]);
        expect(written.status, written.stderr).toBe(0);
        expect(written.stderr).toMatch(/[1-9] step\(s\) ran/);
        digests.set(dir, written.digest);
      }
      // The first writer's cache survived the second writer's export.
      await expectRunsNothing(ref, writers[0]!, digests.get(writers[0]!));
      await expectRunsNothing(ref, writers[1]!, digests.get(writers[1]!));
    },
  );

  it("two stores writing the same project: a third store runs nothing and makes the first's image", async () => {
    const ref = newRef();
    const dir = context(PROJECT_A);
    const first = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, dir]);
    expect(first.status, first.stderr).toBe(0);
    const second = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, dir]);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stderr).toMatch(/[1-9] step\(s\) ran/);
    await expectRunsNothing(ref, dir, first.digest);
  });

  it("two stores exporting at the same time: neither cache is lost", async () => {
    const ref = newRef();
    const a = context(PROJECT_A);
    const b = context(PROJECT_B);
    const [storeA, storeB] = [await freshStore(), await freshStore()];
    const [fromA, fromB] = await Promise.all([
      buildAsync(storeA, ["--cache-to", `type=registry,ref=${ref},mode=max`, a]),
      buildAsync(storeB, ["--cache-to", `type=registry,ref=${ref},mode=max`, b]),
    ]);
    expect(fromA.status, fromA.stderr).toBe(0);
    expect(fromB.status, fromB.stderr).toBe(0);
    await expectRunsNothing(ref, a, fromA.digest);
    await expectRunsNothing(ref, b, fromB.digest);
  });

  it("a writer with mode=min and one with mode=max: each project runs nothing, the min one lacks its intermediate stage", async () => {
    const ref = newRef();
    const a = context(PROJECT_A);
    const b = context(PROJECT_B);
    const minA = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref},mode=min`, a]);
    expect(minA.status, minA.stderr).toBe(0);
    const maxB = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref},mode=max`, b]);
    expect(maxB.status, maxB.stderr).toBe(0);
    await expectRunsNothing(ref, a, minA.digest);
    await expectRunsNothing(ref, b, maxB.digest);
    // Only the intermediate stage misses: it runs when its own Dockerfile builds just that stage.
    const tools = build(await freshStore(), [
      "--cache-from",
      `type=registry,ref=${ref}`,
      "--target",
      "tools",
      a,
    ]);
    expect(tools.status, tools.stderr).toBe(0);
    expect(tools.stderr).toContain("1 step(s) ran");
  });

  it("R itself is one valid cache manifest holding every writer's records", async () => {
    const ref = newRef();
    for (const dir of [context(PROJECT_A), context(PROJECT_B)]) {
      expect(build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, dir]).status).toBe(0);
    }
    const repo = ref.slice(registry.host.length + 1, ref.lastIndexOf(":"));
    const { json: manifest } = await registryJson(`/v2/${repo}/manifests/main`);
    const config = manifest.config as { mediaType: string; digest: string };
    expect(config.mediaType).toBe("application/vnd.tbuild.cache.config.v0+json");
    const { json: description } = await registryJson(`/v2/${repo}/blobs/${config.digest}`, "*/*");
    const names = (description.records as { name: string }[]).map((r) => r.name).join("\n");
    expect(names).toContain("RUN echo a > /a");
    expect(names).toContain("RUN echo b > /b");
    // Every layer the description names is a layer of R's manifest: a reader of R alone finds them all.
    const inManifest = new Set((manifest.layers as { digest: string }[]).map((layer) => layer.digest));
    const described = (description.stacks as { layer: { descriptor: { digest: string } } }[]).map(
      (stack) => stack.layer.descriptor.digest,
    );
    expect(described.length).toBeGreaterThan(0);
    expect(described.filter((digest) => !inManifest.has(digest))).toEqual([]);
    const { json: tags } = await registryJson(`/v2/${repo}/tags/list`, "application/json");
    expect((tags.tags as string[]).sort()).toEqual(
      expect.arrayContaining([expect.stringMatching(/^main--tbuild-cache-[0-9a-f]{16}$/), "main"]),
    );
    expect((tags.tags as string[]).length).toBe(3);
  });

  it("an index that lost a race (R names only the last writer): the importer finds the other through the tag list", async () => {
    const ref = newRef();
    const a = context(PROJECT_A);
    const b = context(PROJECT_B);
    const fromA = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, a]);
    expect(fromA.status, fromA.stderr).toBe(0);
    const repo = ref.slice(registry.host.length + 1, ref.lastIndexOf(":"));
    const tagsOfA = (await registryJson(`/v2/${repo}/tags/list`, "application/json")).json.tags as string[];
    const fromB = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, b]);
    expect(fromB.status, fromB.stderr).toBe(0);
    // What a writer that read R before A's export and wrote it after would leave: B's cache alone at R.
    const tagOfB = (
      (await registryJson(`/v2/${repo}/tags/list`, "application/json")).json.tags as string[]
    ).find((tag) => tag !== "main" && !tagsOfA.includes(tag))!;
    const { json: onlyB } = await registryJson(`/v2/${repo}/manifests/${tagOfB}`);
    const put = await fetch(`http://${registry.host}/v2/${repo}/manifests/main`, {
      method: "PUT",
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
      body: JSON.stringify(onlyB),
    });
    expect(put.status).toBe(201);
    await expectRunsNothing(ref, a, fromA.digest);
    await expectRunsNothing(ref, b, fromB.digest);
  });

  it("a writer's tag that is broken or missing is skipped with a warning; the rest of the cache still imports", async () => {
    const ref = newRef();
    const a = context(PROJECT_A);
    const b = context(PROJECT_B);
    const fromA = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, a]);
    expect(fromA.status, fromA.stderr).toBe(0);
    const repo = ref.slice(registry.host.length + 1, ref.lastIndexOf(":"));
    const tagOfA = (
      (await registryJson(`/v2/${repo}/tags/list`, "application/json")).json.tags as string[]
    ).find((tag) => tag !== "main")!;
    const fromB = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, b]);
    expect(fromB.status, fromB.stderr).toBe(0);
    // Broken: A's tag names a cache manifest whose description is one of its layers (gzip, not JSON).
    const { json: manifestOfA } = await registryJson(`/v2/${repo}/manifests/${tagOfA}`);
    const layer = (manifestOfA.layers as { digest: string; size: number }[])[0]!;
    const broken = { ...manifestOfA, config: { ...(manifestOfA.config as object), ...layer } };
    const put = await fetch(`http://${registry.host}/v2/${repo}/manifests/${tagOfA}`, {
      method: "PUT",
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
      body: JSON.stringify(broken),
    });
    expect(put.status).toBe(201);
    const warning = `WARNING: --cache-from ${ref}: the cache of writer ${tagOfA} is left out`;
    expect((await expectRunsNothing(ref, b, fromB.digest)).stderr).toContain(warning);
    // A's records are still in the merged cache at R.
    expect((await expectRunsNothing(ref, a, fromA.digest)).stderr).toContain(warning);
    // Missing: the tag is gone from the registry, R's index still names it.
    const { digest: brokenDigest } = await registryJson(`/v2/${repo}/manifests/${tagOfA}`);
    const deleted = await fetch(`http://${registry.host}/v2/${repo}/manifests/${brokenDigest}`, {
      method: "DELETE",
    });
    expect(deleted.status).toBe(202);
    expect((await expectRunsNothing(ref, b, fromB.digest)).stderr).toContain(warning);
  });

  it("ignore-error=true: a registry that is not there is a warning and the image is made; without it the build fails in one line", async () => {
    const dir = context(PROJECT_B);
    const ref = `127.0.0.1:${await freePort()}/nowhere/cache:main`;
    const ignored = build(await freshStore(), [
      "--cache-to",
      `type=registry,ref=${ref},ignore-error=true`,
      dir,
    ]);
    expect(ignored.status, ignored.stderr).toBe(0);
    expect(ignored.stderr).toMatch(
      /WARNING: the cache was not exported \(ignore-error=true\): .*127\.0\.0\.1/,
    );
    expect(ignored.digest).toBeDefined();
    const failed = build(await freshStore(), ["--cache-to", `type=registry,ref=${ref}`, dir]);
    expect(failed.status).toBe(1);
    expect(failed.stderr).not.toMatch(/\n\s+at /);
  });
});
