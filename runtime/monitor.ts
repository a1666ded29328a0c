/**
 * A detached container's monitor: a small process of its own per container (`tbuild run -d`,
 * `tbuild start`), no daemon. It runs the container as a foreground `tbuild run` would, with the
 * container's output going to its log, serves the container's control socket (runtime/control.ts)
 * and records its exit; it ends with the container. It is started by the process that ran `run -d`
 * (with worker privileges: root, or inside tbuild's user namespace, which it keeps alive) in a
 * session of its own, out of reach of the terminal, and outlives it.
 *
 * The starter learns the outcome on a pipe (descriptor 3): `{"ok":true}` once the container's
 * command runs, or the error that kept it from starting, which it reports as `tbuild run` would.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, writeSync } from "node:fs";
import path from "node:path";
import { PassThrough, Writable } from "node:stream";
import { isTbuildError, TbuildError } from "../errors/index.js";
import type { Store } from "../oci/store/index.js";
import type { ContainerRecord } from "./containers.js";
import { ContainerStore } from "./containers.js";

/** The monitor's own messages (its warnings, an error after the start), beside the container's log. */
export const MONITOR_LOG = "monitor.log";

/** The internal command that runs a monitor (cli/commands.ts). */
export const MONITOR_COMMAND = "__container-monitor";

/** Set in a monitor's environment: the descriptor the outer tbuild's lifeline had is not one here. */
const LIFELINE_FD_VARIABLE = "TBUILD_USERNS_LIFELINE_FD";

interface StartReport {
  ok: boolean;
  code?: string;
  message?: string;
  exitCode?: number;
}

/**
 * Starts the monitor of `record` (a container recorded in `store`, not running) and resolves once
 * its command runs; rejects with the error that kept it from starting (its exit code kept).
 * `cliEntry` is tbuild's CLI script, which the monitor runs as.
 */
export async function startMonitor(
  store: Store,
  record: ContainerRecord,
  options: { cliEntry: string; env: NodeJS.ProcessEnv },
): Promise<void> {
  const containers = new ContainerStore(store.root);
  const logFd = openSync(path.join(containers.containerDir(record.id), MONITOR_LOG), "a", 0o600);
  const { [LIFELINE_FD_VARIABLE]: _lifeline, ...env } = options.env;
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(
      process.execPath,
      ["--min-semi-space-size=16", options.cliEntry, MONITOR_COMMAND, store.root, record.id],
      { stdio: ["ignore", "ignore", logFd, "pipe"], detached: true, cwd: "/", env },
    );
  } finally {
    closeSync(logFd);
  }
  const report = await new Promise<StartReport | undefined>((resolve, reject) => {
    let text = "";
    const pipe = child.stdio[3]!;
    pipe.on("data", (chunk: Buffer) => {
      text += chunk.toString("utf8");
    });
    pipe.on("error", () => {});
    child.once("error", reject);
    pipe.once("close", () => {
      const line = text.split("\n")[0];
      resolve(line ? (JSON.parse(line) as StartReport) : undefined);
    });
  });
  child.unref();
  if (report === undefined) {
    throw new TbuildError(
      "E_CONTAINER_MONITOR",
      `the monitor of container ${record.name} ended before starting it; see ${path.join(containers.containerDir(record.id), MONITOR_LOG)}`,
    );
  }
  if (!report.ok) {
    throw new TbuildError(
      report.code ?? "E_CONTAINER_START",
      report.message ?? "the container did not start",
      {
        ...(report.exitCode !== undefined ? { exitCode: report.exitCode } : {}),
      },
    );
  }
}

/**
 * The monitor itself (`tbuild __container-monitor STORE ID`): runs the container to its end and
 * resolves to 0. SIGTERM (a shutdown) stops the container as `tbuild stop` does.
 */
export async function runMonitor(storeRoot: string, id: string, env: NodeJS.ProcessEnv): Promise<number> {
  const reportFd = 3;
  let reported = false;
  const report = (message: StartReport) => {
    if (reported) return;
    reported = true;
    try {
      writeSync(reportFd, `${JSON.stringify(message)}\n`);
      closeSync(reportFd);
    } catch {
      // The starter is gone: no one to tell.
    }
  };
  try {
    const [{ openStore }, { Container }, { LogWriter }] = await Promise.all([
      import("../oci/store/index.js"),
      import("./container.js"),
      import("./logs.js"),
    ]);
    const store = await openStore(storeRoot);
    const containers = new ContainerStore(store.root);
    const record = await containers.read(id);
    if (record === undefined)
      throw new TbuildError("E_CONTAINER_UNKNOWN", `no container ${id} in ${storeRoot}`);
    record.detached = true;
    const warn = (message: string) => process.stderr.write(`WARNING: ${message}\n`);
    const container = await Container.open(store, record, { warn, env });
    const log = new LogWriter(containers.logFile(id), record.logOptions);
    let logClosed = false;
    const stream = (name: "stdout" | "stderr") =>
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          if (!logClosed) log.write(name, chunk);
          callback();
        },
        final(callback) {
          if (!logClosed) log.end(name);
          callback();
        },
      });
    // `-i` keeps the process's input open (nothing writes to it: there is no attach yet).
    const stdin = record.interactive ? new PassThrough() : "ignore";
    process.on("SIGTERM", () => void container.stop().catch(() => {}));
    process.on("SIGINT", () => void container.stop().catch(() => {}));
    process.on("SIGHUP", () => {});
    const closeLog = () => {
      if (!logClosed) log.close();
      logClosed = true;
    };
    try {
      await container.run({
        stdin,
        stdout: stream("stdout"),
        stderr: stream("stderr"),
        onRunning: () => report({ ok: true }),
        // Before the exit is recorded: `logs -f`, which ends on it, has read everything then.
        onExited: closeLog,
      });
    } finally {
      closeLog();
    }
    report({ ok: true });
    return 0;
  } catch (err) {
    if (!reported && isTbuildError(err)) {
      report({
        ok: false,
        code: err.code,
        message: err.message,
        ...(err.exitCode !== undefined ? { exitCode: err.exitCode } : {}),
      });
      return 1;
    }
    report({ ok: false, code: "E_CONTAINER_MONITOR", message: (err as Error).message });
    process.stderr.write(`${(err as Error).stack ?? err}\n`);
    return 1;
  }
}
