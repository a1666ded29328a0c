/**
 * `tbuild logs`: a detached container's output, as `docker logs` shows it: stdout entries to
 * stdout, stderr entries to stderr, oldest first. Plain files the user owns (runtime/logs.ts): no
 * user namespace is needed. `-f` follows the log until the container stops running, woken by
 * changes in the container's directory, never by a timer.
 */
import { closeSync, existsSync } from "node:fs";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import { ContainerStore, currentState } from "../../runtime/containers.js";
import { DEFAULT_LOG_OPTIONS, displayTime, followLog, type LogEntry, readLog } from "../../runtime/logs.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length !== 1)
    throw new UsageError("tbuild logs takes one container (a name or an ID)");
  const tail = parseTail(args.values.tail as string | undefined);
  const since =
    args.values.since === undefined ? undefined : parseSince(args.values.since as string, Date.now());
  const timestamps = args.values.timestamps === true;
  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  const record = await containers.find(args.positionals[0]!);
  const file = containers.logFile(record.id);
  const maxFile = record.logOptions?.maxFile ?? DEFAULT_LOG_OPTIONS.maxFile;
  const emit = (entry: LogEntry) => {
    const out = entry.stream === "stderr" ? ctx.stderr : ctx.stdout;
    out.write(timestamps ? `${displayTime(entry.time)} ${entry.log}` : entry.log);
  };
  const position = readLog(file, maxFile, emit, {
    ...(tail !== undefined ? { tail } : {}),
    ...(since !== undefined ? { since } : {}),
  });
  if (position === undefined) {
    throw new TbuildError(
      "E_NO_LOG",
      `container ${record.name} has no log: only containers started with 'tbuild run -d' keep one (a container run in the foreground wrote its output to the terminal)`,
    );
  }
  if (args.values.follow !== true) {
    closeSync(position.fd);
    return 0;
  }
  const running = async () => {
    const now = await containers.read(record.id);
    return now !== undefined && currentState(now).status === "running";
  };
  // A removal unlinks the record first, then the directory with the log: from its first step on,
  // an error of the follow (a file or the watched directory going away) is the container's end.
  const recordFile = path.join(containers.containerDir(record.id), "container.json");
  await followLog(file, position, emit, running, ctx.signal, () => !existsSync(recordFile));
  return 0;
}

/** `--tail N|all`. */
function parseTail(text: string | undefined): number | undefined {
  if (text === undefined || text === "all") return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`--tail ${text}: give a number of lines, or all`);
  return Number(text);
}

/**
 * `--since`: an RFC 3339 time (`2026-12-07T15:04:05Z`, a fraction and an offset allowed), a Unix
 * time in seconds, or a duration before now (`10m`, `1h30m`, `45s`), as docker takes it; the
 * result in the form displayTime gives, to compare with entries' times.
 */
export function parseSince(text: string, now: number): string {
  let ms: number | undefined;
  const duration = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$/.exec(text);
  if (text !== "" && duration) {
    const [, h, m, s] = duration;
    ms = now - ((Number(h ?? 0) * 60 + Number(m ?? 0)) * 60 + Number(s ?? 0)) * 1000;
  } else if (/^\d+(\.\d+)?$/.test(text)) {
    ms = Number(text) * 1000;
  } else if (/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(text)) {
    ms = Date.parse(text);
  }
  if (ms === undefined || Number.isNaN(ms)) {
    throw new UsageError(
      `--since ${text}: give an RFC 3339 time (2026-12-07T15:04:05Z), a Unix time in seconds, or a duration before now (10m, 1h30m)`,
    );
  }
  // Nanoseconds of an RFC 3339 fraction beyond the milliseconds a Date keeps.
  const fraction = /\.(\d+)/.exec(text.includes("T") ? text : "")?.[1];
  const base = new Date(Math.floor(ms / 1000) * 1000).toISOString().slice(0, 19);
  const nanos =
    fraction !== undefined && text.endsWith("Z")
      ? fraction.padEnd(9, "0").slice(0, 9)
      : String((ms % 1000) * 1_000_000).padStart(9, "0");
  return `${base}.${nanos}Z`;
}
