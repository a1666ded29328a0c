/**
 * The container log (runtime/logs.ts) and `tbuild logs`: fed by a LogWriter directly, for a
 * container recorded by hand (the detached monitor that feeds it in real use is tested end to end
 * with `run -d`). `tbuild logs` runs as each mode's user, on files that user owns.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { type ContainerRecord, ContainerStore, processStartTime } from "../../runtime/containers.js";
import { LogWriter, parseLogOptions } from "../../runtime/logs.js";
import { tempDirs } from "../helpers/temp.js";
import { ModeEnv, modes } from "./harness.js";

const tempDir = tempDirs();

/** RFC 3339 with up to nine digits of fraction, in UTC, as docker's json-file stores it. */
const STORED_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/;

function entries(file: string): { log: string; stream: string; time: string }[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}

describe("the json-file log writer", () => {
  it("writes an entry per line, keeps a line cut across chunks whole, and flushes the unfinished tail at the end", () => {
    const file = path.join(tempDir("log"), "container.log");
    const log = new LogWriter(file);
    log.write("stdout", Buffer.from("one\ntw"));
    log.write("stderr", Buffer.from("oops\n"));
    log.write("stdout", Buffer.from("o\nthree"));
    // A character's bytes split between chunks stay one character.
    const snowman = Buffer.from("☃\n");
    log.write("stderr", snowman.subarray(0, 1));
    log.write("stderr", snowman.subarray(1));
    log.close();
    const written = entries(file);
    expect(written.map(({ log, stream }) => [stream, log])).toEqual([
      ["stdout", "one\n"],
      ["stderr", "oops\n"],
      ["stdout", "two\n"],
      ["stderr", "☃\n"],
      ["stdout", "three"],
    ]);
    for (const entry of written) expect(entry.time).toMatch(STORED_TIME);
    expect(Object.keys(written[0]!)).toEqual(["log", "stream", "time"]);
  });

  it("cuts a line longer than 16 KiB into entries of 16 KiB, as docker does", () => {
    const file = path.join(tempDir("log"), "container.log");
    const log = new LogWriter(file);
    const long = "x".repeat(40 * 1024);
    log.write("stdout", `${long.slice(0, 20_000)}`);
    log.write("stdout", `${long.slice(20_000)}\n`);
    log.close();
    const sizes = entries(file).map((e) => e.log.length);
    expect(sizes).toEqual([16384, 16384, 40 * 1024 - 2 * 16384 + 1]);
    expect(
      entries(file)
        .map((e) => e.log)
        .join(""),
    ).toBe(`${long}\n`);
  });

  it("rotates at max-size and keeps max-file parts, the newest in container.log", () => {
    const dir = tempDir("log");
    const file = path.join(dir, "container.log");
    const options = parseLogOptions(["max-size=1k", "max-file=3"]);
    const log = new LogWriter(file, options);
    for (let i = 0; i < 200; i++) log.write("stdout", `line ${i}\n`);
    log.close();
    expect(readdirSync(dir).sort()).toEqual(["container.log", "container.log.1", "container.log.2"]);
    for (const part of readdirSync(dir))
      expect(statSync(path.join(dir, part)).size).toBeLessThanOrEqual(1024);
    // The parts, oldest first, hold the last lines in order, ending with the last written.
    const lines = ["container.log.2", "container.log.1", "container.log"].flatMap((p) =>
      entries(path.join(dir, p)).map((e) => e.log),
    );
    const first = Number(/line (\d+)/.exec(lines[0]!)![1]);
    expect(first).toBeGreaterThan(0);
    expect(lines).toEqual(Array.from({ length: 200 - first }, (_, i) => `line ${first + i}\n`));
  });

  it("refuses bad --log-opt values with a usage error naming the option", () => {
    expect(parseLogOptions(["max-size=20m", "max-file=5"])).toEqual({
      maxSize: 20 * 1024 * 1024,
      maxFile: 5,
    });
    expect(() => parseLogOptions(["max-size=lots"])).toThrow(/--log-opt max-size=lots: max-size is/);
    expect(() => parseLogOptions(["max-file=0"])).toThrow(/--log-opt max-file=0: max-file is/);
    expect(() => parseLogOptions(["mode=non-blocking"])).toThrow(/knows max-size=SIZE and max-file=N only/);
  });

  it("keeps up with a fast writer: 100 MB of short lines", () => {
    const dir = tempDir("log");
    const file = path.join(dir, "container.log");
    const log = new LogWriter(file);
    const line =
      "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefgh\n";
    // Whole lines, handed over in 64 KiB chunks as a pipe delivers them, most cutting a line.
    const lines = Buffer.from(line.repeat(16384));
    const chunks: Buffer[] = [];
    for (let at = 0; at < lines.length; at += 65536) chunks.push(lines.subarray(at, at + 65536));
    const start = process.hrtime.bigint();
    let written = 0;
    while (written < 100 * 1024 * 1024) {
      for (const chunk of chunks) log.write("stdout", chunk);
      written += lines.length;
    }
    log.close();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(`LogWriter: 100 MiB of ${line.length}-byte lines in ${seconds.toFixed(2)} s`);
    // Three parts of at most 10 MiB each, all whole entries.
    expect(readdirSync(dir).sort()).toEqual(["container.log", "container.log.1", "container.log.2"]);
    expect(entries(`${file}.1`).every((e) => e.log === line)).toBe(true);
  });
});

describe.each(modes())("tbuild logs as $name", (mode) => {
  /** A store with a container recorded by hand, its log written by `feed`, all owned by the mode's user. */
  function world(state: ContainerRecord["state"], logOptions = parseLogOptions([])) {
    const env = new ModeEnv(mode, tempDir);
    const containers = new ContainerStore(env.store);
    const record: ContainerRecord = {
      id: "a".repeat(64),
      name: "web",
      created: new Date().toISOString(),
      image: {
        name: "busybox",
        descriptor: {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          digest: `sha256:${"b".repeat(64)}`,
          size: 1,
        },
      },
      config: {},
      path: "httpd",
      args: [],
      mounts: [],
      network: "host",
      tty: false,
      interactive: false,
      logOptions,
      state,
    };
    /** Runs `fn` (synchronous) as the mode's user, as the process writing a real container's log runs. */
    const asUser = <T>(fn: () => T): T => {
      if (!mode.user) return fn();
      process.setegid!(mode.user.gid);
      process.seteuid!(mode.user.uid);
      try {
        return fn();
      } finally {
        process.seteuid!(0);
        process.setegid!(0);
      }
    };
    const own = () => {
      if (mode.user)
        execFileSync("chown", ["-R", `${mode.user.uid}:${mode.user.gid}`, path.dirname(env.store)]);
    };
    return {
      env,
      record,
      containers,
      async create() {
        await containers.create(record, "web");
        own();
      },
      /** A writer whose every call runs as the mode's user. */
      writer() {
        const log = asUser(() => new LogWriter(containers.logFile(record.id), logOptions));
        return {
          write: (stream: "stdout" | "stderr", text: string) => asUser(() => log.write(stream, text)),
          close: () => asUser(() => log.close()),
        };
      },
      own,
    };
  }

  it("shows stdout entries on stdout and stderr entries on stderr, -t with docker's times, --tail the last lines", async () => {
    const w = world({ status: "exited", exitCode: 0 });
    await w.create();
    const log = w.writer();
    log.write("stdout", "GET / 200\nGET /a 404\n");
    log.write("stderr", "warning: slow\n");
    log.write("stdout", "GET /b 200\n");
    log.close();
    const plain = w.env.run(["logs", "web"]);
    expect(plain).toMatchObject({
      status: 0,
      stdout: "GET / 200\nGET /a 404\nGET /b 200\n",
      stderr: "warning: slow\n",
    });
    const stamped = w.env.run(["logs", "-t", "web"]).stdout.split("\n").filter(Boolean);
    expect(stamped).toHaveLength(3);
    for (const line of stamped) expect(line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z GET \//);
    expect(w.env.run(["logs", "--tail", "2", "web"])).toMatchObject({
      stdout: "GET /b 200\n",
      stderr: "warning: slow\n",
    });
    expect(w.env.run(["logs", "--tail", "0", "web"])).toMatchObject({ status: 0, stdout: "", stderr: "" });
    // A time after every entry leaves none; one before all leaves all.
    expect(w.env.run(["logs", "--since", "2999-01-01T00:00:00Z", "web"]).stdout).toBe("");
    expect(w.env.run(["logs", "--since", "1h", "web"]).stdout).toBe(plain.stdout);
    expect(w.env.run(["logs", "--tail", "many", "web"])).toMatchObject({ status: 2 });
    if (mode.user) {
      const owner = statSync(w.containers.logFile(w.record.id)).uid;
      expect(owner).toBe(mode.user.uid);
    }
  });

  it("reads the rotated parts first", async () => {
    const w = world({ status: "exited", exitCode: 0 }, parseLogOptions(["max-size=200", "max-file=4"]));
    await w.create();
    const log = w.writer();
    for (let i = 0; i < 6; i++) log.write(i % 2 ? "stderr" : "stdout", `line ${i}\n`);
    log.close();
    expect(existsSync(`${w.containers.logFile(w.record.id)}.2`)).toBe(true);
    const shown = w.env.run(["logs", "-t", "web"]);
    const lines = [...shown.stdout.split("\n"), ...shown.stderr.split("\n")].filter(Boolean).sort();
    expect(lines.map((l) => l.slice(l.indexOf(" ") + 1))).toEqual(
      Array.from({ length: 6 }, (_, i) => `line ${i}`),
    );
  });

  it("says that only containers started with -d keep a log, for one run in the foreground", async () => {
    const w = world({ status: "exited", exitCode: 0 });
    await w.create();
    const result = w.env.run(["logs", "web"]);
    expect(result.status).toBe(1);
    expect(result.stderr.trim().split("\n")).toEqual([
      "ERROR: container web has no log: only containers started with 'tbuild run -d' keep one (a container run in the foreground wrote its output to the terminal)",
    ]);
  });

  it("follows new output across a rotation with -f, and ends when the container stops running", async () => {
    // "Running" in the tbuild process running this test: alive as long as the test is.
    const pidStartTime = processStartTime(process.pid)!;
    const w = world(
      { status: "running", pid: process.pid, pidStartTime, startedAt: new Date().toISOString() },
      parseLogOptions(["max-size=300", "max-file=2"]),
    );
    await w.create();
    const log = w.writer();
    log.write("stdout", "before\n");
    const follower = w.env.spawn(["logs", "-f", "web"]);
    const seen = (text: string) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (follower.output().stdout.includes(text)) {
            follower.child.stdout!.off("data", check);
            resolve();
          }
        };
        follower.child.stdout!.on("data", check);
        follower.exited.then(() =>
          reject(new Error(`logs -f ended before ${text}: ${JSON.stringify(follower.output())}`)),
        );
        check();
      });
    await seen("before\n");
    log.write("stdout", "first request\n");
    await seen("first request\n");
    // Enough to rotate the 300-byte part more than once while it watches.
    for (let i = 0; i < 6; i++) {
      log.write("stdout", `request ${i}\n`);
      await seen(`request ${i}\n`);
    }
    expect(existsSync(`${w.containers.logFile(w.record.id)}.1`)).toBe(true);
    log.close();
    w.record.state = { status: "exited", exitCode: 0, finishedAt: new Date().toISOString() };
    await w.containers.write(w.record);
    w.own();
    const { code } = await follower.exited;
    expect(code).toBe(0);
    expect(follower.output().stdout).toBe(
      ["before", "first request", ...Array.from({ length: 6 }, (_, i) => `request ${i}`)]
        .map((l) => `${l}\n`)
        .join(""),
    );
  });
});
