/**
 * The worker as an unprivileged user: `tbuild-test` (made by .ci/install, with a subuid/subgid
 * range) runs a probe that re-executes itself in tbuild's user namespace, as a tbuild command
 * does. These tests run as root, which creates that user's store and reads what it left on the
 * host; they need `npm run build` first (the probe runs the built dist/).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, chown, lstat, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSubordinateIds } from "../../worker/userns.js";
import { projectRoot } from "../helpers/cli.js";
import { dir, file, hardlinkTo, layerTar, listTar, opaque, symlinkTo, whiteout } from "./layers.js";

const USER = "tbuild-test";
// The test user runs the probe: from the checkout as the global setup made it reachable for that
// user (a clone inside a 0700 directory is not), as every rootless test runs tbuild.
const node = path.join(projectRoot, "node_modules/node/bin/node");
const probe = path.join(projectRoot, "test/worker/fixtures/rootless-probe.mjs");

interface IdMapping {
  inside: number;
  outside: number;
  count: number;
}

function hostId(map: IdMapping[], id: number): number {
  const m = map.find((r) => id >= r.inside && id < r.inside + r.count);
  if (!m) throw new Error(`id ${id} is not mapped`);
  return m.outside + (id - m.inside);
}

function userUid(name: string): number {
  return Number(execFileSync("id", ["-u", name], { encoding: "utf8" }).trim());
}

interface ProbeResult {
  status: number | null;
  stdout: string;
  stderr: string;
  // biome-ignore lint/suspicious/noExplicitAny: the probe's JSON, checked field by field
  report: any;
}

function runProbe(user: string, args: string[], env: NodeJS.ProcessEnv = {}): ProbeResult {
  const result = spawnSync(
    "runuser",
    ["-u", user, "--", "env", ...Object.entries(env).map(([k, v]) => `${k}=${v}`), node, probe, ...args],
    { encoding: "utf8", cwd: "/", timeout: 60_000 },
  );
  const lastLine = result.stdout.trim().split("\n").at(-1) ?? "";
  let report: unknown;
  try {
    report = JSON.parse(lastLine);
  } catch {
    report = undefined;
  }
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, report };
}

let work: string;
let storeRoot: string;

beforeAll(async () => {
  if (!existsSync(path.join(projectRoot, "dist/worker/snapshot/index.js"))) {
    throw new Error("dist/ is not built: run `npm run build` before these tests");
  }
  if (userInfo().uid !== 0) throw new Error("these tests run as root, to act as and inspect another user");
  if (spawnSync("id", [USER]).status !== 0) {
    throw new Error(`user ${USER} is missing: .ci/install creates it (with a subuid/subgid range)`);
  }
  work = await mkdtemp(path.join(tmpdir(), "tbuild-rootless-test-"));
  await chmod(work, 0o755);
  storeRoot = path.join(work, "store");
  execFileSync("mkdir", [storeRoot]);
  await chown(storeRoot, userUid(USER), userUid(USER));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("reexecInUserNamespace", () => {
  it("runs the command again as uid 0 of a namespace over the user's first subordinate range", async () => {
    const { status, report, stderr } = runProbe(USER, ["inside"]);
    expect(stderr).toBe("");
    expect(status).toBe(0);
    expect(report).toMatchObject({ uid: 0, privileged: true, inUserNamespace: true });
    const uid = userUid(USER);
    const subuids = parseSubordinateIds(await readFile("/etc/subuid", "utf8"), { name: USER, uid });
    const subgids = parseSubordinateIds(await readFile("/etc/subgid", "utf8"), { name: USER, uid });
    expect(report.uidMap).toEqual([
      { inside: 0, outside: uid, count: 1 },
      { inside: 1, outside: subuids[0]!.start, count: 65535 },
    ]);
    expect(report.gidMap[1]).toEqual({ inside: 1, outside: subgids[0]!.start, count: 65535 });
  });

  it("passes the exit code back", () => {
    expect(runProbe(USER, ["exit", "7"]).status).toBe(7);
    expect(runProbe(USER, ["exit", "0"]).status).toBe(0);
  });

  it("forwards a signal sent to the outer process", async () => {
    const child = spawn("runuser", ["-u", USER, "--", node, probe, "wait-for-signal"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    const ready = new Promise<number>((resolve, reject) => {
      child.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        const first = stdout.split("\n")[0];
        if (stdout.includes("\n")) resolve(JSON.parse(first!).ppid as number);
      });
      child.once("exit", () => reject(new Error(`probe exited early: ${stdout}`)));
    });
    const outerPid = await ready;
    // The probe's parent inside the namespace is the outer Node process (unshare exec'd Node).
    process.kill(outerPid, "SIGTERM");
    const status = await new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    expect(stdout).toContain('"signal":"SIGTERM"');
    expect(status).toBe(42);
  });
});

describe("RootlessSetupError", () => {
  const throwaway = `tbnosub${process.pid}`;

  beforeAll(() => {
    // useradd gives new users a subuid range by default (login.defs); this one must have none.
    execFileSync("useradd", [
      "--no-create-home",
      "-K",
      "SUB_UID_COUNT=0",
      "-K",
      "SUB_GID_COUNT=0",
      throwaway,
    ]);
  });
  afterAll(() => {
    spawnSync("userdel", [throwaway]);
  });

  it("names a missing subuid range and the command that adds one", async () => {
    expect(await readFile("/etc/subuid", "utf8")).not.toContain(`${throwaway}:`);
    const { status, stderr } = runProbe(throwaway, ["inside"]);
    expect(status).toBe(1);
    expect(stderr).toContain(`cannot run rootless: no subuid range for user ${throwaway} in /etc/subuid`);
    expect(stderr).toMatch(
      new RegExp(`To fix it, run: sudo usermod --add-subuids \\d+-\\d+ --add-subgids \\d+-\\d+ ${throwaway}`),
    );
  });

  it("names a missing unshare, and a missing newuidmap", async () => {
    const { status, stderr } = runProbe(USER, ["inside"], { PATH: "/nonexistent" });
    expect(status).toBe(1);
    expect(stderr).toContain("`unshare` (util-linux) is not installed");
    expect(stderr).toContain("To fix it, run: sudo apt-get install util-linux");

    const onlyUnshare = path.join(work, "only-unshare");
    execFileSync("mkdir", [onlyUnshare]);
    await symlink("/usr/bin/unshare", path.join(onlyUnshare, "unshare"));
    const missingMap = runProbe(USER, ["inside"], { PATH: onlyUnshare });
    expect(missingMap.status).toBe(1);
    expect(missingMap.stderr).toContain("`newuidmap` (package uidmap) is not installed");
    expect(missingMap.stderr).toContain("To fix it, run: sudo apt-get install uidmap");
  });
});

describe("the worker in the user namespace", () => {
  let tars: string[];

  beforeAll(async () => {
    const layers = [
      await layerTar([
        dir("etc"),
        file("etc/hosts", "127.0.0.1 localhost\n"),
        file("etc/motd", "motd\n"),
        file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        hardlinkTo("etc/passwd-", "etc/passwd"),
        dir("srv", { uid: 1234, gid: 1234 }),
        file("srv/owned", "owned", { uid: 1234, gid: 1234, mode: 0o600 }),
        file("bin-su", "su", { mode: 0o4755 }),
        symlinkTo("sh", "bin-su"),
        dir("data"),
        file("data/a", "a"),
        dir("dev"),
        { path: "dev/null", type: "CharacterDevice", mode: 0o666, devmaj: 1, devmin: 3 },
      ]),
      await layerTar([dir("etc"), whiteout("etc/passwd-"), dir("data"), opaque("data"), file("data/b", "b")]),
    ];
    tars = [];
    for (const [i, tar] of layers.entries()) {
      const p = path.join(work, `layer${i}.tar`);
      await writeFile(p, tar);
      tars.push(p);
    }
  });

  for (const mode of ["overlay", "copy"]) {
    it(`unpacks with real ownership (subordinate ids on the host), mounts (${mode}), diffs and unmounts`, async () => {
      // A store of its own, so that each mode unpacks the layers itself.
      const modeStore = path.join(work, `store-${mode}`);
      execFileSync("mkdir", [modeStore]);
      await chown(modeStore, userUid(USER), userUid(USER));
      const { status, stderr, report } = runProbe(USER, ["snapshot", mode, ...tars], {
        TBUILD_ROOT: modeStore,
      });
      expect(stderr).toBe("");
      expect(status).toBe(0);
      expect(report.mode).toBe(mode);
      // Inside: ids as the image says.
      expect(report.seen.owned).toEqual({ uid: 1234, gid: 1234, mode: 0o600 });
      expect(report.seen.setuid).toEqual({ uid: 0, gid: 0, mode: 0o4755 });
      expect(report.seen.listing).toEqual(["bin-su", "data", "dev", "etc", "sh", "srv"]);
      expect(report.seen.data).toEqual(["b"]);
      expect(report.warnings.join("\n")).toContain(
        "skipped 1 device node (dev/null): a user namespace cannot create devices",
      );
      if (mode === "overlay") expect(report.seen.mountsWhileMounted).toHaveLength(1);
      expect(report.mountsAfterRelease).toEqual([]);
      expect(report.mountsLeft).toEqual([]);

      // On the host: the same files belong to the user's subordinate ids.
      const owned = await lstat(path.join(report.lowers[0], "srv/owned"));
      expect(owned.uid).toBe(hostId(report.uidMap, 1234));
      expect(owned.gid).toBe(hostId(report.gidMap, 1234));
      expect(owned.uid).toBeGreaterThanOrEqual(report.uidMap[1].outside);
      const su = await lstat(path.join(report.lowers[0], "bin-su"));
      expect(su.uid).toBe(userUid(USER));
      expect(su.mode & 0o7777).toBe(0o4755);
      const whiteoutNode = await lstat(path.join(report.lowers[1], "etc/passwd-"));
      expect(whiteoutNode.isCharacterDevice() && whiteoutNode.rdev === 0).toBe(true);

      // The diff, written inside, speaks the namespace's ids.
      const entries = await listTar(await readFile(report.diffFile));
      expect(entries.map((e) => e.path)).toEqual([
        "data/",
        "data/.wh..wh..opq",
        "data/fresh",
        "etc/",
        "etc/.wh.motd",
        "etc/hosts",
      ]);
      expect(entries.find((e) => e.path === "etc/hosts")).toMatchObject({ uid: 1234, gid: 1234 });
      for (const e of entries) expect(e.mtime).toBeLessThanOrEqual(1500000000);
    });
  }

  it("refuses a hostile layer there too, leaving the host untouched", async () => {
    const canary = path.join(work, "canary");
    execFileSync("mkdir", [canary]);
    await chown(canary, userUid(USER), userUid(USER));
    const hostile = path.join(work, "hostile.tar");
    await writeFile(hostile, await layerTar([symlinkTo("evil", canary), file("evil/pwned", "pwned")]));
    const target = path.join(storeRoot, "hostile-layer");
    const { status, report, stderr } = runProbe(USER, ["hostile", hostile, target]);
    expect(stderr).toBe("");
    expect(status).toBe(0);
    expect(report).toMatchObject({ refused: true, name: "HostileLayerError" });
    expect(report.message).toContain("a symbolic link the layer planted");
    expect(existsSync(path.join(canary, "pwned"))).toBe(false);
    expect(existsSync(target)).toBe(false);
  });
});
