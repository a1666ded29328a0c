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
  /** `where` names the cache (its --cache-to and --cache-from specs) once the writer's world is made. */
  const travels = async (where: (writer: ModeEnv) => { to: string; from: string }) => {
    const writer = await setUpMode(mode, tempDir);
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
