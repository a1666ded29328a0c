/**
 * `tbuild run --init` with images that put something of their own where the init is bound
 * (/sbin/docker-init): a directory, and a symlink aimed at a file of the host's (the canary's
 * secret, by a path climbing out of the root). The init is bound inside the container's root
 * whatever the link says, and a directory there is a one-line error. Root and rootless.
 */
import path from "node:path";
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("tbuild run --init with a hostile /sbin/docker-init (%s)", (mode) => {
  it("binds the init inside the container when the image's /sbin/docker-init is a link to a host file", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const secretFile = path.join(canary.dir, "secret");
    const ctx = world.context({
      Dockerfile: `FROM busybox\nRUN mkdir -p /sbin && ln -s ../../../../../../../..${secretFile} /sbin/docker-init\n`,
    });
    const built = world.tbuild(mode, store, ["build", "-q", "-t", "linked-init", ctx]);
    expect(built.status, built.stderr).toBe(0);
    const ran = world.tbuild(mode, store, [
      "run",
      "--rm",
      "--init",
      "linked-init",
      "sh",
      "-c",
      `cat /proc/1/cmdline | tr '\\0' ' '; echo; head -c 4 /sbin/docker-init | od -c | head -1; head -c 4 ${secretFile} | od -c | head -1`,
    ]);
    expect(ran.status, ran.stderr).toBe(0);
    const [cmdline, head, target] = ran.stdout.split("\n");
    expect(cmdline!.startsWith("/sbin/docker-init -- sh -c ")).toBe(true);
    // An ELF binary: the init itself, bound where the link leads inside the container's root (the
    // host's file of that path is not what the container sees there).
    expect(head).toMatch(/177 +E +L +F/);
    expect(target).toMatch(/177 +E +L +F/);
    canary.expectUntouched(ran.stdout, ran.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("says in one line that the image has a directory where the init goes, and records no running container", () => {
    const store = world.store(mode);
    const ctx = world.context({ Dockerfile: "FROM busybox\nRUN mkdir -p /sbin/docker-init/sub\n" });
    expect(world.tbuild(mode, store, ["build", "-q", "-t", "dir-init", ctx]).status).toBe(0);
    const ran = world.tbuild(mode, store, ["run", "--rm", "--init", "dir-init", "true"]);
    expect(ran.status).toBe(1);
    expect(ran.stderr).toBe(
      "ERROR: --init: cannot bind the init at /sbin/docker-init in image dir-init (not a directory): the image has something else there; run it without --init\n",
    );
    expect(world.tbuild(mode, store, ["ps", "-a", "-q"]).stdout).toBe("");
    world.expectStoreUsable(mode, store);
  });
});
