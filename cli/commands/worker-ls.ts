/**
 * `tbuild worker ls`: the remote workers of config.toml (`[worker.NAME]`) and their pools, each
 * asked at once for its `info` within its timeout (as `docker buildx ls` asks its nodes): reachable
 * or why not, tbuild version, platforms, builds running (of `max-builds`), and the store's size.
 */

import { loadConfig } from "../../build/config.js";
import { configuredWorkers, probeWorkers } from "../../build/remote-target.js";
import { UsageError } from "../../errors/index.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { formatSize } from "../store.js";

/** One row of `tbuild worker ls`, and one element of `--format json`. */
export interface WorkerSummary {
  name: string;
  url: string;
  pools: string[];
  reachable: boolean;
  /** Why it is not reachable: a TbuildError's code and one-line message. */
  error?: { code: string; message: string };
  tbuild?: string;
  /** Platforms it builds natively: config.toml's `platforms`, else its own. */
  platforms?: string[];
  rootless?: boolean;
  store?: string;
  runningBuilds?: number;
  maxBuilds?: number;
  /** Bytes its store takes, as `tbuild du` totals them there. */
  cacheSize?: number;
}

export async function run(args: ParsedCommandLine, ctx: CommandContext): Promise<number> {
  if (args.positionals.length > 0) throw new UsageError("tbuild worker ls takes no arguments");
  const format = (args.values.format as string | undefined) ?? "table";
  if (format !== "table" && format !== "json")
    throw new UsageError(`--format must be table or json, not "${format}"`);
  const config = await loadConfig(ctx.env);
  const targets = configuredWorkers(config, ctx.env);
  if (targets.length === 0)
    ctx.warn(`${config.path} defines no worker: add a [worker.NAME] table (see docs/workers.md)`);
  const probes = await probeWorkers(targets, { signal: ctx.signal });
  const summaries: WorkerSummary[] = probes.map(({ target, info, error }) => ({
    name: target.name,
    url: target.url,
    pools: target.pools,
    reachable: info !== undefined,
    ...(error ? { error: { code: error.code, message: firstLine(error.message) } } : {}),
    ...(info
      ? {
          tbuild: info.tbuild,
          platforms: target.platforms ?? info.platforms,
          rootless: info.rootless === true,
          store: String(info.store),
          runningBuilds: info.runningBuilds,
          cacheSize: info.cacheSize,
        }
      : {}),
    ...(target.maxBuilds !== undefined ? { maxBuilds: target.maxBuilds } : {}),
  }));
  if (format === "json") {
    ctx.stdout.write(`${JSON.stringify(summaries, null, 2)}\n`);
    return 0;
  }
  const rows = [
    ["NAME", "URL", "POOLS", "VERSION", "PLATFORMS", "BUILDS", "CACHE", "REACHABLE"],
    ...summaries.map((s) => [
      s.name,
      s.url,
      s.pools.join(",") || "-",
      s.tbuild ?? "-",
      s.platforms?.join(",") ?? "-",
      s.runningBuilds === undefined
        ? "-"
        : `${s.runningBuilds}${s.maxBuilds !== undefined ? `/${s.maxBuilds}` : ""}`,
      s.cacheSize === undefined ? "-" : formatSize(s.cacheSize),
      s.reachable ? "yes" : `no: ${s.error?.message ?? "it did not answer"}`,
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

function firstLine(message: string): string {
  return message.split("\n")[0]!;
}
