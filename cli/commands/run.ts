import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { isTbuildError, TbuildError, UsageError } from "../../errors/index.js";
import { parsePlatform } from "../../oci/platform.js";
import { parseEnvFile, parseEnvFlags } from "../../runtime/config.js";
import { parseLogOptions } from "../../runtime/logs.js";
import {
  parseVolumeFlag,
  relabelDecision,
  relabelOption,
  selinuxEnforceState,
} from "../../runtime/mounts.js";
import { type NetworkFlags, networkSettings } from "../../runtime/ports.js";
import { parseSignal } from "../../runtime/signals.js";
import { reexecInUserNamespace } from "../../worker/userns.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

/** Signals `docker run` passes on to the container's process (its sig-proxy), as tbuild does. */
const FORWARDED_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  const [imageText, ...commandArgs] = args.positionals;
  if (imageText === undefined) throw new UsageError("tbuild run needs an IMAGE (and optionally a command)");
  const values = args.values;
  const networkFlags: NetworkFlags = {
    ...(values.network !== undefined ? { network: values.network as string } : {}),
    publish: (values.publish as string[] | undefined) ?? [],
    publishAll: values["publish-all"] === true,
    ...(values.hostname !== undefined ? { hostname: values.hostname as string } : {}),
    dns: (values.dns as string[] | undefined) ?? [],
    addHosts: (values["add-host"] as string[] | undefined) ?? [],
  };
  // Checked before a rootless re-exec (the image's EXPOSEs are not known yet: none assumed).
  const network = networkSettings(networkFlags, {}).network;
  if (values.platform) parsePlatform(values.platform as string);
  // Checked before a rootless re-exec: a bad -v is the user's to fix at once.
  for (const v of (values.volume as string[] | undefined) ?? []) {
    parseVolumeFlag(v, ctx.cwd, () => "check");
    // An enforcing SELinux refuses :z at once; the note where it is off comes from the run itself.
    if (relabelOption(v) !== undefined) relabelDecision(v, selinuxEnforceState());
  }
  const env: string[] = [];
  for (const file of (values["env-file"] as string[] | undefined) ?? []) {
    env.push(...parseEnvFile(await readEnvFile(path.resolve(ctx.cwd, file), file), file, ctx.env));
  }
  env.push(...parseEnvFlags((values.env as string[] | undefined) ?? [], ctx.env));
  const logOptions =
    values["log-opt"] === undefined ? undefined : parseLogOptions(values["log-opt"] as string[]);
  const tty = values.tty === true;
  const interactive = values.interactive === true;
  const detach = values.detach === true;
  const restart = values.restart as string | undefined;
  if (restart !== undefined && restart !== "no") {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      `--restart ${restart}: restart policies are not supported yet (tbuild has no daemon to restart containers); only --restart no`,
    );
  }
  if (values["stop-signal"] !== undefined) parseSignal(values["stop-signal"] as string);
  const stopTimeout = parseStopTimeout(values["stop-timeout"] as string | undefined);
  if (detach && tty) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      "-d with -t is not supported yet (a detached container's terminal): drop -t; `tbuild exec -it` gives one to a running container",
    );
  }
  if (tty && interactive && !process.stdin.isTTY) {
    throw new UsageError("the input device is not a TTY: drop -t, or run tbuild from a terminal");
  }
  if (tty && !detach && !hasControllingTerminal()) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      "-t without a terminal is not supported yet (runc in the foreground needs tbuild's own terminal): run tbuild in a terminal, or drop -t",
    );
  }

  // Everything below touches snapshots: an unprivileged user re-runs this command as root of a
  // user namespace over its subordinate ids (and the re-run does all of it, the pull included).
  const code = await reexecInUserNamespace(process.argv.slice(2), ctx.env);
  if (code !== undefined) return code;

  // Once the process runs, a signal to tbuild is the container's (docker's sig-proxy): the CLI's own
  // handlers, which cancel the command, are set aside until it ends.
  const saved = FORWARDED_SIGNALS.map((signal) => [signal, process.listeners(signal)] as const);
  let forwarding = false;
  let forward: (signal: NodeJS.Signals) => void = () => {};
  try {
    const { run: runContainer } = await import("../../index.js");
    const result = await runContainer(imageText, {
      command: commandArgs,
      ...(values.entrypoint !== undefined ? { entrypoint: values.entrypoint as string } : {}),
      environment: env,
      ...(values.workdir !== undefined ? { workdir: values.workdir as string } : {}),
      ...(values.user !== undefined ? { user: values.user as string } : {}),
      volumes: (values.volume as string[] | undefined) ?? [],
      network,
      publish: networkFlags.publish!,
      publishAll: networkFlags.publishAll!,
      ...(networkFlags.hostname !== undefined ? { hostname: networkFlags.hostname } : {}),
      dns: networkFlags.dns!,
      addHosts: networkFlags.addHosts!,
      ...(values.name !== undefined ? { name: values.name as string } : {}),
      remove: values.rm === true,
      ...(detach ? { detach: true } : {}),
      ...(values["stop-signal"] !== undefined ? { stopSignal: values["stop-signal"] as string } : {}),
      ...(stopTimeout !== undefined ? { stopTimeout } : {}),
      ...(values.init === true ? { init: true } : {}),
      ...(logOptions ? { logOptions } : {}),
      ...(values.platform ? { platform: values.platform as string } : {}),
      tty,
      stdin: interactive ? "inherit" : "ignore",
      stdout: "inherit",
      stderr: "inherit",
      // Aborted on Ctrl-C, and, rootless, when the tbuild outside the user namespace is killed (main.ts).
      signal: ctx.signal,
      env: ctx.env,
      cwd: ctx.cwd,
      onWarning: (message) =>
        message.startsWith("Unable to find image") ? ctx.stderr.write(`${message}\n`) : ctx.warn(message),
      onStart: (container) => {
        forward = (signal) => {
          // A terminal's Ctrl-C and Ctrl-\ reach runc too, which shares tbuild's process group and
          // passes them on itself: passing them on again would deliver them twice.
          if (process.stdin.isTTY && (signal === "SIGINT" || signal === "SIGQUIT")) return;
          // SIGTERM stops the container as `tbuild stop` does, even when its PID 1 ignores the
          // signal: the stop signal, then SIGKILL after the grace period.
          if (signal === "SIGTERM") void container.stop().catch(() => {});
          else container.kill(signal);
        };
        forwarding = true;
        for (const [signal, listeners] of saved) {
          for (const listener of listeners) process.off(signal, listener);
          process.on(signal, forward);
        }
      },
    });
    // As docker prints it: the full ID of the container started.
    if (detach) ctx.stdout.write(`${result.id}\n`);
    return result.exitCode;
  } catch (err) {
    // Interrupted before the process started (while unpacking, say): the user's own doing.
    if (isTbuildError(err) && err.code === "E_CANCELED") {
      throw new TbuildError("E_INTERRUPTED", `${(ctx.signal.reason as Error)?.message ?? "interrupted"}`, {
        exitCode: 130,
      });
    }
    throw err;
  } finally {
    if (forwarding) {
      for (const [signal, listeners] of saved) {
        process.off(signal, forward);
        for (const listener of listeners) process.on(signal, listener as (signal: NodeJS.Signals) => void);
      }
    }
  }
}

/** Whether this process has a controlling terminal, which runc's foreground console mode uses. */
function hasControllingTerminal(): boolean {
  try {
    closeSync(openSync("/dev/tty", "r"));
    return true;
  } catch {
    return false;
  }
}

async function readEnvFile(file: string, shown: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw new UsageError(
      `--env-file ${shown}: cannot read it (${(err as NodeJS.ErrnoException).code ?? err})`,
    );
  }
}

/** `--stop-timeout SECONDS`: a whole number of seconds, 0 or more (docker's -1, wait for ever, too). */
export function parseStopTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^(-1|\d+)$/.test(text.trim())) {
    throw new UsageError(`--stop-timeout ${text}: a whole number of seconds (-1 waits for ever)`);
  }
  return Number(text);
}
