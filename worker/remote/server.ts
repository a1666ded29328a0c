/**
 * The far end of a remote worker: what `tbuild worker --stdio` runs, started per connection by
 * SSH or a `cmd://` command (no daemon, unlike buildx's buildkitd). It speaks the worker protocol
 * (protocol.ts) on the stream it is given, as the user it runs as (rootless in tbuild's user
 * namespace when that user is not root, as `tbuild build` is), in the store the client names or
 * that user's default one, and ends when the stream does.
 *
 * Methods so far: `info` (what `tbuild worker ls` and a pool's scheduler need to know of a worker),
 * `claim` and `release` (a build slot for the client's next build: running-builds.ts) and `ping`. Anything else answers E_NOT_SUPPORTED at once, naming this tbuild's version, so an
 * older worker is never left hanging.
 */
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import path from "node:path";
import type { Duplex } from "node:stream";
import { TbuildError } from "../../errors/index.js";
import { formatPlatform, hostPlatform } from "../../oci/platform.js";
import { defaultStoreRoot, openStore } from "../../oci/store/index.js";
import { claimBuildSlot, countRunningBuilds, releaseBuildSlot } from "../running-builds.js";
import { inUserNamespace } from "../userns.js";
import { connect, type Handler, PROTOCOL_VERSION, tbuildVersion } from "./protocol.js";

/** What `info` answers. */
export interface WorkerInfo {
  tbuild: string;
  protocol: number;
  /** Platforms this worker runs steps of natively (`linux/amd64`). */
  platforms: string[];
  /** Building in a user namespace over the worker user's subordinate ids, not as root. */
  rootless: boolean;
  /** The store this connection's builds use. */
  store: string;
  /** Builds running in that store now (local ones too): see worker/running-builds.ts. */
  runningBuilds: number;
  /** Bytes the store takes, as `tbuild du` totals them; 0 where there is no store yet. */
  cacheSize: number;
}

export interface WorkerHost {
  env: NodeJS.ProcessEnv;
  /** Ends the connection (SIGTERM, the outer tbuild gone). */
  signal: AbortSignal;
  /** Bytes the (existing) store at `root` takes, all parts of it, as `tbuild du` totals them. */
  measureStore(root: string): Promise<number>;
  /** Methods served besides `info` and `ping` (a build's, which live above the worker). */
  handlers?: Record<string, Handler>;
}

/** The store a client's hello names (absolute), else the worker user's default one. */
export function workerStore(requested: string | undefined, env: NodeJS.ProcessEnv): string {
  if (requested === undefined) return defaultStoreRoot(env);
  if (!requested.startsWith("/")) {
    throw new TbuildError(
      "E_WORKER_STORE",
      `the store a client names must be an absolute path on this host, not ${JSON.stringify(requested)}`,
    );
  }
  return requested;
}

/**
 * What oci/store's openStore writes into a new store before its `oci-layout` is there: another
 * connection making the store this moment (two platforms of one build, two clients), not a
 * directory of something else.
 */
const STORE_IN_THE_MAKING = /^(blobs|index\.json|(oci-layout|index\.json)\.\d+-[0-9a-f]{12}\.tmp)$/;

/**
 * A claim writes into the store: only into a store, or a directory that is still empty or absent
 * (where a build makes one), never into some other directory a client names.
 */
async function checkBuildableStore(store: string): Promise<void> {
  if (existsSync(path.join(store, "oci-layout"))) return;
  const entries: string[] = await readdir(store).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw new TbuildError(
      "E_WORKER_STORE",
      `cannot read the store ${store} on this worker (${err.code ?? err.message})`,
    );
  });
  // Made a store by another connection between the look for its oci-layout and the listing.
  if (entries.includes("oci-layout")) return;
  const foreign = entries.sort().find((entry) => !STORE_IN_THE_MAKING.test(entry));
  if (foreign !== undefined) {
    throw new TbuildError(
      "E_WORKER_STORE",
      `${store} on this worker is not a tbuild store (it has no oci-layout, and holds ${JSON.stringify(foreign)}): name a store, or a new directory`,
    );
  }
}

/**
 * Serves one connection on `stream` until it ends. Resolves when the client closed it (or the
 * signal ended it); rejects with the reason when the handshake is refused or the client breaks the
 * protocol (the client is told too).
 */
export async function serveWorker(stream: Duplex, host: WorkerHost): Promise<void> {
  const storeOf = (requested: string | undefined) => workerStore(requested, host.env);
  const handlers: Record<string, Handler> = {
    ...host.handlers,
    ping: (params) => ({ pong: params ?? null }),
    // Held by this process, so it ends with the connection even when the client never releases it.
    claim: async (_params, call): Promise<{ before: number }> => {
      const store = storeOf(call.connection.peerHello.store);
      await checkBuildableStore(store);
      // Made a store before anything else is written there, so that another connection's check
      // meanwhile sees a store (or one being made), never a directory of something else.
      await openStore(store);
      return await claimBuildSlot(store);
    },
    release: async (_params, call) => {
      await releaseBuildSlot(storeOf(call.connection.peerHello.store));
      return {};
    },
    info: async (_params, call): Promise<WorkerInfo> => {
      const store = storeOf(call.connection.peerHello.store);
      return {
        tbuild: tbuildVersion(),
        protocol: PROTOCOL_VERSION,
        platforms: [formatPlatform(hostPlatform())],
        rootless: inUserNamespace(),
        store,
        runningBuilds: await countRunningBuilds(store),
        // Asking about a worker must not make a store there (nor write into a directory that is none).
        cacheSize: existsSync(path.join(store, "oci-layout")) ? await host.measureStore(store) : 0,
      };
    },
  };
  const connection = await connect(stream, {
    side: "worker",
    peer: "the client",
    handlers,
    signal: host.signal,
  });
  const stop = () => connection.close();
  host.signal.addEventListener("abort", stop, { once: true });
  try {
    const failure = await connection.closed;
    if (failure) throw failure;
  } finally {
    host.signal.removeEventListener("abort", stop);
  }
}
