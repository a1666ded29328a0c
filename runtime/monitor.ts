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
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync } from "node:fs";
import { Socket } from "node:net";
import path from "node:path";
import { PassThrough, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { isTbuildError, TbuildError } from "../errors/index.js";
import type { Store } from "../oci/store/index.js";
import type { ContainerRecord } from "./containers.js";
import { ContainerStore } from "./containers.js";

/** The monitor's own messages (its warnings, an error after the start), beside the container's log. */
export const MONITOR_LOG = "monitor.log";

/**
 * The monitor's own script (runtime/monitor-main.ts): beside this module, in dist/runtime/ or, bundled,
 * in dist/bundle/cli/ (scripts/bundle.mjs).
 */
export function monitorEntry(): string {
  return fileURLToPath(new URL("./monitor-main.js", import.meta.url));
}

/** Where cli/boot.ts leaves the monitor it started early (a ChildProcess). */
export const EARLY_MONITOR = Symbol.for("tbuild.earlyMonitor");

/** Set in a monitor's environment: the descriptor the outer tbuild's lifeline had is not one here. */
const LIFELINE_FD_VARIABLE = "TBUILD_USERNS_LIFELINE_FD";

interface StartReport {
  ok: boolean;
  code?: string;
  message?: string;
  exitCode?: number;
}

/**
 * A monitor process started ahead of its container, so that its start-up overlaps the work of the
 * `tbuild run -d` that will hand it the container: it waits on its descriptor 3 for `STORE ID`, or
 * ends quietly when that pipe closes unused.
 */
export class PendingMonitor {
  private readonly child: ChildProcess;
  private used = false;

  private constructor(child: ChildProcess) {
    this.child = child;
  }

  /** Starts a monitor that waits for its container. */
  static spawn(options: { env: NodeJS.ProcessEnv }): PendingMonitor {
    const { [LIFELINE_FD_VARIABLE]: _lifeline, ...env } = options.env;
    const child = spawn(process.execPath, ["--min-semi-space-size=16", monitorEntry()], {
      // Its stderr goes to the container's monitor.log once it knows its container.
      stdio: ["ignore", "ignore", "ignore", "pipe"],
      detached: true,
      cwd: "/",
      env,
    });
    child.on("error", () => {});
    child.stdio[3]?.on("error", () => {});
    // Neither it nor its pipe keeps this process alive.
    child.unref();
    (child.stdio[3] as Socket | null)?.unref();
    return new PendingMonitor(child);
  }

  /**
   * The monitor the CLI's first module started for the `tbuild run -d` this process is (cli/boot.ts),
   * if any, once: its Node started while the image was resolved and the container recorded.
   */
  static take(): PendingMonitor | undefined {
    const holder = globalThis as { [EARLY_MONITOR]?: ChildProcess };
    const child = holder[EARLY_MONITOR];
    delete holder[EARLY_MONITOR];
    return child === undefined ? undefined : new PendingMonitor(child);
  }

  /** Lets the monitor go unused: it ends when its pipe closes. */
  abandon(): void {
    if (this.used) return;
    this.used = true;
    this.child.stdio[3]?.destroy();
  }

  /**
   * Hands it `record` and resolves once the container's command runs; rejects with the error that
   * kept it from starting (its exit code kept).
   */
  async start(store: Store, record: ContainerRecord): Promise<void> {
    if (this.used) throw new TbuildError("E_CONTAINER_MONITOR", "this monitor has been used already");
    this.used = true;
    const pipe = this.child.stdio[3] as Socket;
    pipe.ref();
    const report = new Promise<StartReport | undefined>((resolve, reject) => {
      let text = "";
      pipe.on("data", (chunk: Buffer) => {
        text += chunk.toString("utf8");
      });
      this.child.once("error", reject);
      pipe.once("close", () => {
        const line = text.split("\n")[0];
        resolve(line ? (JSON.parse(line) as StartReport) : undefined);
      });
    });
    pipe.write(`${JSON.stringify({ store: store.root, id: record.id })}\n`);
    const outcome = await report;
    pipe.unref();
    checkReport(outcome, store, record);
  }
}

/**
 * Starts the monitor of `record` (a container recorded in `store`, not running) and resolves once
 * its command runs; rejects with the error that kept it from starting (its exit code kept).
 * `pending`: one started already.
 */
export async function startMonitor(
  store: Store,
  record: ContainerRecord,
  options: { env: NodeJS.ProcessEnv; pending?: PendingMonitor },
): Promise<void> {
  const monitor = options.pending ?? PendingMonitor.take() ?? PendingMonitor.spawn(options);
  await monitor.start(store, record);
}

function checkReport(report: StartReport | undefined, store: Store, record: ContainerRecord): void {
  const log = path.join(new ContainerStore(store.root).containerDir(record.id), MONITOR_LOG);
  if (report === undefined) {
    throw new TbuildError(
      "E_CONTAINER_MONITOR",
      `the monitor of container ${record.name} ended before starting it; see ${log}`,
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

/** The descriptor a monitor is handed its container on, and reports its start on. */
const CHANNEL_FD = 3;

/**
 * The monitor itself (`tbuild __container-monitor`): waits for its container on its channel
 * (nothing comes when it was started ahead and not needed: it ends), runs it to its end, and
 * resolves to 0. SIGTERM (a shutdown) stops the container as `tbuild stop` does. Its own messages
 * go to the container's monitor.log.
 */
export async function runMonitor(env: NodeJS.ProcessEnv): Promise<number> {
  // Loaded while the container is being recorded by the tbuild that started this monitor: by
  // the time it is handed over, what runs it is ready.
  const modules = Promise.all([
    import("../oci/store/index.js"),
    import("./container.js"),
    import("./logs.js"),
    import("../worker/sandbox/index.js"),
  ]);
  modules.catch(() => {});
  const channel = new Socket({ fd: CHANNEL_FD, readable: true, writable: true });
  channel.on("error", () => {});
  const assignment = await new Promise<{ store: string; id: string } | undefined>((resolve) => {
    let text = "";
    const onData = (chunk: Buffer) => {
      text += chunk.toString("utf8");
      const end = text.indexOf("\n");
      if (end < 0) return;
      channel.off("data", onData);
      resolve(JSON.parse(text.slice(0, end)) as { store: string; id: string });
    };
    channel.on("data", onData);
    channel.once("end", () => resolve(undefined));
    channel.once("close", () => resolve(undefined));
  });
  if (assignment === undefined) return 0;
  const { store: storeRoot, id } = assignment;
  const containers = new ContainerStore(storeRoot);
  const monitorLog = path.join(containers.containerDir(id), MONITOR_LOG);
  const note = (text: string) => {
    try {
      appendFileSync(monitorLog, text, { mode: 0o600 });
    } catch {
      // Nowhere to say it.
    }
  };
  let reported = false;
  const report = (message: StartReport) => {
    if (reported) return;
    reported = true;
    channel.end(`${JSON.stringify(message)}\n`);
  };
  try {
    const [{ openStore }, { Container }, { LogWriter }] = await modules;
    const store = await openStore(storeRoot);
    const record = await containers.read(id);
    if (record === undefined)
      throw new TbuildError("E_CONTAINER_UNKNOWN", `no container ${id} in ${storeRoot}`);
    record.detached = true;
    const warn = (message: string) => note(`WARNING: ${message}\n`);
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
        onRunning: () => {
          report({ ok: true });
        },
        // Before the exit is recorded: `logs -f`, which ends on it, has read everything then.
        onExited: () => {
          closeLog();
        },
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
    note(`${(err as Error).stack ?? err}\n`);
    return 1;
  }
}
