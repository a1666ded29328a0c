/**
 * The CI job's smoke test of the image it built, as Docker's getting-started material teaches it
 * and as root and rootless users run it: start the image detached with a published port, probe it,
 * read its log, look inside with exec, stop it, see it Exited, remove it, and find nothing left
 * running or mounted. Also the image's VOLUME across stop/start, and the deaths of tbuild's own
 * processes around a detached container.
 */
import { chmodSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, httpGet } from "../helpers/network.js";
import { tempDirs } from "../helpers/temp.js";
import { eventually, hostProcesses, type ModeEnv, modes, monitorsOf, setUpMode } from "./harness.js";

const tempDir = tempDirs();

/**
 * A small HTTP server image: busybox httpd logging each request, under a shell that ends on the
 * stop signal (a PID 1 without a handler would wait out the grace period, as in Docker), with a
 * VOLUME seeded from the image.
 */
const DOCKERFILE = `FROM busybox
RUN mkdir -p /www /data && echo hello from the image > /www/index.html && echo seeded > /data/seed
EXPOSE 8080
VOLUME /data
CMD ["sh", "-c", "trap 'exit 0' TERM; httpd -f -v -p 8080 -h /www & wait"]
`;

describe.each(modes())("the CI smoke-test pattern as $name", (mode) => {
  let env: ModeEnv;
  const names: string[] = [];
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
    const ctx = env.ownedDir("smoke");
    writeFileSync(path.join(ctx, "Dockerfile"), DOCKERFILE);
    chmodSync(path.join(ctx, "Dockerfile"), 0o644);
    env.ok(["build", "-q", "-t", "smoke-web", ctx]);
  }, 180_000);
  afterAll(() => {
    for (const name of names) env.run(["rm", "-f", "-v", name]);
  });

  /** Processes of this mode's containers: their monitors and forwarders, and the server itself. */
  function leftovers(): string[] {
    return [
      ...monitorsOf(env.store).map((pid) => `monitor ${pid}`),
      ...hostProcesses().filter(
        (p) => p.includes("dist/bundle/cli/forwarder.js") || p.startsWith("httpd -f -v -p 8080"),
      ),
    ];
  }

  /** The body of GET / on `port`, or `error: CODE` (test/helpers/network.ts). */
  async function answers(port: number): Promise<string> {
    return httpGet(port);
  }

  /**
   * The first answer on `port`: the port is published from the start, so a first connection may
   * find the server inside not listening yet, and is tried again.
   */
  async function firstAnswer(port: number): Promise<string> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const body = await httpGet(port);
      if (!body.startsWith("error: ") || Date.now() > deadline) return body;
      await sleep(100);
    }
  }

  it("run -d -p, curl, logs, exec, stop within the grace period, ps -a Exited, rm: nothing left", async () => {
    const port = await freePort();
    names.push("web");
    const id = env.ok(["run", "-d", "-p", `${port}:8080`, "--name", "web", "smoke-web"]).trim();
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    expect(await firstAnswer(port)).toBe("hello from the image\n");
    expect(env.ok(["ps"])).toMatch(new RegExp(`0\\.0\\.0\\.0:${port}->8080/tcp +web`));
    // httpd -v logs each request on its stderr: the log has it.
    const logs = env.run(["logs", "web"]);
    expect(logs.status).toBe(0);
    expect(logs.stderr).toMatch(/127\.0\.0\.1\]:\d+: response:200/);
    expect(env.ok(["exec", "web", "cat", "/etc/hostname"])).toBe(`${id.slice(0, 12)}\n`);
    // The shell ends on SIGTERM at once: stop returns well within the 300 s grace, with its code 0.
    expect(env.ok(["stop", "-t", "300", "web"])).toBe("web\n");
    expect(env.ok(["ps", "-a"])).toMatch(/Exited \(0\) .* web\n/);
    expect(await answers(port)).toBe("error: ECONNREFUSED");
    env.ok(["rm", "-v", "web"]);
    names.splice(names.indexOf("web"), 1);
    expect(env.ok(["ps", "-a", "-q"])).toBe("");
    expect(env.mountsInStore()).toEqual([]);
    expect(await eventually(() => leftovers().length === 0), leftovers().join("\n")).toBe(true);
  });

  it("two detached containers publish the same container port on different host ports; one host port twice is an error", async () => {
    const [first, second] = [await freePort(), await freePort()];
    names.push("one", "two", "three");
    env.ok(["run", "-d", "-p", `127.0.0.1:${first}:8080`, "--name", "one", "smoke-web"]);
    env.ok(["run", "-d", "-p", `127.0.0.1:${second}:8080`, "--name", "two", "smoke-web"]);
    expect([await firstAnswer(first), await firstAnswer(second)]).toEqual([
      "hello from the image\n",
      "hello from the image\n",
    ]);
    const clash = env.run(["run", "-d", "-p", `127.0.0.1:${first}:8080`, "--name", "three", "smoke-web"]);
    expect(clash.status).toBe(1);
    expect(clash.stderr).toMatch(
      new RegExp(`cannot publish 127\\.0\\.0\\.1:${first}/tcp: the port is already in use`),
    );
    expect(clash.stdout).toBe("");
    // The first still answers.
    expect(await answers(first)).toBe("hello from the image\n");
    for (const name of ["one", "two", "three"]) env.ok(["rm", "-f", "-v", name]);
    names.splice(0);
    expect(await eventually(() => leftovers().length === 0), leftovers().join("\n")).toBe(true);
  });

  it("data written to the image's VOLUME survives stop and start, and is gone after rm -v", () => {
    names.push("vol");
    env.ok(["run", "-d", "--network", "none", "--name", "vol", "smoke-web"]);
    expect(env.ok(["exec", "vol", "cat", "/data/seed"])).toBe("seeded\n");
    env.ok(["exec", "vol", "sh", "-c", "echo written > /data/mine"]);
    const volumes = env.ok(["volume", "ls", "-q"]).trim().split("\n");
    expect(volumes.length).toBe(1);
    env.ok(["stop", "vol"]);
    env.ok(["start", "vol"]);
    expect(env.ok(["exec", "vol", "cat", "/data/mine", "/data/seed"])).toBe("written\nseeded\n");
    env.ok(["stop", "vol"]);
    env.ok(["rm", "-v", "vol"]);
    names.splice(0);
    expect(env.ok(["volume", "ls", "-q"])).toBe("");
    expect(readdirSync(path.join(env.store, "volumes"))).toEqual([]);
  });

  it("killing tbuild processes outright: a detached container runs on; a foreground one is cleaned up", async () => {
    names.push("bg", "fg");
    env.ok(["run", "-d", "--network", "none", "--name", "bg", "smoke-web"]);
    // A `logs -f`, a `wait` and an `exec` of it, each killed with SIGKILL.
    for (const args of [
      ["logs", "-f", "bg"],
      ["wait", "bg"],
      ["exec", "bg", "sleep", "1000"],
    ]) {
      const spawned = env.spawn(args);
      const pid = await spawned.tbuildPid();
      process.kill(pid, "SIGKILL");
      await spawned.exited;
    }
    expect(env.ok(["ps"])).toMatch(/ Up .* bg\n/);
    expect(env.ok(["exec", "bg", "cat", "/www/index.html"])).toBe("hello from the image\n");
    // The foreground one: its tbuild killed, its guard stops it and unmounts.
    const fg = env.spawn(["run", "--network", "none", "--name", "fg", "smoke-web"]);
    expect(await eventually(() => / Up .* fg\n/.test(env.ok(["ps"])))).toBe(true);
    process.kill(await fg.tbuildPid(), "SIGKILL");
    await fg.exited;
    expect(await eventually(() => /Exited .* fg\n/.test(env.ok(["ps", "-a"])))).toBe(true);
    // The detached one is still there, and answers.
    expect(env.ok(["exec", "bg", "true"])).toBe("");
    for (const name of ["bg", "fg"]) env.ok(["rm", "-f", "-v", name]);
    names.splice(0);
    expect(env.mountsInStore()).toEqual([]);
    expect(await eventually(() => leftovers().length === 0), leftovers().join("\n")).toBe(true);
  });
});
