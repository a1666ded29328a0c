/**
 * Volumes as docker keeps them: an image's VOLUME gets an anonymous volume seeded from the image;
 * `--rm` and `rm -v` remove a container's anonymous volumes, `rm` leaves them dangling; `tbuild
 * volume create|ls|inspect|rm|prune` manage them, refusing to remove one a container uses; `tbuild
 * container prune` removes the stopped containers; `prune` keeps what a kept container's image
 * needs; `:z`/`:Z` are accepted with a note where SELinux is off. Each as root and rootless.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tempDirs } from "../helpers/temp.js";
import { eventually, type ModeEnv, modes, setUpMode } from "./harness.js";

const tempDir = tempDirs();

interface InspectedVolume {
  Name: string;
  Driver: string;
  Mountpoint: string;
  CreatedAt: string;
  Labels: Record<string, string>;
  Scope: string;
  Options: Record<string, string>;
}

describe.each(modes())("volumes as $name", (mode) => {
  let env: ModeEnv;
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
    const context = env.ownedDir("volume-image");
    writeFileSync(
      path.join(context, "Dockerfile"),
      [
        "FROM busybox",
        "RUN mkdir -p /data && echo seeded > /data/seed && chown 1234:2345 /data/seed && chmod 640 /data/seed",
        "VOLUME /data",
        "",
      ].join("\n"),
    );
    env.ok(["build", "-q", "-t", "with-volume", context]);
  });

  const volumeNames = (...flags: string[]) =>
    env
      .ok(["volume", "ls", "-q", ...flags])
      .split("\n")
      .filter(Boolean);
  const inspect = (...names: string[]) =>
    JSON.parse(env.ok(["volume", "inspect", ...names])) as InspectedVolume[];
  const newVolumes = (before: string[]) => volumeNames().filter((n) => !before.includes(n));

  it("gives an image's VOLUME an anonymous volume seeded from the image; rm leaves it dangling, rm -v removes it", () => {
    const before = volumeNames();
    const seen = env.ok([
      "run",
      "--name",
      "with-data",
      "with-volume",
      "sh",
      "-c",
      'cat /data/seed; stat -c "%u:%g %a" /data/seed; echo written > /data/new',
    ]);
    expect(seen).toBe("seeded\n1234:2345 640\n");
    const [anonymous, ...others] = newVolumes(before);
    expect(others).toEqual([]);
    expect(anonymous).toMatch(/^[a-f0-9]{64}$/);
    expect(volumeNames("--filter", "dangling=false")).toContain(anonymous);
    const [info] = inspect(anonymous!);
    expect(info).toMatchObject({ Name: anonymous, Driver: "local", Scope: "local", Options: {} });
    expect(info!.Labels).toHaveProperty("com.docker.volume.anonymous");
    expect(info!.Mountpoint).toBe(path.join(env.store, "volumes", anonymous!, "_data"));
    expect(readFileSync(path.join(info!.Mountpoint, "new"), "utf8")).toBe("written\n");

    env.ok(["rm", "with-data"]);
    expect(volumeNames("--filter", "dangling=true")).toContain(anonymous);

    env.ok(["run", "--name", "second", "with-volume", "true"]);
    const [second] = newVolumes([...before, anonymous!]);
    expect(second).toMatch(/^[a-f0-9]{64}$/);
    expect(env.ok(["rm", "-v", "second"])).toBe("second\n");
    expect(volumeNames()).not.toContain(second);
    expect(volumeNames()).toContain(anonymous);

    const pruned = env.ok(["volume", "prune"]);
    expect(pruned).toMatch(new RegExp(`^Deleted Volumes:\\n${anonymous}\\n\\nTotal reclaimed space: \\d`));
    expect(volumeNames()).toEqual(before);
  });

  it("removes the image's anonymous volumes with a --rm container, and a -v over the VOLUME path replaces it", () => {
    const before = volumeNames();
    expect(env.ok(["run", "--rm", "with-volume", "sh", "-c", "cat /data/seed; touch /data/x"])).toBe(
      "seeded\n",
    );
    expect(volumeNames()).toEqual(before);
    const named = `over-${mode.name}`;
    expect(env.ok(["run", "--rm", "-v", `${named}:/data`, "with-volume", "cat", "/data/seed"])).toBe(
      "seeded\n",
    );
    expect(newVolumes(before)).toEqual([named]);
    // A named volume stays after --rm.
    expect(readFileSync(path.join(env.store, "volumes", named, "_data", "seed"), "utf8")).toBe("seeded\n");
  });

  it("creates, lists, inspects and removes volumes; refuses to remove one a stopped container uses", () => {
    expect(env.ok(["volume", "create", "--label", "team=web", "--label", "flag", "shared"])).toBe("shared\n");
    const [shared] = inspect("shared");
    expect(shared).toMatchObject({
      Name: "shared",
      Driver: "local",
      Labels: { team: "web", flag: "" },
      Mountpoint: path.join(env.store, "volumes", "shared", "_data"),
      Scope: "local",
      Options: {},
    });
    expect(shared!.CreatedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const unnamed = env.ok(["volume", "create"]).trim();
    expect(unnamed).toMatch(/^[a-f0-9]{64}$/);
    expect(env.ok(["volume", "ls"])).toMatch(/^DRIVER {4}VOLUME NAME\n(.*\n)*local {5}shared\n/);
    const listed = JSON.parse(env.ok(["volume", "ls", "--format", "json"])) as InspectedVolume[];
    expect(listed.map((v) => v.Name)).toEqual(expect.arrayContaining(["shared", unnamed]));

    env.ok([
      "run",
      "--name",
      "user-of-shared",
      "-v",
      "shared:/shared",
      "busybox",
      "sh",
      "-c",
      "echo kept > /shared/f",
    ]);
    const id = (JSON.parse(env.ok(["ps", "-a", "--format", "json"])) as { id: string; name: string }[]).find(
      (c) => c.name === "user-of-shared",
    )!.id;
    const refused = env.run(["volume", "rm", "shared"]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toBe(
      `ERROR: remove shared: volume is in use - [${id.slice(0, 12)} (user-of-shared)]: remove the container first (tbuild rm user-of-shared)\n`,
    );
    expect(volumeNames("--filter", "dangling=false")).toContain("shared");
    expect(volumeNames("--filter", "dangling=true")).not.toContain("shared");

    // Without -a, prune takes anonymous volumes only; with it, every unused one.
    expect(env.ok(["volume", "prune"])).not.toMatch(new RegExp(`${unnamed}|shared`));
    const all = env.ok(["volume", "prune", "-a"]);
    expect(all).toContain(`\n${unnamed}\n`);
    expect(all).not.toContain("shared");

    env.ok(["rm", "-v", "user-of-shared"]);
    expect(readFileSync(path.join(env.store, "volumes", "shared", "_data", "f"), "utf8")).toBe("kept\n");
    expect(env.ok(["volume", "rm", "shared"])).toBe("shared\n");
    expect(existsSync(path.join(env.store, "volumes", "shared"))).toBe(false);
    const gone = env.run(["volume", "rm", "shared"]);
    expect(gone.status).toBe(1);
    expect(gone.stderr).toMatch(/^ERROR: no volume shared in the store: 'tbuild volume ls' lists them\n$/);
    expect(env.run(["volume", "rm", "-f", "shared"]).status).toBe(0);
  });

  it("lists and inspects volumes made before volumes had metadata", () => {
    const old = path.join(env.store, "volumes", "from-before", "_data");
    env.ok(["run", "--rm", "-v", "from-before:/v", "busybox", "sh", "-c", "echo old > /v/f"]);
    // What tbuild made before: the data directory alone.
    rmSync(path.join(path.dirname(old), "volume.json"));
    expect(volumeNames()).toContain("from-before");
    const [info] = inspect("from-before");
    expect(info).toMatchObject({ Name: "from-before", Labels: {}, Mountpoint: old });
    expect(env.ok(["run", "--rm", "-v", "from-before:/v", "busybox", "cat", "/v/f"])).toBe("old\n");
  });

  it("says what is wrong with a volume name or a volume not there", () => {
    const bad = env.run(["volume", "create", "../outside"]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^ERROR: "\.\.\/outside" is not a valid volume name: use \[a-zA-Z0-9\]/);
    expect(existsSync(path.join(env.store, "outside"))).toBe(false);
    const missing = env.run(["volume", "inspect", "nowhere"]);
    expect(missing.status).toBe(1);
    expect(missing.stdout).toBe("[]\n");
    expect(missing.stderr).toBe("ERROR: no volume nowhere in the store: 'tbuild volume ls' lists them\n");
    const filter = env.run(["volume", "ls", "--filter", "name=x"]);
    expect(filter.status).toBe(2);
    expect(filter.stderr).toMatch(/--filter takes dangling=true or dangling=false/);
  });

  it("container prune removes every stopped container and leaves a running one", async () => {
    env.ok(["run", "--name", `stopped-${mode.name}`, "busybox", "sh", "-c", "echo x > /changed"]);
    const control = env.ownedDir("control");
    const running = env.spawn([
      "run",
      "--name",
      `running-${mode.name}`,
      "-v",
      `${control}:/control`,
      "busybox",
      "sh",
      "-c",
      "touch /control/up; while [ ! -e /control/stop ]; do sleep 0.1; done",
    ]);
    try {
      expect(await eventually(() => existsSync(path.join(control, "up")), 60_000)).toBe(true);
      const before = JSON.parse(env.ok(["ps", "-a", "--format", "json"])) as { id: string; name: string }[];
      const stoppedId = before.find((c) => c.name === `stopped-${mode.name}`)!.id;
      const pruned = env.ok(["container", "prune"]);
      expect(pruned).toMatch(/^Deleted Containers:\n([a-f0-9]{64}\n)+\nTotal reclaimed space: \d/);
      expect(pruned).toContain(`${stoppedId}\n`);
      const after = JSON.parse(env.ok(["ps", "-a", "--format", "json"])) as { name: string; state: string }[];
      expect(after.map((c) => c.name)).toEqual([`running-${mode.name}`]);
      expect(after[0]!.state).toBe("running");
    } finally {
      writeFileSync(path.join(control, "stop"), "");
      await running.exited;
    }
    env.ok(["rm", `running-${mode.name}`]);
    expect(env.ok(["container", "prune"])).toBe("Total reclaimed space: 0B\n");
    expect(env.mountsInStore()).toEqual([]);
  });

  it("prune keeps the image (and its unpacked layers) a stopped container uses; container prune then prune frees it", () => {
    const context = env.ownedDir("kept-image");
    writeFileSync(path.join(context, "Dockerfile"), `FROM busybox\nRUN echo ${mode.name}-kept > /kept\n`);
    const digest = env.ok(["build", "-q", "-t", "kept-image", context]).trim();
    env.ok(["run", "--name", "keeper", "kept-image", "sh", "-c", "cat /kept > /copy"]);
    const refused = env.run(["rmi", "kept-image"]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/container [0-9a-f]{12} \(keeper\) is using its referenced image/);
    env.ok(["rmi", "-f", "kept-image"]);
    const layers = path.join(env.store, "snapshots", "layers");
    const unpacked = readdirSync(layers).sort();
    env.ok(["prune"]);
    expect(readdirSync(layers).sort()).toEqual(unpacked);
    env.ok(["commit", "keeper", "kept-work"]);
    expect(env.ok(["run", "--rm", "kept-work", "cat", "/copy"])).toBe(`${mode.name}-kept\n`);
    env.ok(["rmi", "kept-work"]);

    env.ok(["container", "prune"]);
    env.ok(["prune"]);
    const blob = path.join(env.store, "blobs", ...digest.split(":"));
    expect(existsSync(blob)).toBe(false);
    expect(readdirSync(layers).length).toBeLessThan(unpacked.length);
  });

  it("accepts :z and :Z (alone or with ro) where SELinux is off, with a note", () => {
    const host = env.ownedDir("relabel");
    mkdirSync(path.join(host, "d"));
    writeFileSync(path.join(host, "d", "f"), "shared\n");
    const shared = env.run(["run", "--rm", "-v", `${host}/d:/m:z`, "busybox", "cat", "/m/f"]);
    expect(shared.stdout).toBe("shared\n");
    expect(shared.stderr).toBe(
      `WARNING: -v ${host}/d:/m:z: SELinux is not enabled on this host, so :z (relabeling) is ignored\n`,
    );
    const readOnly = env.run(["run", "--rm", "-v", `${host}/d:/m:ro,Z`, "busybox", "touch", "/m/g"]);
    expect(readOnly.status).not.toBe(0);
    expect(readOnly.stderr).toMatch(/:Z \(relabeling\) is ignored\n(.*\n)*.*Read-only file system/);
    expect(existsSync(path.join(host, "d", "g"))).toBe(false);
  });
});
