/**
 * `-o dest=` names a place to write, never a thing to replace: a device, a FIFO or a pipe
 * (`/dev/stdout`, bash's `>(cmd)`) is written in place as a stream, as `docker buildx build`
 * writes it, and only a regular file or a new path is written through a temp file and a rename.
 * Before, `-o type=tar,dest=/dev/null` renamed a regular file over the device.
 */
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { chownSync, lstatSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { userIds } from "../helpers/judges.js";
import { hostileWorld, MODES, type Mode, ROOTLESS_USER } from "./harness.js";
import { shellAs } from "./shell.js";

const world = hostileWorld();

const DOCKERFILE = "FROM busybox\nRUN echo exported > /marker\n";

/** A FIFO in a directory of the mode's user, owned by that user. */
function fifoFor(mode: Mode, name: string): string {
  const dir = world.dir("fifo", mode);
  const fifo = path.join(dir, name);
  execFileSync("mkfifo", ["-m", "600", fifo]);
  if (mode === "rootless") {
    const { uid, gid } = userIds(ROOTLESS_USER);
    chownSync(fifo, uid, gid);
  }
  return fifo;
}

describe.each(MODES)("export destinations (%s)", (mode) => {
  let store = "";
  beforeAll(() => {
    store = world.store(mode);
  });

  it("a character device as dest= stays that device, and nothing is left beside it", () => {
    const canary = world.canary(mode);
    const dir = world.dir("dev", mode);
    // A null device of our own: the same kind of file as /dev/null, without risking the real one.
    const device = path.join(dir, "null");
    execFileSync("mknod", ["-m", "666", device, "c", "1", "3"]);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    for (const type of ["tar", "oci", "docker"]) {
      const built = world.tbuild(mode, store, ["build", "-q", "-o", `type=${type},dest=${device}`, ctx]);
      expect(built.status, built.stderr).toBe(0);
      const info = lstatSync(device);
      expect(info.isCharacterDevice(), `type=${type} replaced the device`).toBe(true);
      expect([info.rdev >> 8, info.rdev & 0xff]).toEqual([1, 3]);
    }
    expect(readdirSync(dir)).toEqual(["null"]);
    canary.expectUntouched();
  });

  it("a directory dest= that cannot be made (under /proc, below a file) is a one-line error, never a hang", () => {
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const file = path.join(ctx, "Dockerfile");
    for (const [option, dest] of [
      ["-o", "type=local,dest=/proc/tbuild-nowhere"],
      ["-o", "type=oci,tar=false,dest=/proc/tbuild-nowhere"],
      ["--cache-to", "type=local,dest=/proc/tbuild-nowhere"],
      ["-o", `type=local,dest=${file}/sub`],
      ["--cache-to", `type=local,dest=${file}/sub`],
    ] as const) {
      const built = world.tbuild(mode, store, ["build", "-q", option, dest, ctx]);
      expect(built.status, `${option} ${dest}: ${built.stderr}`).toBe(1);
      const errors = built.stderr.split("\n").filter((line) => line.startsWith("ERROR"));
      expect(errors, built.stderr).toHaveLength(1);
      expect(errors[0]).toContain(dest.split("dest=")[1]!);
      expect(errors[0]).not.toContain("internal error");
    }
    world.expectStoreUsable(mode, store);
  });

  it("tbuild save -o a device or a FIFO writes in place too", async () => {
    const dir = world.dir("save", mode);
    const device = path.join(dir, "null");
    execFileSync("mknod", ["-m", "666", device, "c", "1", "3"]);
    const saved = world.tbuild(mode, store, ["save", "-o", device, "busybox"]);
    expect(saved.status, saved.stderr).toBe(0);
    expect(lstatSync(device).isCharacterDevice(), "save replaced the device").toBe(true);
    const fifo = fifoFor(mode, "save.fifo");
    const received = path.join(path.dirname(fifo), "received.tar");
    const reader = spawn("sh", ["-c", 'cat "$0" > "$1"', fifo, received], { stdio: "ignore" });
    const readerDone = once(reader, "exit");
    try {
      const result = world.tbuild(mode, store, ["save", "-o", fifo, "busybox"]);
      expect(result.status, result.stderr).toBe(0);
      expect(lstatSync(fifo).isFIFO(), "save replaced the FIFO").toBe(true);
      expect((await readerDone)[0]).toBe(0);
    } finally {
      reader.kill("SIGKILL");
    }
    const inspected = JSON.parse(
      execFileSync("skopeo", ["inspect", `oci-archive:${received}`], { encoding: "utf8" }),
    );
    expect(inspected.Layers).toHaveLength(1);
    expect(readdirSync(dir)).toEqual(["null"]);
  });

  it("a FIFO as dest= stays a FIFO, and its reader gets an OCI archive skopeo reads", async () => {
    const fifo = fifoFor(mode, "image.fifo");
    const received = path.join(path.dirname(fifo), "received.tar");
    const reader = spawn("sh", ["-c", 'cat "$0" > "$1"', fifo, received], { stdio: "ignore" });
    const readerDone = once(reader, "exit");
    try {
      const ctx = world.context({ Dockerfile: DOCKERFILE });
      const built = world.tbuild(mode, store, ["build", "-q", "-o", `type=oci,dest=${fifo}`, ctx]);
      expect(built.status, built.stderr).toBe(0);
      expect(lstatSync(fifo).isFIFO(), "the FIFO was replaced").toBe(true);
      const [code] = await readerDone;
      expect(code).toBe(0);
    } finally {
      reader.kill("SIGKILL");
    }
    const inspected = JSON.parse(
      execFileSync("skopeo", ["inspect", `oci-archive:${received}`], { encoding: "utf8" }),
    );
    expect(inspected.Layers).toHaveLength(2);
    expect(readdirSync(path.dirname(fifo)).sort()).toEqual(["image.fifo", "received.tar"]);
  });

  it("dest=- writes the archive to standard output", () => {
    const out = world.dir("stdout", mode);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const ran = shellAs(mode, store, `"$TBUILD" build -q -o type=tar,dest=- "${ctx}" > "${out}/fs.tar"`);
    expect(ran.status, ran.stderr).toBe(0);
    expect(execFileSync("tar", ["-xOf", path.join(out, "fs.tar"), "marker"], { encoding: "utf8" })).toBe(
      "exported\n",
    );
  });

  it("dest= under bash's process substitution (>(cmd), a /dev/fd/N pipe) reaches the command", () => {
    const out = world.dir("procsubst", mode);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    // `wait $!` waits for the substituted process, so its file is complete when bash ends.
    const ran = shellAs(
      mode,
      store,
      `"$TBUILD" build -q -o type=tar,dest=>(cat > '${out}/fs.tar') "${ctx}"; status=$?; wait $!; exit $status`,
    );
    expect(ran.status, ran.stderr).toBe(0);
    expect(execFileSync("tar", ["-xOf", path.join(out, "fs.tar"), "marker"], { encoding: "utf8" })).toBe(
      "exported\n",
    );
  });

  it("a regular file as dest= is replaced whole, and a symlink to it is kept", () => {
    const out = world.dir("file", mode);
    const file = path.join(out, "image.tar");
    const link = path.join(out, "link.tar");
    shellAs(mode, store, `echo old > "${file}" && ln -s image.tar "${link}"`);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const built = world.tbuild(mode, store, ["build", "-q", "-o", `type=tar,dest=${link}`, ctx]);
    expect(built.status, built.stderr).toBe(0);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(execFileSync("tar", ["-xOf", file, "marker"], { encoding: "utf8" })).toBe("exported\n");
    expect(readdirSync(out).sort()).toEqual(["image.tar", "link.tar"]);
    expect(readFileSync(file).length).toBeGreaterThan(1024);
  });

  it("the store is usable after these exports", () => {
    world.expectStoreUsable(mode, store);
  });
});
