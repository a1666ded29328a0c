/**
 * Hostile containers on `tbuild run`'s private network (-p, --network private), as root and
 * rootless: the port forwarder and the user-mode network stack (slirp4netns with
 * `--disable-host-loopback`) must not hand the container the host's loopback services, and one
 * container cannot reach another's ports except through what that one published on the host.
 */
import { existsSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { freePort, hostAddress, httpGet, recordingServer } from "../helpers/network.js";
import { hostileWorld, MODES, mountsUnder } from "./harness.js";
import { tbuildAsync } from "./run-async.js";

const world = hostileWorld();

/** A shell line trying each `host port` in turn, printing `reached HOST:PORT` for each that answers. */
function probes(targets: string[]): string {
  return targets
    .map((t) => {
      const [host, port] = t.split(" ");
      return `if echo probe | nc -w 3 ${host} ${port} >/dev/null 2>&1; then echo reached ${host}:${port}; else echo blocked ${host}:${port}; fi`;
    })
    .join("; ");
}

describe.each(MODES)("a container's private network (%s)", (mode) => {
  it("cannot reach services on the host's loopback, by 127.0.0.1 or by slirp4netns's host alias", async () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const loopbackService = await recordingServer("127.0.0.1");
    try {
      const port = loopbackService.port;
      const published = await freePort();
      const result = await tbuildAsync(world, mode, store, [
        "run",
        "--rm",
        "-p",
        `127.0.0.1:${published}:8080`,
        "busybox",
        "sh",
        "-c",
        `${probes([`127.0.0.1 ${port}`, `10.0.2.2 ${port}`, `10.0.2.2 ${published}`])}; cat ${canary.dir}/secret`,
      ]);
      expect(result.stdout).toBe(
        `blocked 127.0.0.1:${port}\nblocked 10.0.2.2:${port}\nblocked 10.0.2.2:${published}\n`,
      );
      expect(loopbackService.connections()).toBe(0);
      canary.expectUntouched(result.stdout, result.stderr);
    } finally {
      await loopbackService.close();
    }
    world.expectStoreUsable(mode, store);
  });

  it("cannot reach another container's ports, only what that one published on the host", async () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const control = world.dir("control", mode);
    const published = await freePort();
    const address = hostAddress();
    // A: two servers, one published on every address of the host, one not published at all.
    const serverA = world.spawnTbuild(mode, store, [
      "run",
      "--rm",
      "-v",
      `${control}:/control`,
      "-p",
      `${published}:8080`,
      "busybox",
      "sh",
      "-c",
      "echo a > /a.html; httpd -p 8080 -h /; httpd -p 8081 -h /; echo ready; while [ ! -e /control/stop ]; do sleep 0.2; done",
    ]);
    let outputA = "";
    const ready = new Promise<boolean>((resolve) => {
      serverA.stdout!.on("data", (chunk: Buffer) => {
        outputA += chunk.toString();
        if (outputA.includes("ready\n")) resolve(true);
      });
      serverA.once("close", () => resolve(false));
    });
    serverA.stderr!.on("data", (chunk: Buffer) => {
      outputA += chunk.toString();
    });
    const exitedA = new Promise((resolve) => serverA.once("close", resolve));
    try {
      expect(await ready, outputA).toBe(true);
      // The published port answers from the host: the probes below can tell reached from blocked.
      expect(await httpGet(published, "127.0.0.1", "a.html")).toBe("a\n");
      const result = await tbuildAsync(world, mode, store, [
        "run",
        "--rm",
        "--network",
        "private",
        "busybox",
        "sh",
        "-c",
        probes([
          "127.0.0.1 8080",
          "127.0.0.1 8081",
          `10.0.2.2 ${published}`,
          `${address} 8081`,
          `${address} ${published}`,
        ]),
      ]);
      // The published port, on the host's own address, is the one way in: through slirp4netns,
      // where it can run (a user needs /dev/net/tun open to all).
      const outbound = mode === "root" || (statSync("/dev/net/tun").mode & 0o006) === 0o006;
      expect(result.stdout).toBe(
        `blocked 127.0.0.1:8080\nblocked 127.0.0.1:8081\nblocked 10.0.2.2:${published}\nblocked ${address}:8081\n${outbound ? "reached" : "blocked"} ${address}:${published}\n`,
      );
      canary.expectUntouched(result.stdout, result.stderr, outputA);
    } finally {
      writeFileSync(path.join(control, "stop"), "");
      await exitedA;
    }
    expect(existsSync(path.join(control, "stop"))).toBe(true);
    expect(mountsUnder(store)).toEqual([]);
    world.expectStoreUsable(mode, store);
  });
});
