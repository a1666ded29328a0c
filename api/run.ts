/**
 * The library's `run()`: a new container from an image (from the store, else pulled as `tbuild
 * pull` would), its process run to its end, as `tbuild run` does. Aborting the signal stops the
 * container (SIGTERM, then SIGKILL) and cleans up. An unprivileged caller's container runs from a
 * child in tbuild's user namespace (api/rootless.ts), on this process's stdio or the streams given.
 */
import { randomBytes } from "node:crypto";
import { isTbuildError } from "../errors/index.js";
import type { Image } from "../oci/image.js";
import { hostPlatform, type Platform, parsePlatform } from "../oci/platform.js";
import { defaultStoreRoot, type Store as OpenedStore, openStore } from "../oci/store/index.js";
import { containerConfig } from "../runtime/config.js";
import type { LogOptions } from "../runtime/logs.js";
import {
  parseVolumeFlag,
  relabelDecision,
  relabelOption,
  selinuxEnforceState,
  withImageVolumes,
} from "../runtime/mounts.js";
import { networkSettings } from "../runtime/ports.js";
import { hasWorkerPrivileges } from "../worker/userns.js";
import { BuildCanceledError } from "./errors.js";
import type { Store } from "./store.js";

export interface RunOptions {
  /** Replaces the image's CMD. */
  command?: string[];
  /** Replaces the image's ENTRYPOINT (and drops its CMD); `""` clears it. */
  entrypoint?: string;
  /** `K=V` variables for the container's process (later ones win over the image's). */
  environment?: string[];
  /** An absolute working directory in the container. */
  workdir?: string;
  /** `USER[:GROUP]`, a name or an id. */
  user?: string;
  /**
   * As `tbuild run -v`: `SRC:DST[:ro]` (a host path or a volume name), or `DST` (an anonymous
   * volume). The image's VOLUMEs none of these covers get anonymous volumes.
   */
  volumes?: string[];
  /**
   * The host's network (default), none (loopback only), or private (a namespace of its own, with
   * published ports and outbound traffic through slirp4netns or pasta; `bridge` is its alias).
   */
  network?: "host" | "none" | "private" | "bridge";
  /** As `tbuild run -p`: `[IP:][HOST:]CTR[/tcp|udp]` each; implies a private network. */
  publish?: string[];
  /** As `-P`: every port the image EXPOSEs, to a free host port; implies a private network. */
  publishAll?: boolean;
  /** The container's host name; the first 12 characters of its ID by default. */
  hostname?: string;
  /** Nameservers (IP addresses) of a private network. */
  dns?: string[];
  /** `NAME:IP` (or `NAME:host-gateway`) lines added to /etc/hosts. */
  addHosts?: string[];
  /** A name for the container; a random one by default. */
  name?: string;
  /** Forget the container, its writable layer and anonymous volumes when it exits. */
  remove?: boolean;
  /**
   * `-d`: start the container in a monitor process of its own, which outlives this one, and
   * resolve once its command runs (its output goes to its log: `tbuild logs`).
   */
  detach?: boolean;
  /** `--stop-signal`: the signal `stop` sends first (the image's STOPSIGNAL by default, else SIGTERM). */
  stopSignal?: string;
  /** `--stop-timeout`: seconds `stop` waits for the process after the stop signal (default 10). */
  stopTimeout?: number;
  /** Run a tiny init (tini) as the container's PID 1, which runs the process and reaps zombies. */
  init?: boolean;
  /** The log's size cap and parts (`--log-opt max-size=`/`max-file=`), for a detached container. */
  logOptions?: LogOptions;
  /** The image's platform, e.g. `linux/arm64`; this machine's by default. */
  platform?: string;
  /** Give the process a terminal: this process's own, which must be one (`stdin` "inherit"). */
  tty?: boolean;
  /** Where the process reads and writes; this process's own by default ("inherit"). */
  stdin?: NodeJS.ReadableStream | "inherit" | "ignore";
  stdout?: NodeJS.WritableStream | "inherit";
  stderr?: NodeJS.WritableStream | "inherit";
  /** Aborting stops the container. */
  signal?: AbortSignal;
  /** Called once the process is starting, with a way to send it signals and to stop it. */
  onStart?: (container: {
    id: string;
    kill(signal: NodeJS.Signals): void;
    /** As `tbuild stop`: the stop signal, then SIGKILL after the grace period; resolves to the exit code. */
    stop(timeoutSeconds?: number): Promise<number>;
  }) => void;
  /** The environment: the store, config.toml, credentials; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
  /** Relative volume sources are relative to this; `process.cwd()` by default. */
  cwd?: string;
  store?: Store;
  /** One line each: a pulled image for another platform, a volume's problem. */
  onWarning?: (message: string) => void;
}

export interface RunResult {
  /** The process's exit code, or 128 + the signal number when a signal ended it; 0 when detached. */
  exitCode: number;
  /** The container's id and name (as `tbuild ps` shows them, unless it was removed). */
  id: string;
  name: string;
}

export async function run(image: string, options: RunOptions = {}): Promise<RunResult> {
  // Unprivileged, the container runs from a child in tbuild's user namespace (api/rootless.ts).
  if (!hasWorkerPrivileges()) return (await import("./rootless.js")).runInUserNamespace(image, options);
  const env = options.env ?? process.env;
  const signal = options.signal ?? new AbortController().signal;
  const platform = options.platform ? parsePlatform(options.platform) : hostPlatform();
  const anonymousName = () => randomBytes(32).toString("hex");
  const flagMounts = (options.volumes ?? []).map((v) =>
    parseVolumeFlag(v, options.cwd ?? process.cwd(), anonymousName),
  );
  const relabeled = (options.volumes ?? []).filter((v) => relabelOption(v) !== undefined);
  if (relabeled.length > 0) {
    const enforce = selinuxEnforceState();
    for (const v of relabeled) {
      const note = relabelDecision(v, enforce);
      if (note !== undefined) options.onWarning?.(note);
    }
  }
  const store = await openStore(options.store?.root ?? defaultStoreRoot(env));
  const resolved = await resolveImage(store, image, platform, { env, signal, options });
  const config = containerConfig(resolved.config.config ?? {}, {
    ...(options.entrypoint !== undefined ? { entrypoint: options.entrypoint } : {}),
    args: options.command ?? [],
    env: options.environment ?? [],
    ...(options.workdir !== undefined ? { workingDir: options.workdir } : {}),
    ...(options.user !== undefined ? { user: options.user } : {}),
    ...(options.stopSignal !== undefined ? { stopSignal: options.stopSignal } : {}),
    anonymousVolumes: flagMounts.filter((m) => m.kind === "volume" && m.anonymous).map((m) => m.destination),
  });
  // The image's VOLUMEs no -v covers get anonymous volumes, as docker gives them.
  const mounts = withImageVolumes(resolved.config.config ?? {}, flagMounts, anonymousName);
  const network = networkSettings(
    {
      ...(options.network !== undefined ? { network: options.network } : {}),
      ...(options.publish ? { publish: options.publish } : {}),
      ...(options.publishAll ? { publishAll: true } : {}),
      ...(options.hostname !== undefined ? { hostname: options.hostname } : {}),
      ...(options.dns ? { dns: options.dns } : {}),
      ...(options.addHosts ? { addHosts: options.addHosts } : {}),
    },
    config,
  );
  const { Container } = await import("../runtime/container.js");
  const container = await Container.create(store, {
    image: resolved,
    imageName: image,
    config,
    mounts,
    network,
    tty: options.tty === true,
    interactive: options.stdin !== undefined && options.stdin !== "ignore",
    remove: options.remove === true,
    ...(options.init ? { init: true } : {}),
    ...(options.logOptions ? { logOptions: options.logOptions } : {}),
    ...(options.name !== undefined ? { name: options.name } : {}),
    ...(options.stopTimeout !== undefined ? { stopTimeout: options.stopTimeout } : {}),
    ...(options.onWarning ? { warn: options.onWarning } : {}),
    env,
  });
  if (options.detach) {
    const { startMonitor } = await import("../runtime/monitor.js");
    await startMonitor(store, container.record, { env });
    return { exitCode: 0, id: container.id, name: container.record.name };
  }
  try {
    const exit = await container.run({
      stdin: options.stdin ?? "ignore",
      stdout: options.stdout ?? "inherit",
      stderr: options.stderr ?? "inherit",
      signal,
      onStart: () =>
        options.onStart?.({
          id: container.id,
          kill: (s) => container.kill(s),
          stop: (timeout) => container.stop(timeout),
        }),
    });
    return { exitCode: exit.exitCode, id: container.id, name: container.record.name };
  } catch (err) {
    // Stopped before its process started (while unpacking, say): the caller's own doing.
    if (signal.aborted && !isTbuildError(err)) throw new BuildCanceledError(signal.reason, err);
    throw err;
  }
}

/**
 * The image `text` names, for `platform`: from the local store first (a name or an image ID), else
 * pulled from its registry (the registry client is loaded only then).
 */
async function resolveImage(
  store: OpenedStore,
  text: string,
  platform: Platform,
  { env, signal, options }: { env: NodeJS.ProcessEnv; signal: AbortSignal; options: RunOptions },
): Promise<Image> {
  const [{ readImageForPlatform }, { ImageNotFoundError }] = await Promise.all([
    import("../oci/image.js"),
    import("../oci/store/index.js"),
  ]);
  try {
    // A name is found with one read of the store's index; IDs and the rest go the long way.
    const record =
      (await store.images.get(text).catch(() => undefined)) ??
      (await (await import("../oci/store/find.js")).findLocalImage(store, text));
    return await readImageForPlatform(store.content, record.descriptor, platform, record.name);
  } catch (err) {
    if (!(err instanceof ImageNotFoundError)) throw err;
  }
  const [{ pullImage }, { loadConfig, registryOptions }, { parseReference }] = await Promise.all([
    import("../oci/registry/index.js"),
    import("../build/config.js"),
    import("../oci/reference.js"),
  ]);
  const config = await loadConfig(env);
  options.onWarning?.(`Unable to find image '${text}' locally; pulling it`);
  const pulled = await pullImage(store, parseReference(text), {
    platform,
    ...registryOptions(config, { env, signal, ...(options.onWarning ? { warn: options.onWarning } : {}) }),
  });
  return readImageForPlatform(store.content, pulled.index ?? pulled.descriptor, platform, pulled.name);
}
