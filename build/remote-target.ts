/**
 * Where a remote build goes. `--worker` (or `TBUILD_WORKER`) is a URL (`ssh://…`, `cmd://…`), the
 * name of a `[worker.NAME]` table of config.toml, or `pool:NAME`, a `[pool.NAME]` table's workers.
 *
 * In a pool, as the issue asks (and as buildx does not: it sends a platform's build to its first
 * node), the client connects to every worker at once, each within its timeout, asks each `info`
 * and `affinity`, and picks
 *
 * 1. a worker that builds the target platform natively (config's `platforms`, else its own);
 * 2. one below its `max-builds`, when there is one;
 * 3. the one holding most of the build's cache keys (remote-affinity.ts);
 * 4. the least busy: running builds over `max-builds` (1 when unset);
 * 5. the first in the pool's list.
 *
 * Then it claims a build slot there (worker/running-builds.ts): the claim answers how many builds
 * ran there just before, counted under the worker's lock, so two clients choosing at the same
 * moment see each other, and the second moves to the next worker if that one is now less busy.
 * A worker that cannot be reached is skipped with a warning naming it; a worker lost mid-build
 * (its host, sshd or worker process gone) has the build retried once on another worker of the
 * pool, with a warning saying so. The worker chosen is told as `build.worker`.
 */
import { hostname, userInfo } from "node:os";
import { isTbuildError, TbuildError } from "../errors/index.js";
import { formatPlatform, type Platform, parsePlatform, platformMatches } from "../oci/platform.js";
import { type Connection, connect, type Handler } from "../worker/remote/protocol.js";
import type { WorkerInfo } from "../worker/remote/server.js";
import {
  ConnectionLostError,
  openTransport,
  type Transport,
  type TransportOptions,
} from "../worker/remote/transport.js";
import { loadConfig, type RemoteWorkerConfig, readRemoteWorkers, type TbuildConfig } from "./config.js";
import { readRequestDockerfile } from "./dockerfile.js";
import type { AffinityAnswer, AffinityParams } from "./remote-affinity.js";
import { contextKey, dockerfileDigest } from "./remote-keys.js";
import { type BuildRequest, targetPlatformOf } from "./request.js";
import type { RunContext } from "./run.js";

/** A worker a build may go to: a `[worker.NAME]` table, or a URL given as is. */
export interface WorkerTarget {
  /** Its name in config.toml; the URL for a worker given by URL. */
  name: string;
  url: string;
  /** The pools of config.toml that list it. */
  pools: string[];
  /** How it is reached (identity file, known hosts, command, timeout). */
  transport: Omit<TransportOptions, "signal">;
  /** The store it builds in, on its host; its user's default store when absent. */
  store?: string;
  /** Platforms it builds natively, as config.toml says; absent: as it says itself. */
  platforms?: string[];
  maxBuilds?: number;
  /** Milliseconds to reach it and hear its answers. */
  timeout: number;
  /** `NAME (URL)`, or the URL: how messages and the progress name it. */
  describe: string;
}

/** A worker connected to, ready for the build call. */
export interface OpenWorker {
  target: WorkerTarget;
  transport: Transport;
  connection: Connection;
  describe: string;
  /** Closes the connection and waits (bounded) for the far command to exit; idempotent. */
  close(): Promise<void>;
}

/** What asking a worker gave: its `info` (and `affinity`), or why it could not be asked. */
export interface WorkerProbe {
  target: WorkerTarget;
  info?: WorkerInfo;
  affinity?: AffinityAnswer;
  /** The one-line reason it is down. */
  error?: TbuildError;
  /** Open when the caller asked to keep it. */
  worker?: OpenWorker;
}

/** How long reaching a worker and hearing its answers may take, when config.toml does not say. */
export const DEFAULT_WORKER_TIMEOUT = 20_000;

/** Every `[worker.NAME]` of config.toml, with the pools that list it, in the file's order. */
export function configuredWorkers(config: TbuildConfig, env: NodeJS.ProcessEnv): WorkerTarget[] {
  const { workers, pools } = readRemoteWorkers(config);
  return Object.values(workers).map((worker) => targetOf(worker, Object.values(pools), env));
}

/** `--worker SPEC`: the workers it names, and the pool when it names one. */
export function resolveWorkerSpec(
  spec: string,
  config: TbuildConfig,
  env: NodeJS.ProcessEnv,
): { targets: WorkerTarget[]; pool?: string } {
  if (spec.startsWith("ssh://") || spec.startsWith("cmd://")) {
    return { targets: [targetOf({ name: spec, url: spec }, [], env)] };
  }
  const { workers, pools } = readRemoteWorkers(config);
  if (spec.startsWith("pool:")) {
    const name = spec.slice("pool:".length);
    const pool = pools[name];
    if (!pool) {
      const known = Object.keys(pools);
      throw new TbuildError(
        "E_WORKER_UNKNOWN",
        `--worker ${spec}: ${config.path} has no [pool.${name}] table (${known.length > 0 ? `its pools: ${known.join(", ")}` : "it defines no pool"}); add one, e.g. [pool.${name}] workers = ["build1", "build2"]`,
      );
    }
    const all = Object.values(pools);
    return { targets: pool.workers.map((w) => targetOf(workers[w]!, all, env)), pool: name };
  }
  const worker = workers[spec];
  if (!worker) {
    const known = Object.keys(workers);
    const hint = pools[spec] ? `; [pool.${spec}] is a pool: write --worker pool:${spec}` : "";
    throw new TbuildError(
      "E_WORKER_UNKNOWN",
      `--worker ${spec}: not a worker URL (ssh://USER@HOST[:PORT], cmd://COMMAND) and ${config.path} has no [worker.${spec}] table (${known.length > 0 ? `its workers: ${known.join(", ")}` : "it defines no worker"})${hint}`,
    );
  }
  return { targets: [targetOf(worker, Object.values(pools), env)] };
}

function targetOf(
  worker: Omit<RemoteWorkerConfig, "url"> & { url: string },
  pools: { name: string; workers: string[] }[],
  env: NodeJS.ProcessEnv,
): WorkerTarget {
  const byUrl = worker.name === worker.url;
  const timeout = worker.timeout ?? DEFAULT_WORKER_TIMEOUT;
  // TBUILD_WORKER_COMMAND overrides every worker's command (a tbuild at another path there).
  const command = env.TBUILD_WORKER_COMMAND || worker.command;
  return {
    name: worker.name,
    url: worker.url,
    pools: pools.filter((p) => p.workers.includes(worker.name)).map((p) => p.name),
    transport: {
      ...(command ? { command } : {}),
      ...(worker.identity !== undefined ? { identityFile: worker.identity } : {}),
      ...(worker.knownHosts !== undefined ? { knownHosts: worker.knownHosts } : {}),
      connectTimeout: timeout,
    },
    ...(worker.store !== undefined ? { store: worker.store } : {}),
    ...(worker.platforms !== undefined ? { platforms: worker.platforms } : {}),
    ...(worker.maxBuilds !== undefined ? { maxBuilds: worker.maxBuilds } : {}),
    timeout,
    describe: byUrl ? worker.url : `${worker.name} (${worker.url})`,
  };
}

/** Connects to `target` and completes the protocol's handshake. */
export async function openWorker(
  target: WorkerTarget,
  signal: AbortSignal,
  handlers: Record<string, Handler> = {},
): Promise<OpenWorker> {
  const transport = await openTransport(target.url, { ...target.transport, signal });
  try {
    const connection = await connect(transport.stream, {
      side: "client",
      peer: `worker ${target.name === target.url ? transport.describe : target.describe}`,
      signal,
      handlers,
      ...(target.store !== undefined ? { store: target.store } : {}),
    });
    let closed: Promise<void> | undefined;
    const close = () => {
      closed ??= (async () => {
        connection.close();
        await transport.close();
      })();
      return closed;
    };
    // A worker given by URL is named as the transport spells it (the user and port filled in).
    const describe = target.name === target.url ? transport.describe : target.describe;
    return { target, transport, connection, describe, close };
  } catch (err) {
    await transport.close().catch(() => {});
    throw err;
  }
}

/**
 * Asks every target at once for its `info` (and `affinity` when given), each within its timeout.
 * A target that cannot be reached, or does not answer in time, has `error` (one line) instead.
 * With `keepOpen`, the connections of the targets that answered stay open, for the caller to close.
 */
export async function probeWorkers(
  targets: WorkerTarget[],
  options: {
    signal: AbortSignal;
    affinity?: AffinityParams;
    keepOpen?: boolean;
    /** What the client serves on the connections kept open (a build's secrets and the like). */
    handlers?: Record<string, Handler>;
  },
): Promise<WorkerProbe[]> {
  return await Promise.all(
    targets.map(async (target): Promise<WorkerProbe> => {
      const seconds = Math.round(target.timeout / 100) / 10;
      const timer = new AbortController();
      const timeout = setTimeout(
        () =>
          timer.abort(
            new TbuildError(
              "E_WORKER_TIMEOUT",
              `worker ${target.describe} did not answer within ${seconds} s (its timeout in config.toml)`,
            ),
          ),
        target.timeout,
      );
      const signal = AbortSignal.any([options.signal, timer.signal]);
      let worker: OpenWorker | undefined;
      try {
        worker = await openWorker(target, signal, options.handlers);
        const [info, affinity] = await Promise.all([
          worker.connection.request("info", {}, { signal }) as Promise<WorkerInfo>,
          options.affinity
            ? (worker.connection.request("affinity", options.affinity, { signal }).catch((err: unknown) => {
                // A worker of an older tbuild knows no affinity: it holds nothing we can tell of.
                if (isTbuildError(err) && err.code === "E_NOT_SUPPORTED") return { cached: 0, keys: 0 };
                throw err;
              }) as Promise<AffinityAnswer>)
            : undefined,
        ]);
        checkInfo(info, target);
        const probe: WorkerProbe = { target, info, ...(affinity ? { affinity } : {}) };
        if (options.keepOpen) {
          probe.worker = worker;
          worker = undefined;
        }
        return probe;
      } catch (err) {
        options.signal.throwIfAborted();
        const reason = timer.signal.aborted
          ? (timer.signal.reason as TbuildError)
          : asTbuildError(err, target);
        return { target, error: reason };
      } finally {
        clearTimeout(timeout);
        await worker?.close().catch(() => {});
      }
    }),
  );
}

/** A worker's `info`, as far as scheduling and `worker ls` read it: anything else is a broken worker. */
function checkInfo(info: WorkerInfo, target: WorkerTarget): void {
  const count = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  if (
    typeof info !== "object" ||
    info === null ||
    typeof info.tbuild !== "string" ||
    !Array.isArray(info.platforms) ||
    !info.platforms.every((p) => typeof p === "string") ||
    !count(info.runningBuilds) ||
    !count(info.cacheSize)
  ) {
    throw new TbuildError(
      "E_WORKER_PROTOCOL",
      `worker ${target.describe} answered \`info\` with malformed data`,
    );
  }
}

function asTbuildError(err: unknown, target: WorkerTarget): TbuildError {
  if (isTbuildError(err)) return err as TbuildError;
  return new TbuildError(
    "E_WORKER_UNREACHABLE",
    `cannot use worker ${target.describe}: ${(err as Error)?.message ?? String(err)}`,
  );
}

/** What ranks a reachable worker of a pool (see the file header). */
interface Candidate {
  probe: WorkerProbe & { info: WorkerInfo; worker: OpenWorker };
  /** Its place in the pool's list. */
  order: number;
  native: boolean;
  cached: number;
  running: number;
  maxBuilds?: number;
}

function full(c: { running: number; maxBuilds?: number }): boolean {
  return c.maxBuilds !== undefined && c.running >= c.maxBuilds;
}

/** The candidates, best first. */
export function rankCandidates<T extends Omit<Candidate, "probe">>(candidates: T[]): T[] {
  const load = (c: T) => c.running / (c.maxBuilds ?? 1);
  return [...candidates].sort(
    (a, b) =>
      Number(b.native) - Number(a.native) ||
      Number(full(a)) - Number(full(b)) ||
      b.cached - a.cached ||
      load(a) - load(b) ||
      a.order - b.order,
  );
}

/** Whether a worker of these platforms builds `wanted` natively (an image of it runs there). */
function buildsNatively(platforms: string[], wanted: Platform): boolean {
  return platforms.some((p) => {
    try {
      return platformMatches(parsePlatform(p), wanted);
    } catch {
      return false;
    }
  });
}

/** Claims a build slot on the worker; how many builds ran there just before (or what `info` said). */
async function claimSlot(worker: OpenWorker, signal: AbortSignal, known: number): Promise<number> {
  try {
    const { before } = (await worker.connection.request("claim", {}, { signal })) as { before: number };
    return Number.isSafeInteger(before) && before >= 0 ? before : known;
  } catch (err) {
    // A worker of an older tbuild counts no claims: what it said in `info` stands.
    if (isTbuildError(err) && err.code === "E_NOT_SUPPORTED") return known;
    throw err;
  }
}

/** The errors that say the connection or the worker went away, not that the build failed there. */
export const CONNECTION_LOST = new Set(["E_WORKER_CONNECTION_LOST", "E_WORKER_GONE"]);

/**
 * What a lost connection's error says happened, without its advice to run again (tbuild does): the
 * SSH connection's own error where one was the cause, else the error's first line.
 */
export function whatHappened(err: unknown): string {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof ConnectionLostError) return e.happened;
  }
  return (err as Error).message.split("\n")[0]!;
}
/** In a pool, a worker command that died (killed with its host's session) counts as lost too. */
const WORKER_LOST = new Set([...CONNECTION_LOST, "E_WORKER_COMMAND"]);

/** What a remote build brings to its worker: what the client serves it, and its own preparation. */
export interface WorkerRun<P> {
  /** Methods the worker may call back (secrets, agents, credentials, the blobs the client lacks). */
  handlers: Record<string, Handler>;
  /** Work of the client's alone (reading and listing the context), done while workers are reached. */
  prepare: () => Promise<P>;
}

/**
 * Runs `build` on the worker `request.worker` names: a URL or a named worker as it is, a pool's
 * best worker (see the file header). When the connection is lost mid-build the build is tried once
 * more: on the same worker (what it synced is kept there), or in a pool on another worker. The
 * worker is closed when `build` is done with it.
 */
export async function runOnWorker<T, P>(
  request: BuildRequest,
  ctx: RunContext,
  run: WorkerRun<P>,
  build: (worker: OpenWorker, prepared: P) => Promise<T>,
): Promise<T> {
  const spec = request.worker!;
  const isUrl = spec.startsWith("ssh://") || spec.startsWith("cmd://");
  const config: TbuildConfig = isUrl ? { path: "", registries: {}, other: {} } : await loadConfig(ctx.env);
  const { targets, pool } = resolveWorkerSpec(spec, config, ctx.env);
  const warn = (message: string) => ctx.onEvent({ type: "warning", message });
  const preparing = run.prepare();
  preparing.catch(() => {});

  if (pool === undefined) {
    // The connection (SSH handshake, the worker starting) is made while the context is listed.
    const open = async () => {
      const opening = openWorker(targets[0]!, ctx.signal, run.handlers);
      opening.catch(() => {});
      try {
        await preparing;
      } catch (err) {
        void opening.then((worker) => worker.close()).catch(() => {});
        throw err;
      }
      const worker = await opening;
      try {
        await claimSlot(worker, ctx.signal, 0);
      } catch (err) {
        await worker.close();
        throw err;
      }
      return worker;
    };
    for (let attempt = 1; ; attempt++) {
      const worker = await open();
      try {
        return await build(worker, await preparing);
      } catch (err) {
        const code = isTbuildError(err) ? (err as TbuildError).code : undefined;
        if (ctx.signal.aborted || attempt > 1 || code === undefined || !CONNECTION_LOST.has(code)) throw err;
        warn(`${whatHappened(err)}; trying once more (what was synced is kept)`);
      } finally {
        await worker.close();
      }
    }
  }

  const wanted = targetPlatformOf(request.platforms);
  const dockerfile = await readRequestDockerfile(request, ctx.cwd);
  const affinity: AffinityParams = {
    contextKey: contextKey(hostname(), String(userInfo().uid), dockerfile.contextDir),
    dockerfile: dockerfileDigest(dockerfile.source),
  };
  const lost = new Set<string>();
  for (let attempt = 1; ; attempt++) {
    const worker = await chooseInPool(
      targets.filter((t) => !lost.has(t.name)),
      pool,
      wanted,
      affinity,
      run.handlers,
      ctx,
      warn,
    );
    try {
      return await build(worker, await preparing);
    } catch (err) {
      const workerLost = isTbuildError(err) && WORKER_LOST.has((err as TbuildError).code);
      if (!workerLost || ctx.signal.aborted || attempt > 1 || targets.length - lost.size < 2) throw err;
      lost.add(worker.target.name);
      warn(
        `worker ${worker.describe} was lost mid-build (${whatHappened(err)}): retrying the build once on another worker of pool ${pool}`,
      );
    } finally {
      await worker.close();
    }
  }
}

/** Connects to the pool's workers, picks one (see the file header) and claims a slot there. */
async function chooseInPool(
  targets: WorkerTarget[],
  pool: string,
  wanted: Platform,
  affinity: AffinityParams,
  handlers: Record<string, Handler>,
  ctx: RunContext,
  warn: (message: string) => void,
): Promise<OpenWorker> {
  const probes = await probeWorkers(targets, { signal: ctx.signal, affinity, keepOpen: true, handlers });
  let kept: OpenWorker | undefined;
  try {
    kept = await claimInPool(probes, pool, wanted, ctx, warn);
    return kept;
  } finally {
    // Every connection but the chosen one, whatever happened.
    await Promise.all(
      probes.filter((p) => p.worker && p.worker !== kept).map((p) => p.worker!.close().catch(() => {})),
    );
  }
}

/** A count a worker answered, or 0 for anything that is not one. */
const countOf = (n: unknown) => (Number.isSafeInteger(n) && (n as number) >= 0 ? (n as number) : 0);

async function claimInPool(
  probes: WorkerProbe[],
  pool: string,
  wanted: Platform,
  ctx: RunContext,
  warn: (message: string) => void,
): Promise<OpenWorker> {
  const candidates: Candidate[] = [];
  const down: string[] = [];
  const markDown = (target: WorkerTarget, reason: string) => {
    down.push(`${target.name}: ${reason}`);
    warn(`worker ${target.describe} of pool ${pool} is down, skipped: ${reason}`);
  };
  probes.forEach((probe, order) => {
    if (probe.error || !probe.info || !probe.worker) {
      markDown(probe.target, probe.error?.message ?? "it did not answer");
      return;
    }
    candidates.push({
      probe: probe as Candidate["probe"],
      order,
      native: buildsNatively(probe.target.platforms ?? probe.info.platforms, wanted),
      cached: countOf(probe.affinity?.cached),
      running: probe.info.runningBuilds,
      ...(probe.target.maxBuilds !== undefined ? { maxBuilds: probe.target.maxBuilds } : {}),
    });
  });
  if (candidates.length > 0 && !candidates.some((c) => c.native)) {
    warn(
      `no worker of pool ${pool} builds ${formatPlatform(wanted)} natively: its steps run under emulation where the worker has it`,
    );
  }
  const tried = new Set<Candidate>();
  const usable = [...candidates];
  let chosen: Candidate | undefined = rankCandidates(usable)[0];
  while (chosen) {
    let before: number;
    try {
      before = await claimSlot(chosen.probe.worker, ctx.signal, chosen.running);
    } catch (err) {
      ctx.signal.throwIfAborted();
      // Gone since it answered `info`: as good as down.
      markDown(chosen.probe.target, asTbuildError(err, chosen.probe.target).message);
      usable.splice(usable.indexOf(chosen), 1);
      chosen = rankCandidates(usable).find((c) => !tried.has(c));
      continue;
    }
    tried.add(chosen);
    if (before > chosen.running) {
      // Another client took a slot there since `info`: another worker may now be less busy.
      chosen.running = before;
      const best = rankCandidates(usable)[0]!;
      if (best !== chosen && !tried.has(best)) {
        await chosen.probe.worker.connection.request("release", {}, { signal: ctx.signal }).catch(() => {});
        chosen = best;
        continue;
      }
    }
    return chosen.probe.worker;
  }
  throw new TbuildError(
    "E_WORKER_UNREACHABLE",
    `no worker of pool ${pool} can be used (${down.join("; ")}): check them with \`tbuild worker ls\``,
  );
}
