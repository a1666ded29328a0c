import { UsageError } from "../../errors/index.js";
import { defaultStoreRoot } from "../../oci/store/root.js";
import {
  type ContainerRecord,
  type ContainerStatus,
  ContainerStore,
  currentState,
  type PublishedPort,
} from "../../runtime/containers.js";
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
  /** The ports published while it runs, as bound. */
  ports: PublishedPort[];
}

/** `--filter KEY=VALUE`: values of one key are OR-ed, keys AND-ed, as docker's. */
interface Filters {
  status: ContainerStatus[];
  name: string[];
  id: string[];
}

const STATUSES: readonly ContainerStatus[] = ["created", "running", "exited"];

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild ps takes no arguments");
  const format = (args.values.format as string | undefined) ?? "table";
  if (format !== "table" && format !== "json")
    throw new UsageError(`--format must be table or json, not "${format}"`);
  const filters = parseFilters((args.values.filter as string[] | undefined) ?? []);
  const noTrunc = args.values["no-trunc"] === true;
  // Records only: no snapshot is touched, so no user namespace is needed.
  const containers = new ContainerStore(defaultStoreRoot(ctx.env));
  const now = Date.now();
  // A status filter shows what it names, stopped containers included, as docker's does.
  const all = args.values.all === true || filters.status.length > 0;
  const summaries = (await containers.list())
    .map((record) => summarize(record, now))
    .filter((s) => (all || s.state === "running") && matches(s, filters));
  if (args.values.quiet === true) {
    for (const s of summaries) ctx.stdout.write(`${noTrunc ? s.id : s.id.slice(0, 12)}\n`);
    return 0;
  }
  if (format === "json") {
    ctx.stdout.write(`${JSON.stringify(summaries, null, 2)}\n`);
    return 0;
  }
  const rows = [
    ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
    ...summaries.map((s) => [
      noTrunc ? s.id : s.id.slice(0, 12),
      s.image,
      JSON.stringify(noTrunc ? s.command : truncate(s.command, 20)),
      `${humanDuration(now - Date.parse(s.created))} ago`,
      s.status,
      formatPorts(s.ports),
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

function parseFilters(flags: readonly string[]): Filters {
  const filters: Filters = { status: [], name: [], id: [] };
  for (const flag of flags) {
    const eq = flag.indexOf("=");
    const key = flag.slice(0, Math.max(0, eq));
    const value = flag.slice(eq + 1);
    if (eq < 1 || value === "") {
      throw new UsageError(`--filter ${flag}: give KEY=VALUE, with KEY status, name or id`);
    }
    if (key === "status") {
      if (!STATUSES.includes(value as ContainerStatus)) {
        throw new UsageError(`--filter ${flag}: a status is ${STATUSES.join(", ")}`);
      }
      filters.status.push(value as ContainerStatus);
    } else if (key === "name" || key === "id") {
      filters[key].push(value);
    } else {
      throw new UsageError(`--filter ${flag}: tbuild ps filters by status, name or id`);
    }
  }
  return filters;
}

/** Docker's rules: a status exactly, a name containing the text, an ID starting with it. */
function matches(s: ContainerSummary, filters: Filters): boolean {
  if (filters.status.length > 0 && !filters.status.includes(s.state)) return false;
  if (filters.name.length > 0 && !filters.name.some((name) => s.name.includes(name))) return false;
  if (filters.id.length > 0 && !filters.id.some((id) => s.id.startsWith(id))) return false;
  return true;
}

/** As docker's PORTS column: `0.0.0.0:18080->8080/tcp, 127.0.0.1:5353->53/udp`. */
export function formatPorts(ports: readonly PublishedPort[]): string {
  return ports
    .map(
      (p) =>
        `${p.hostIp.includes(":") ? `[${p.hostIp}]` : p.hostIp}:${p.hostPort}->${p.containerPort}/${p.protocol}`,
    )
    .join(", ");
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
    // Bound only while it runs: a stopped container's are free again.
    ports: state.status === "running" ? (state.ports ?? []) : [],
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
