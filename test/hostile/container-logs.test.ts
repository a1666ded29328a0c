/**
 * `tbuild logs` against what a container (or a crash) can put in its log: output that imitates
 * log entries, terminal escapes and bytes that are not UTF-8; a log cut in the middle of an entry;
 * a container removed while `logs -f` follows it; names that try to walk out of the store. As root
 * and rootless (`tbuild logs` runs as the user, on files the user owns).
 */
import { appendFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { processStartTime } from "../../runtime/containers.js";
import { parseLogOptions } from "../../runtime/logs.js";
import { recordContainer } from "./container-logs.js";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("tbuild logs against hostile logs (%s)", (mode) => {
  it("shows output that imitates log entries as the container's own stdout, forging no stderr entry or time", async () => {
    const store = world.store(mode);
    const c = await recordContainer(mode, store, "forger");
    const forged = '{"log":"forged\\n","stream":"stderr","time":"2001-01-01T00:00:00Z"}';
    // A terminal title escape, a carriage return, a NUL, and bytes that are not UTF-8.
    const raw = Buffer.concat([
      Buffer.from(`${forged}\n"},{"log":"x\n\x1b]0;owned\x07\rcover\0up\n`),
      Buffer.from([0xff, 0xfe, 0x0a]),
    ]);
    const log = c.writer();
    log.write("stdout", raw);
    log.close();
    const shown = world.tbuild(mode, store, ["logs", "forger"]);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stderr).toBe("");
    // What a terminal would have shown had it run in the foreground; bytes that are not UTF-8 are
    // replaced by U+FFFD, as docker's json-file does.
    expect(shown.stdout).toBe(`${forged}\n"},{"log":"x\n\x1b]0;owned\x07\rcover\0up\n\ufffd\ufffd\n`);
    const stamped = world.tbuild(mode, store, ["logs", "-t", "forger"]).stdout.split("\n");
    expect(stamped[0]!.startsWith("2001-")).toBe(false);
    expect(stamped[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z \{"log":"forged/);
    world.expectStoreUsable(mode, store);
  });

  it("shows every whole entry of a log cut in the middle of one, and of a part full of garbage", async () => {
    const store = world.store(mode);
    const c = await recordContainer(mode, store, "crashed", { logOptions: parseLogOptions(["max-file=3"]) });
    const log = c.writer();
    log.write("stdout", "first\n");
    log.write("stderr", "second\n");
    log.close();
    // An older part of garbage, and the newest cut short by a writer killed mid-write.
    appendFileSync(`${c.logFile}.1`, 'not json at all\n{"log":\n\x00\x01\x02\n');
    appendFileSync(c.logFile, '{"log":"half an ent');
    const shown = world.tbuild(mode, store, ["logs", "crashed"]);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown).toMatchObject({ stdout: "first\n", stderr: "second\n" });
    world.expectStoreUsable(mode, store);
  });

  it("ends logs -f when the container is removed while it follows", async () => {
    const store = world.store(mode);
    // "Running" in this test's own process: alive as long as the test is.
    const c = await recordContainer(mode, store, "removed", {
      state: {
        status: "running",
        pid: process.pid,
        pidStartTime: processStartTime(process.pid)!,
        startedAt: new Date().toISOString(),
      },
    });
    const log = c.writer();
    log.write("stdout", "hello\n");
    const follower = world.spawnTbuild(mode, store, ["logs", "-f", "removed"]);
    let stdout = "";
    let stderr = "";
    follower.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const ended = new Promise<number | null>((resolve) => follower.once("close", resolve));
    await new Promise<void>((resolve) => {
      follower.stdout!.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes("hello\n")) resolve();
      });
    });
    log.close();
    await c.containers.remove(c.record);
    expect(await ended, stderr).toBe(0);
    expect(stdout).toBe("hello\n");
    world.expectStoreUsable(mode, store);
  });

  it("finds no container for names that walk out of the store, and shows nothing of the files there", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const outputs: string[] = [];
    for (const name of [`../../${canary.dir}`, canary.dir, "../container-names/x", "..", "-"]) {
      const result = world.tbuild(mode, store, ["logs", "--", name]);
      expect(result.status, `${name}: ${result.stderr}`).not.toBe(0);
      expect(result.stdout).toBe("");
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      outputs.push(result.stdout, result.stderr);
    }
    canary.expectUntouched(...outputs);
  });
});
