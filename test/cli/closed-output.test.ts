import { spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { tbuildBin } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

interface Ended {
  status: number | null;
  signal: NodeJS.Signals | null;
  /** What tbuild wrote to the stream that stayed open. */
  other: string;
}

/**
 * Runs tbuild with `closed` a pipe whose reader is gone before tbuild writes a byte (as after
 * `| head -1` has read its line), and the other stream captured.
 */
function runWithClosedPipe(
  args: string[],
  closed: "stdout" | "stderr",
  env: NodeJS.ProcessEnv = {},
): Promise<Ended> {
  const child = spawn(tbuildBin, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  child[closed].destroy();
  const other = closed === "stdout" ? child.stderr : child.stdout;
  let text = "";
  other.setEncoding("utf8").on("data", (chunk: string) => {
    text += chunk;
  });
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (status, signal) => resolve({ status, signal, other: text }));
  });
}

describe("a reader that closes the pipe early", () => {
  it("tbuild --help | head -1 ends with status 0 and nothing on stderr", async () => {
    expect(await runWithClosedPipe(["--help"], "stdout")).toEqual({ status: 0, signal: null, other: "" });
  });

  it("tbuild images and tbuild save to a closed stdout end quietly", async () => {
    const store = tempDir("closed-output");
    await importBusybox(store, "busybox");
    const env = { TBUILD_ROOT: store };
    expect(await runWithClosedPipe(["images"], "stdout", env)).toEqual({
      status: 0,
      signal: null,
      other: "",
    });
    expect(await runWithClosedPipe(["save", "busybox"], "stdout", env)).toEqual({
      status: 0,
      signal: null,
      other: "",
    });
  });

  it("a closed stderr ends tbuild quietly too, with no stack trace on stdout", async () => {
    const ended = await runWithClosedPipe(["debug", "graph", "examples/hello"], "stderr", {
      TBUILD_ROOT: tempDir("closed-stderr"),
    });
    expect(ended.status).toBe(0);
    expect(ended.other).not.toContain("EPIPE");
  });

  it("a build whose reader goes while a RUN step runs stops that step, cleans up and ends with status 0", async () => {
    const store = tempDir("closed-build");
    await importBusybox(store, "busybox");
    const dir = tempDir("closed-build-ctx");
    const token = randomUUID();
    // The step keeps writing, as a build does, so that tbuild's next write of its output meets the
    // closed pipe (the step would end by itself after half a minute).
    writeFileSync(
      path.join(dir, "Dockerfile"),
      `FROM busybox\nRUN echo started; i=0; while [ $i -lt 300 ]; do echo tick; sleep 0.1; i=$((i+1)); done; echo ${token}\n`,
    );
    const child = spawn(tbuildBin, ["build", "--progress=plain", dir], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, TBUILD_ROOT: store },
    });
    onTestFinished(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    });
    // As `tbuild build ... 2>&1 | grep -m1 started`: the reader leaves once the step has begun.
    let seen = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      seen += chunk;
      if (/\bstarted\n/.test(seen)) {
        child.stderr.destroy();
        child.stdout.destroy();
      }
    });
    const status = await new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", resolve);
    });
    expect(status).toBe(0);
    // No process of the step is left, and its root filesystem is unmounted and removed.
    const left = spawnSync("pgrep", ["-f", token], { encoding: "utf8" });
    expect(left.stdout).toBe("");
    expect(readdirSync(path.join(store, "snapshots", "mounts"))).toEqual([]);
  });
});
