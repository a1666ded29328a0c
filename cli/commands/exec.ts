/**
 * `tbuild exec [-i] [-t] [-u USER] [-w DIR] [-e K=V] CONTAINER COMMAND...`: a process in a running
 * container, as `runc exec` runs it. The process running the container says, over its control
 * socket, how (runtime/control.ts ExecTarget: the container's own process settings with the exec's
 * command, user, directory and variables); this process runs runc itself, in the foreground, so a
 * terminal (-t) is its own. Rootless, runc runs inside the container's user namespace, entered
 * with nsenter (the owner of a namespace may enter it). No re-run of tbuild, no daemon.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { constants as osConstants, tmpdir } from "node:os";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { parseEnvFile, parseEnvFlags } from "../../runtime/config.js";
import { ContainerStore, currentState } from "../../runtime/containers.js";
import { ContainerNotRunningError, controlRequest } from "../../runtime/control.js";
import { hasWorkerPrivileges } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [text, ...command] = args.positionals;
  if (text === undefined || command.length === 0) {
    throw new UsageError("tbuild exec needs a CONTAINER and a COMMAND to run in it");
  }
  const values = args.values;
  const tty = values.tty === true;
  const interactive = values.interactive === true;
  if (tty && interactive && !process.stdin.isTTY) {
    throw new UsageError("the input device is not a TTY: drop -t, or run tbuild from a terminal");
  }
  const workdir = values.workdir as string | undefined;
  if (workdir !== undefined && !path.posix.isAbsolute(workdir)) {
    throw new UsageError(`-w ${workdir}: the working directory must be an absolute path`);
  }
  const env: string[] = [];
  for (const file of (values["env-file"] as string[] | undefined) ?? []) {
    const shown = file;
    const body = await readFile(path.resolve(ctx.cwd, file), "utf8").catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`--env-file ${shown}: cannot read it (${err.code ?? err})`);
    });
    env.push(...parseEnvFile(body, file, ctx.env));
  }
  env.push(...parseEnvFlags((values.env as string[] | undefined) ?? [], ctx.env));

  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  const record = await containers.find(text);
  if (currentState(record).status !== "running") throw new ContainerNotRunningError(record.name);
  const answer = await controlRequest(containers.containerDir(record.id), record.name, {
    op: "exec",
    args: command,
    env,
    ...(values.user !== undefined ? { user: values.user as string } : {}),
    ...(workdir !== undefined ? { workdir: path.posix.resolve(workdir) } : {}),
  });
  const target = answer.ok ? answer.exec : undefined;
  if (target === undefined) throw new ContainerNotRunningError(record.name);

  const processSpec: Record<string, unknown> = { ...target.process, terminal: tty };
  // As docker exec -t: a terminal's type for programs that draw on it, unless the exec sets one.
  if (tty && !target.process.env.some((entry) => entry.startsWith("TERM="))) {
    processSpec.env = [...target.process.env, "TERM=xterm"];
  }
  if (tty && process.stdout.isTTY) {
    processSpec.consoleSize = { height: process.stdout.rows, width: process.stdout.columns };
  }
  // runc's own error (a command not found) goes to its log, to tell it from the process's exit.
  const logDir = mkdtempSync(path.join(tmpdir(), "tbuild-exec-"));
  const logFile = path.join(logDir, "runc.log");
  // A file, not a pipe: runc opens it by path (a socket's /proc/self/fd link cannot be opened).
  const processFile = path.join(logDir, "process.json");
  writeFileSync(processFile, JSON.stringify(processSpec), { mode: 0o644 });
  const runcArgs = [
    ...target.runcGlobal,
    "--log",
    logFile,
    "--log-format",
    "json",
    "exec",
    "--process",
    processFile,
    target.sandboxId,
  ];
  // Outside the container's user namespace (rootless): runc runs inside it, as its root.
  const argv =
    target.namespacePid !== undefined && !hasWorkerPrivileges()
      ? ["nsenter", `--target=${target.namespacePid}`, "--user", "--", target.runc, ...runcArgs]
      : [target.runc, ...runcArgs];
  try {
    const exitCode = await new Promise<number>((resolve, reject) => {
      const child = spawn(argv[0]!, argv.slice(1), {
        stdio: [interactive ? "inherit" : "ignore", "inherit", "inherit"],
        env: { PATH: ctx.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" },
      });
      child.once("error", (err) =>
        reject(new TbuildError("E_EXEC", `cannot start ${argv[0]}: ${err.message}`, { cause: err })),
      );
      // The process's signals are its own: a terminal's reach it through runc (same process group).
      const forward = (signal: NodeJS.Signals) => child.kill(signal);
      const signals: NodeJS.Signals[] = process.stdin.isTTY
        ? ["SIGTERM", "SIGHUP"]
        : ["SIGTERM", "SIGHUP", "SIGINT"];
      const saved = signals.map((s) => [s, process.listeners(s)] as const);
      for (const [signal, listeners] of saved) {
        for (const listener of listeners) process.off(signal, listener);
        process.on(signal, forward);
      }
      child.once("close", (code, signal) => {
        for (const [s, listeners] of saved) {
          process.off(s, forward);
          for (const listener of listeners) process.on(s, listener as (s: NodeJS.Signals) => void);
        }
        resolve(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
      });
    });
    // runc failed to start the process, and said why on stderr: docker's exit codes tell it apart.
    if (exitCode === 255) return runcFailureExitCode(logFile) ?? exitCode;
    return exitCode;
  } finally {
    rmSync(logDir, { recursive: true, force: true });
  }
}

/** runc's own failure to start the process, from its log: 127 for a command not found, else 126. */
function runcFailureExitCode(logFile: string): number | undefined {
  let message: string | undefined;
  try {
    for (const line of readFileSync(logFile, "utf8").split("\n")) {
      if (!line.trim()) continue;
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if ((entry.level === "error" || entry.level === "fatal") && entry.msg) message = entry.msg;
    }
  } catch {
    return undefined;
  }
  if (message === undefined) return undefined;
  return /executable file not found|no such file or directory/i.test(message) ? 127 : 126;
}
