/**
 * Volumes against what a user or an image controls: a volume name that is a path (`..`, `/`, a
 * way to the canary) is refused by every volume command before it becomes a path; an image whose
 * VOLUME path is a symlink to a host directory gets a volume seeded from the image, not from the
 * host; a container that leaves symlinks to the canary in its volume cannot make `rm -v`,
 * `volume prune` or `volume rm` remove (or measure) anything outside the volume.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();
const STACK = /\n\s+at /;

describe.each(MODES)("volumes against hostile names and contents (%s)", (mode) => {
  let store = "";
  beforeAll(() => {
    store = world.store(mode);
  });

  const ok = (args: string[]) => {
    const result = world.tbuild(mode, store, args);
    expect(result.status, `tbuild ${args.join(" ")}: ${result.stderr}`).toBe(0);
    return result.stdout;
  };

  it("a volume name that is a path is refused by every volume command, the canary untouched", () => {
    const canary = world.canary(mode);
    const volumes = path.join(store, "volumes");
    ok(["volume", "create", "placeholder"]);
    const toCanary = path.relative(volumes, canary.dir);
    const outputs: string[] = [];
    for (const name of [toCanary, `${toCanary}/sub`, "..", ".", canary.dir, "a/../../..", "x/../../.."]) {
      const commands = [
        ["volume", "create", name],
        ["volume", "rm", "-f", name],
        ["volume", "inspect", name],
      ];
      // A SRC starting with "." or "/" is a host path to bind (docker's rule), not a volume name.
      if (!/^[./]/.test(name)) commands.push(["run", "--rm", "-v", `${name}:/v`, "busybox", "true"]);
      for (const args of commands) {
        const result = world.tbuild(mode, store, args);
        outputs.push(result.stdout, result.stderr);
        expect(result.status, `tbuild ${args.join(" ")}: ${result.stderr}`).toBe(2);
        expect(result.stderr).not.toMatch(STACK);
        expect(result.stderr.trim().split("\n")).toHaveLength(1);
        expect(result.stderr).toMatch(/^ERROR: .*(is not a valid volume name|neither a host path)/);
      }
    }
    canary.expectUntouched(...outputs);
    expect(readdirSync(volumes)).toEqual(["placeholder"]);
    world.expectStoreUsable(mode, store);
  });

  it("an image's VOLUME path that is a symlink to a host directory is seeded from the image, never the host", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      // The image has a directory of its own at the canary's path: that is what the volume gets.
      Dockerfile: `FROM busybox\nRUN mkdir -p ${canary.dir} && echo image-content > ${canary.dir}/from-image && ln -s ${canary.dir} /data\nVOLUME /data\n`,
    });
    ok(["build", "-q", "-t", "symlinked-volume", ctx]);
    const ran = world.tbuild(mode, store, [
      "run",
      "--name",
      "symlinked",
      "symlinked-volume",
      "sh",
      "-c",
      "ls -a /data; cat /data/secret; echo done",
    ]);
    expect(ran.stdout).toContain("done\n");
    const [volume] = ok(["volume", "ls", "-q"])
      .split("\n")
      .filter((n) => /^[a-f0-9]{64}$/.test(n));
    expect(volume).toBeDefined();
    const data = path.join(store, "volumes", volume!, "_data");
    expect(readdirSync(data)).toEqual(["from-image"]);
    expect(ran.stdout).toMatch(/^\.\n\.\.\nfrom-image\n/);
    expect(ran.stdout).not.toContain(canary.secret);
    ok(["rm", "-v", "symlinked"]);
    canary.expectUntouched(ran.stdout, ran.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("symlinks to the canary left in volumes do not lead rm -v, volume prune or volume rm outside them", () => {
    const canary = world.canary(mode);
    const plant = `ln -s ${canary.dir} /v/dir; ln -s ${canary.dir}/secret /v/secret; ln -s / /v/root; mkdir /v/sub; ln -s ${canary.dir}/sub /v/sub/link`;
    ok(["run", "--name", "planter-anon", "-v", "/v", "busybox", "sh", "-c", plant]);
    ok(["run", "--name", "planter-named", "-v", "planted:/v", "busybox", "sh", "-c", plant]);
    ok(["run", "--name", "planter-dangling", "-v", "/v", "busybox", "sh", "-c", plant]);
    ok(["rm", "-v", "planter-anon"]);
    ok(["rm", "planter-named", "planter-dangling"]);
    const pruned = ok(["volume", "prune"]);
    expect(pruned).toMatch(/^Deleted Volumes:\n[a-f0-9]{64}\n\nTotal reclaimed space: /);
    expect(ok(["volume", "rm", "planted"])).toBe("planted\n");
    expect(existsSync(path.join(store, "volumes", "planted"))).toBe(false);
    expect(readFileSync(path.join(canary.dir, "sub", "file"), "utf8")).toBe("untouched\n");
    canary.expectUntouched(pruned);
    world.expectStoreUsable(mode, store);
  });
});
