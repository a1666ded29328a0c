/**
 * `mounts=true` in `--cache-to` / `--cache-from`: the cache mounts a build used travel with its
 * build cache (a registry, a directory) and seed an empty store's mounts, owners, modes and links
 * kept, as root and rootless; an unchanged mount is not uploaded again; a mount's content never
 * changes a step's key; a hostile mount blob writes nothing outside the store.
 */
import { createHash } from "node:crypto";
import { chownSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CACHE_MOUNT_MEDIA_TYPE } from "../../worker/cache-mounts/archive.js";
import { cacheMountKey } from "../../worker/cache-mounts/store.js";
import { type FaultyProxy, startFaultyProxy } from "../helpers/faulty-proxy.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { type ModeEnv, modes, setUpMode } from "../runtime/harness.js";
import { file, layerTar, symlinkTo } from "../worker/layers.js";

const tempDir = tempDirs();

const MOUNT = "--mount=type=cache,target=/cache,uid=1000,gid=1000,mode=0750";

/** Fills the mount: a 0640 file owned 0:1000, a symlink and a hard link to it, a directory owned 1000:1000. */
const WRITE =
  `FROM busybox\nRUN ${MOUNT} echo kept > /cache/file && chown 0:1000 /cache/file && chmod 0640 /cache/file` +
  " && ln -s file /cache/link && ln /cache/file /cache/hard" +
  " && mkdir /cache/sub && echo nested > /cache/sub/n && chmod 0604 /cache/sub/n && chmod 0710 /cache/sub" +
  " && chown -R 1000:1000 /cache/sub\n";

/** Shows the mount as a step sees it. */
const READ =
  `FROM busybox\nRUN ${MOUNT} echo "entries $(ls -A /cache | wc -l)"` +
  " && stat -c 'owner %n %u:%g %a' /cache /cache/file /cache/sub /cache/sub/n" +
  ` && stat -c 'links %n %h' /cache/file && echo "link $(readlink /cache/link)" && echo "hard $(cat /cache/hard)"\n`;

/** What READ prints of the mount WRITE made (its step output lines, after `#N 0.123 `). */
const SEEN = [
  "entries 4",
  "owner /cache 1000:1000 750",
  "owner /cache/file 0:1000 640",
  "owner /cache/sub 1000:1000 710",
  "owner /cache/sub/n 1000:1000 604",
  "links /cache/file 2",
  "link file",
  "hard kept",
];

/** Only the number of entries, for a mount that may be empty. */
const COUNT = `FROM busybox\nRUN ${MOUNT} echo "entries $(ls -A /cache | wc -l)"\n`;

function stepLines(stderr: string): string[] {
  return stderr.split("\n").flatMap((line) => /^#\d+ [\d.]+ (.*)$/.exec(line)?.[1] ?? []);
}

function contextOf(env: ModeEnv, dockerfile: string): string {
  const dir = env.ownedDir("ctx");
  writeFileSync(path.join(dir, "Dockerfile"), dockerfile);
  if (env.mode.user) chownSync(path.join(dir, "Dockerfile"), env.mode.user.uid, env.mode.user.gid);
  return dir;
}

function build(env: ModeEnv, args: string[]) {
  return env.run(["build", "--progress=plain", ...args]);
}

let registry: RunningRegistry;
beforeAll(async () => {
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
});

describe.each(modes())("cache mounts travel with the build cache ($name)", (mode) => {
  /**
   * The writers' store, shared: a later test's build of WRITE takes its step from the cache and
   * exports the mount all the same (an export does not depend on the step having run).
   */
  let writer: ModeEnv;
  beforeAll(async () => {
    writer = await setUpMode(mode, tempDir);
  });

  /** `where` names the cache (its --cache-to and --cache-from specs) once the writer's world is made. */
  const travels = async (where: (writer: ModeEnv) => { to: string; from: string }) => {
    const { to, from } = where(writer);
    const exported = build(writer, ["--cache-to", `${to},mode=max,mounts=true`, contextOf(writer, WRITE)]);
    expect(exported.status, exported.stderr).toBe(0);
    expect(exported.stderr).toMatch(/cache mount \/cache: [\d.]+ (B|kB|MB), (uploaded|written)\n/);

    // A new empty store: the step runs (--no-cache) on the imported mount.
    const reader = await setUpMode(mode, tempDir);
    const source = `${from},mounts=true`;
    const read = build(reader, ["--no-cache", "--cache-from", source, contextOf(reader, READ)]);
    expect(read.status, read.stderr).toBe(0);
    expect(read.stderr).toContain("importing cache mount /cache from");
    expect(stepLines(read.stderr)).toEqual(expect.arrayContaining(SEEN));

    // The store now has the mount's content: the writer's build still takes every step from the
    // imported cache, since a mount's content is in no key.
    const again = build(reader, ["--cache-from", source, contextOf(reader, WRITE)]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain("0 step(s) ran");
    expect(again.stderr).toContain("CACHED");
  };

  it("type=registry: owners, modes, links and content arrive in a new store, and keys ignore them", async () => {
    const ref = `${registry.host}/mounts/${mode.name}:1`;
    await travels(() => ({ to: `type=registry,ref=${ref}`, from: `type=registry,ref=${ref}` }));
  });

  it("type=local: the same through a directory", async () => {
    await travels((writer) => {
      const dir = path.join(writer.ownedDir("cache-dir"), "cache");
      return { to: `type=local,dest=${dir}`, from: `type=local,src=${dir}` };
    });
  });
});

/** A blob pushed to the test registry as any client of the distribution API pushes one. */
async function pushBlob(repository: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  const started = await fetch(`http://${registry.host}/v2/${repository}/blobs/uploads/`, { method: "POST" });
  expect(started.status).toBe(202);
  const location = new URL(started.headers.get("location")!, `http://${registry.host}`);
  location.searchParams.set("digest", digest);
  const put = await fetch(location, { method: "PUT", body: bytes });
  expect(put.status).toBe(201);
  return { digest, size: bytes.length };
}

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** The cache manifest at `repository:tag` in the test registry. */
async function cacheManifestAt(
  repository: string,
  tag: string,
): Promise<{ layers: { mediaType: string; digest: string }[] }> {
  const response = await fetch(`http://${registry.host}/v2/${repository}/manifests/${tag}`, {
    headers: { accept: OCI_MANIFEST },
  });
  expect(response.status).toBe(200);
  return (await response.json()) as { layers: { mediaType: string; digest: string }[] };
}

/**
 * A cache at `repository:tag` carrying one mount, `id=hostile` (no base), whose blob is `tar`:
 * a cache manifest as an attacker with push access to a CI's cache repository would write it.
 */
async function pushHostileCache(repository: string, tag: string, tar: Buffer): Promise<void> {
  const blob = { mediaType: CACHE_MOUNT_MEDIA_TYPE, ...(await pushBlob(repository, tar)) };
  const record = { key: cacheMountKey("hostile"), id: "hostile", sharing: "shared", target: "/cache" };
  const config = Buffer.from(JSON.stringify({ stacks: [], records: [], mounts: [{ record, blob }] }));
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: {
      mediaType: "application/vnd.tbuild.cache.config.v0+json",
      ...(await pushBlob(repository, config)),
    },
    layers: [blob],
  };
  const put = await fetch(`http://${registry.host}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": OCI_MANIFEST },
    body: JSON.stringify(manifest),
  });
  expect(put.status).toBe(201);
}

describe("cache mounts in the build cache", () => {
  const mode = modes()[0]!;

  /**
   * One cache with the mount WRITE fills, exported once (without mode=max) for the tests that only
   * read it: each reads it into a store of its own, and none changes it.
   */
  const SHARED = "mounts/shared:1";
  beforeAll(async () => {
    const writer = await setUpMode(mode, tempDir);
    const exported = build(writer, [
      "--cache-to",
      `type=registry,ref=${registry.host}/${SHARED},mounts=true`,
      contextOf(writer, WRITE),
    ]);
    if (exported.status !== 0) throw new Error(`the shared cache's export failed: ${exported.stderr}`);
  }, 120_000);

  it("a second export of an unchanged mount uploads no mount blob", async () => {
    const proxy: FaultyProxy = await startFaultyProxy({ port: registry.port });
    try {
      const env = await setUpMode(mode, tempDir);
      const dir = contextOf(env, WRITE);
      const args = [
        "--cache-to",
        `type=registry,ref=${proxy.host}/mounts/unchanged:1,mode=max,mounts=true`,
        dir,
      ];
      // Async: the proxy answers from this process, which a synchronous spawn would block.
      const first = await env.runAsync(["build", "--progress=plain", ...args]);
      expect(first.status, first.stderr).toBe(0);
      const mountBlobs = (await cacheManifestAt("mounts/unchanged", "1")).layers.filter(
        (layer) => layer.mediaType === CACHE_MOUNT_MEDIA_TYPE,
      );
      expect(mountBlobs).toHaveLength(1);
      const hex = mountBlobs[0]!.digest.slice("sha256:".length);
      // An upload ends with a PUT naming the blob's digest.
      const mountUploads = () =>
        proxy.requests.filter(
          (r) => r.method === "PUT" && r.url.includes("/blobs/uploads/") && r.url.includes(hex),
        );
      expect(mountUploads()).toHaveLength(1);

      proxy.requests.length = 0;
      // Every step from the cache, the mount as it was: it is exported again, and not sent.
      const second = await env.runAsync(["build", "--progress=plain", ...args]);
      expect(second.status, second.stderr).toBe(0);
      expect(second.stderr).toContain("0 step(s) ran");
      expect(second.stderr).toMatch(/cache mount \/cache: [\d.]+ (B|kB|MB), unchanged, not uploaded\n/);
      expect(proxy.requests.some((r) => r.url.includes("/manifests/"))).toBe(true);
      expect(mountUploads()).toEqual([]);
      const again = (await cacheManifestAt("mounts/unchanged", "1")).layers.map((layer) => layer.digest);
      expect(again).toContain(mountBlobs[0]!.digest);
    } finally {
      await proxy.stop();
    }
  });

  it("a --cache-from without mounts=true seeds nothing", async () => {
    const ref = `${registry.host}/${SHARED}`;
    const plain = await setUpMode(mode, tempDir);
    const without = build(plain, ["--cache-from", `type=registry,ref=${ref}`, contextOf(plain, COUNT)]);
    expect(without.status, without.stderr).toBe(0);
    expect(stepLines(without.stderr)).toContain("entries 0");
    expect(without.stderr).not.toContain("importing cache mount");
    // The same cache with mounts=true does seed it: the mount was there to be taken.
    const asked = await setUpMode(mode, tempDir);
    const withMounts = build(asked, [
      "--cache-from",
      `type=registry,ref=${ref},mounts=true`,
      contextOf(asked, COUNT),
    ]);
    expect(withMounts.status, withMounts.stderr).toBe(0);
    expect(stepLines(withMounts.stderr)).toContain("entries 4");
  });

  it("a mount the store already has keeps its own content", async () => {
    const ref = `${registry.host}/${SHARED}`;
    const own = await setUpMode(mode, tempDir);
    const marked = build(own, [contextOf(own, `FROM busybox\nRUN ${MOUNT} echo mine > /cache/mine\n`)]);
    expect(marked.status, marked.stderr).toBe(0);
    const counted = build(own, [
      "--cache-from",
      `type=registry,ref=${ref},mounts=true`,
      contextOf(own, COUNT),
    ]);
    expect(counted.status, counted.stderr).toBe(0);
    expect(stepLines(counted.stderr)).toContain("entries 1");
    expect(counted.stderr).not.toContain("importing cache mount");
  });

  it("a mount blob that does not match its digest fails the build naming the mount and the cache", async () => {
    const [repository, tag] = SHARED.split(":") as [string, string];
    const mountBlob = (await cacheManifestAt(repository, tag)).layers.find(
      (layer) => layer.mediaType === CACHE_MOUNT_MEDIA_TYPE,
    )!;
    const proxy = await startFaultyProxy({ port: registry.port }, { corruptBlob: mountBlob.digest });
    try {
      const reader = await setUpMode(mode, tempDir);
      // Flipped on its way through the proxy only: the registry's copy stays good.
      const source = `${proxy.host}/${SHARED}`;
      const result = await reader.runAsync([
        "build",
        "--progress=plain",
        "--cache-from",
        `type=registry,ref=${source},mounts=true`,
        contextOf(reader, COUNT),
      ]);
      expect(result.status, result.stderr).toBe(1);
      expect(result.stderr).toContain(
        `ERROR: cannot fetch cache mount /cache of the imported cache from ${source}`,
      );
      expect(result.stderr).toContain("drop mounts=true from its --cache-from");
      // The blob was fetched, and flipped on its way.
      expect(proxy.requests.some((r) => r.method === "GET" && r.url.endsWith(mountBlob.digest))).toBe(true);
    } finally {
      await proxy.stop();
    }
  });

  describe("a hostile mount blob fails the build naming the mount, and writes nothing outside the store", () => {
    const HOSTILE = "FROM busybox\nRUN --mount=type=cache,id=hostile,target=/cache ls /cache\n";

    const importHostile = async (tag: string, tar: Buffer) => {
      await pushHostileCache("mounts/hostile", tag, tar);
      const env = await setUpMode(mode, tempDir);
      const result = build(env, [
        "--cache-from",
        `type=registry,ref=${registry.host}/mounts/hostile:${tag},mounts=true`,
        contextOf(env, HOSTILE),
      ]);
      expect(result.status, result.stderr).toBe(1);
      expect(result.stderr).toContain(
        `ERROR: refused to unpack cache mount hostile from ${registry.host}/mounts/hostile:${tag}`,
      );
      // Not half there either: the mount has no content.
      const mountDir = path.join(env.store, "cache-mounts", cacheMountKey("hostile"));
      expect(existsSync(path.join(mountDir, "data"))).toBe(false);
      return { result, mountDir };
    };

    it("an entry ../escape", async () => {
      const { mountDir } = await importHostile("dotdot", await layerTar([file("../escape", "escaped\n")]));
      expect(existsSync(path.join(mountDir, "escape"))).toBe(false);
      expect(existsSync(path.join(path.dirname(mountDir), "escape"))).toBe(false);
    });

    it("a symlink out of the mount, then a file through it", async () => {
      const outside = tempDir("planted");
      mkdirSync(path.join(outside, "target"));
      await importHostile(
        "symlink",
        await layerTar([symlinkTo("evil", path.join(outside, "target")), file("evil/pwned", "pwned\n")]),
      );
      expect(existsSync(path.join(outside, "target", "pwned"))).toBe(false);
    });
  });

  it.each(["--cache-to", "--cache-from"])(
    "%s ...,mounts=true with --worker is not supported yet, and says so before connecting",
    async (flag) => {
      const env = await setUpMode(mode, tempDir);
      const spec = flag === "--cache-to" ? "type=local,dest=/nonexistent/c" : "type=local,src=/nonexistent/c";
      // Nothing listens on port 1: a build that tried to connect would say so instead.
      const result = build(env, [
        "--worker",
        "ssh://nobody@127.0.0.1:1",
        flag,
        `${spec},mounts=true`,
        contextOf(env, COUNT),
      ]);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain(`ERROR: ${flag} ...,mounts=true is not supported yet with --worker`);
    },
  );
});
