import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/index.js";
import { type ContainerRecord, ContainerStore, currentState } from "../../runtime/containers.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";

/** One row of `tbuild ps`, and one element of `--format json`. */
export interface ContainerSummary {
  id: string;
  name: string;
  image: string;
  imageDigest: string;
  command: string;
  created: string;
  state: "created" | "running" | "exited";
  /** As docker shows it: `Up 5 seconds`, `Exited (0) 2 minutes ago`, `Created`. */
  status: string;
  exitCode?: number;
}

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild ps takes no arguments");
  const format = (args.values.format as string | undefined) ?? "table";
  if (format !== "table" && format !== "json")
    throw new UsageError(`--format must be table or json, not "${format}"`);
  // Records only: no snapshot is touched, so no user namespace is needed.
  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  const now = Date.now();
  const summaries = (await containers.list())
    .map((record) => summarize(record, now))
    .filter((s) => args.values.all === true || s.state === "running");
  if (format === "json") {
    ctx.stdout.write(`${JSON.stringify(summaries, null, 2)}\n`);
    return 0;
  }
  const rows = [
    ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"],
    ...summaries.map((s) => [
      s.id.slice(0, 12),
      s.image,
      JSON.stringify(truncate(s.command, 20)),
      `${humanDuration(now - Date.parse(s.created))} ago`,
      s.status,
      s.name,
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const row of rows) {
    ctx.stdout.write(
      `${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]! + 3))).join("")}\n`,
    );
  }
  return 0;
}

function summarize(record: ContainerRecord, now: number): ContainerSummary {
  const state = currentState(record);
  let status: string;
  if (state.status === "running") {
    status = `Up ${humanDuration(now - Date.parse(state.startedAt ?? record.created))}`;
  } else if (state.status === "exited") {
    const code = state.exitCode === undefined ? "unknown" : String(state.exitCode);
    const when = state.finishedAt ? ` ${humanDuration(now - Date.parse(state.finishedAt))} ago` : "";
    status = `Exited (${code})${when}`;
  } else {
    status = "Created";
  }
  return {
    id: record.id,
    name: record.name,
    image: record.image.name,
    imageDigest: record.image.descriptor.digest,
    command: [record.path, ...record.args].join(" "),
    created: record.created,
    state: state.status,
    status,
    ...(state.exitCode !== undefined ? { exitCode: state.exitCode } : {}),
  };
}

function truncate(text: string, length: number): string {
  return text.length <= length ? text : `${text.slice(0, length - 1)}…`;
}

/** Docker's (go-units) HumanDuration: `Less than a second`, `About a minute`, `3 hours`. */
export function humanDuration(ms: number): string {
  const seconds = Math.round(Math.max(0, ms) / 1000);
  if (seconds < 1) return "Less than a second";
  if (seconds === 1) return "1 second";
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.round(seconds / 60);
  if (minutes === 1) return "About a minute";
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(seconds / 3600);
  if (hours === 1) return "About an hour";
  if (hours < 48) return `${hours} hours`;
  if (hours < 24 * 7 * 2) return `${Math.floor(hours / 24)} days`;
  if (hours < 24 * 30 * 2) return `${Math.floor(hours / 24 / 7)} weeks`;
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24 / 30)} months`;
  return `${Math.floor(hours / 24 / 365)} years`;
}
