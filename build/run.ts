/**
 * Running a build: a BuildRequest → plan → solve on the local worker → export, with every step
 * told as a BuildEvent (BuildKit's control.Solve with buildx's build.Build around it). The CLI's
 * `tbuild build` and the library's `build()` both call runBuild; what the CLI adds is flag syntax,
 * the rootless re-exec and the rendering of the events.
 */
import { rm } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import type { Attestation } from "../attest/attestation.js";
import type { ExportType, PlatformImage } from "../exporters/index.js";
import type { ExportRequest } from "../exporters/request.js";
import { type LoweredBuild, proxyEnv } from "../frontend/lower/index.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import type { CredentialsProvider } from "../oci/registry/auth.js";
import type { PushOptions } from "../oci/registry/push.js";
import { checkSourceDateEpoch, parseSourceDateEpoch } from "../oci/source-date-epoch.js";
import type { Descriptor, ImageConfig } from "../oci/spec.js";
import { defaultStoreRoot, openStore, type Store } from "../oci/store/index.js";
import type { CacheDirectories, CacheExportSpec } from "../solver/build-cache.js";
import { CacheIndex } from "../solver/cache.js";
import {
  type CacheDescription,
  encodeCacheDescription,
  INLINE_CACHE_FIELD,
} from "../solver/cache-description.js";
import { applyGcPolicy } from "../solver/gc.js";
import type { BuildGraph } from "../solver/graph.js";
import { StepFailedError, solve } from "../solver/solve.js";
import { inputsFirst } from "../solver/walk.js";
import type { FsResult } from "../solver/worker.js";
import { makeBuildStateDir, makeSecretsDir, removeAbandonedBuildStates } from "../worker/build-state.js";
import { LocalWorker } from "../worker/local.js";
import type { OpContext, SecretSource } from "../worker/ops/context.js";
import { Snapshotter } from "../worker/snapshot/index.js";
import { CacheMountTransport, describeMountExport } from "./cache-mount-transport.js";
import {
  loadConfig,
  readBuildDefaults,
  readGcPolicy,
  readWorkerSettings,
  registryOptions,
  type TbuildConfig,
} from "./config.js";
import type { LayoutImages } from "./contexts.js";
import { readRequestDockerfile } from "./dockerfile.js";
import { type BuildEvent, BuildEventStream, type BuildSummary } from "./events.js";
import { BuildStepFailedError, describeStepFailure } from "./failure.js";
import { applyGcPolicyToCacheMounts, containerImages, pruneUnneededLayers } from "./gc.js";
import { type BuildPlan, planBuild } from "./plan.js";
import { collectProvenance, gitCheckoutOf, provenanceOf } from "./provenance.js";
import { type BuildRequest, checkBuildRequest, targetPlatformsOf } from "./request.js";
import { collectSbom, sbomName, sbomOf } from "./sbom.js";
import { checkRequiredSecrets, resolveSecrets, resolveSshAgents } from "./secrets.js";

/** Where a build runs from, and who hears of it. */
export interface RunContext {
  env: NodeJS.ProcessEnv;
  /** Relative paths in the request are relative to this. */
  cwd: string;
  signal: AbortSignal;
  onEvent: (event: BuildEvent) => void;
  /** Where an output to `-` (`dest: "-"`) is written. */
  stdout?: NodeJS.WritableStream;
  /**
   * A remote build's worker: the secrets and SSH agents are the client's, served on demand, in
   * place of what the request's `secrets` and `ssh` name on this host.
   */
  served?: {
    secrets: Record<string, SecretSource>;
    ssh: Record<string, string>;
    /** Registry credentials, asked of the client per registry, kept in memory only. */
    credentials?: CredentialsProvider;
    /** The images of the client's `oci-layout://` directories, fetched from it by need. */
    layouts?: LayoutImages;
    /** The client's type=local cache directories, read and written over the connection. */
    cacheDirectories?: CacheDirectories;
    /**
     * One platform's part of the client's build of several: each step is named with its platform,
     * as a local build of several names it, in its progress, its cache records and `--explain`.
     */
    platformPart?: boolean;
  };
  /** Told the cache keys of the steps a build solved, once it has: a remote worker's pool affinity. */
  onCacheKeys?: (keys: string[]) => void;
  /**
   * Told the image a build of one platform assembled, as stored before any output converts its
   * layers: what a remote worker sends back for the client's own outputs.
   */
  onImage?: (manifest: Descriptor) => void;
}

/** What a finished build made: its digests, size, names, and how many steps ran or were cached. */
export type BuildResult = BuildSummary;

/** A build's SOURCE_DATE_EPOCH: the request's, else its `SOURCE_DATE_EPOCH` build arg's (as BuildKit). */
export function epochOf(request: BuildRequest): number | undefined {
  if (request.epoch !== undefined) return checkSourceDateEpoch(request.epoch);
  return parseSourceDateEpoch(request.buildArgs?.SOURCE_DATE_EPOCH);
}

/**
 * On a remote build's worker, what the client's call changes in the plan: `oci-layout://` contexts
 * from the client's layouts, and steps named with their platform in one platform's part.
 */
function servedToPlan(ctx: RunContext): { layouts?: LayoutImages; platformInNames?: boolean } {
  return {
    ...(ctx.served?.layouts ? { layouts: ctx.served.layouts } : {}),
    ...(ctx.served?.platformPart ? { platformInNames: true } : {}),
  };
}

/**
 * Runs the build `request` asks for. Every event goes to `ctx.onEvent`, the last being
 * `build.completed` or `build.failed` (unless the Dockerfile cannot be read, or the request is
 * malformed: those throw before anything starts). Aborting `ctx.signal` stops the running steps,
 * removes what they made, and ends the build as an interrupt does.
 */
export async function runBuild(request: BuildRequest, ctx: RunContext): Promise<BuildResult> {
  checkBuildRequest(request);
  if (request.worker !== undefined) {
    const { runRemoteBuild } = await import("./remote.js");
    return runRemoteBuild(request, ctx);
  }
  const dockerfile = await readRequestDockerfile(request, ctx.cwd);
  const events = new BuildEventStream(ctx.onEvent);
  try {
    return await build(request, ctx, events, dockerfile);
  } catch (err) {
    const failure =
      err instanceof StepFailedError
        ? describeStepFailure(err, events.lastOutput(err.digest), dockerfile)
        : undefined;
    events.failed(err, failure);
    if (failure) throw new BuildStepFailedError(failure, err as StepFailedError);
    throw err;
  }
}

/**
 * The cache mount transport of a build whose `--cache-to` or a `--cache-from` says mounts=true;
 * undefined otherwise (a `--cache-from` without it ignores the mounts its cache carries).
 */
function cacheMountTransport(
  request: BuildRequest,
  store: Store,
  imported: Awaited<ReturnType<typeof import("../solver/build-cache.js").importBuildCache>>,
  events: BuildEventStream,
  signal: AbortSignal,
): CacheMountTransport | undefined {
  const exports = request.cacheTo?.type !== "inline" && request.cacheTo?.mounts === true;
  const imports = (request.cacheFrom ?? []).some((spec) => spec.mounts === true);
  if (!exports && !imports) return undefined;
  return new CacheMountTransport(store, imports ? imported : undefined, events, signal);
}

async function build(
  request: BuildRequest,
  ctx: RunContext,
  events: BuildEventStream,
  dockerfile: Awaited<ReturnType<typeof readRequestDockerfile>>,
): Promise<BuildResult> {
  const warn = (message: string) => events.warn(message);
  const config = await loadConfig(ctx.env);
  const jobs = request.jobs ?? readBuildDefaults(config).jobs ?? availableParallelism();
  const sourceDateEpoch = epochOf(request);
  // Checked before anything is resolved or run: a bad --secret is the user's to fix at once.
  const secrets = ctx.served?.secrets ?? (await resolveSecrets(request.secrets ?? [], ctx));
  const sshAgents = ctx.served?.ssh ?? resolveSshAgents(request.ssh ?? [], ctx);
  const cacheFrom = request.cacheFrom ?? [];
  const cacheTo = request.cacheTo;
  // Loaded only for builds that import or export cache (it brings the registry client).
  const buildCache =
    cacheTo !== undefined || cacheFrom.length > 0 ? await import("../solver/build-cache.js") : undefined;
  const registry = {
    ...registryOptions(config, { env: ctx.env, warn }),
    ...(ctx.served?.credentials ? { credentials: ctx.served.credentials } : {}),
  };
  const { snapshotter: snapshotMode } = readWorkerSettings(config);
  const store = await openStore(defaultStoreRoot(ctx.env));
  // What builds killed with SIGKILL left: their state directories and the containers in them,
  // then the root filesystems those containers ran on (still mounted, as real root), the layers
  // and context snapshots they were making, the blobs they were writing.
  await removeAbandonedBuildStates(store.root, { warn });
  const snapshotter = new Snapshotter(store.root, store.content, snapshotMode ? { mode: snapshotMode } : {});
  await snapshotter.cleanAbandoned();
  await snapshotter.removeAbandonedTemps();
  await store.content.cleanIngest();

  const platforms = targetPlatformsOf(request.platforms);
  if (platforms.length > 1) {
    return buildPlatforms(platforms, {
      request,
      ctx,
      events,
      dockerfile,
      config,
      jobs,
      sourceDateEpoch,
      secrets,
      sshAgents,
      registry,
      store,
      snapshotter,
      buildCache,
    });
  }
  const plan = await events.internal(`[internal] load metadata and resolve base images`, () =>
    planBuild(
      request,
      { store, config, env: ctx.env, cwd: ctx.cwd, signal: ctx.signal, warn, ...servedToPlan(ctx) },
      dockerfile,
    ),
  );
  const { lowered } = plan;
  const imported = await buildCache?.importBuildCache(
    cacheFrom,
    store.content,
    { ...registry, platforms: [plan.targetPlatform] },
    ctx.served?.cacheDirectories,
  );
  checkRequiredSecrets(lowered.graph, secrets, sshAgents);
  const mountTransport = cacheMountTransport(request, store, imported, events, ctx.signal);
  const { stateDir, secretsDir, cache, ignoreCache, close } = await openBuildState(request, store, secrets, [
    lowered,
  ]);
  try {
    const worker = localWorker(
      { request, ctx, store, snapshotter, secrets, sshAgents, registry, sourceDateEpoch },
      {
        localSources: plan.localSources,
        ignoreCache,
        warn,
        stateDir,
        secretsDir,
        ...(mountTransport ? { cacheMounts: mountTransport.hook() } : {}),
      },
    );
    const buildStarted = Date.now();
    const provenance = provenanceOf(request);
    const vcs = provenance ? await gitCheckoutOf(dockerfile.contextDir) : undefined;
    // What follows solves exactly this graph from exactly this root: the event shows them.
    const { graph, root } = lowered;
    events.emit({
      type: "build.planned",
      vertices: root ? reachable(graph, root).size : 0,
      ...(root ? { root } : {}),
      graph,
      image: lowered.image,
    });
    const solved = root
      ? await solve(graph, root, {
          worker,
          cache,
          hasBlob: (digest) => store.content.has(digest),
          ...(imported ? { remoteCache: imported } : {}),
          jobs,
          signal: ctx.signal,
          onEvent: (event) => events.solved(event),
          ignoreCache,
        })
      : {
          result: { layers: [] },
          ran: [],
          cached: [],
          keys: new Map(),
          materials: new Map(),
          results: new Map(),
        };
    ctx.onCacheKeys?.([...new Set(solved.keys.values())]);
    mountTransport?.noteDeclared(graph, solved);
    const cacheOf = (mode: "min" | "max") =>
      buildCache!.collectBuildCache(solved, cache, imported, store.content, mode);
    // Inline cache rides in the image config, so it is collected before the image is assembled.
    const image =
      cacheTo?.type === "inline"
        ? { ...lowered.image, [INLINE_CACHE_FIELD]: encodeCacheDescription(await cacheOf("min")) }
        : lowered.image;
    const attestations = provenance
      ? [
          collectProvenance(provenance, {
            request,
            dockerfile,
            graph,
            ...(root ? { root } : {}),
            localSources: Object.keys(plan.localSources),
            vcs,
            startedOn: new Date(buildStarted),
            finishedOn: new Date(),
            ...(sourceDateEpoch !== undefined ? { epoch: sourceDateEpoch } : {}),
            env: ctx.env,
          }),
        ]
      : [];
    if (sbomOf(request)) {
      attestations.push(
        await events.internal("scanning the image for its SBOM", () =>
          collectSbom({
            store,
            snapshotter,
            lowered,
            result: solved.result,
            results: solved.results,
            contextDir: dockerfile.contextDir,
            name: sbomName(request, lowered.target.name),
            ...(sourceDateEpoch !== undefined ? { epoch: sourceDateEpoch } : {}),
            signal: ctx.signal,
          }),
        ),
      );
    }
    const exported = await events.internal("exporting to image", () =>
      exportBuild(
        store,
        image,
        solved.result,
        request,
        { ...ctx, warn },
        sourceDateEpoch !== undefined ? { sourceDateEpoch } : { now: builtAt(solved, cache) },
        registry,
        attestations,
      ),
    );
    if (cacheTo !== undefined && cacheTo.type !== "inline") {
      await exportBuildCache(cacheTo, () => cacheOf(cacheTo.mode), {
        buildCache: buildCache!,
        events,
        ctx,
        store,
        registry,
        mountTransport,
      });
    }
    // config.toml's [gc] limits, enforced once the image is named (so its blobs are never candidates).
    await enforceGcPolicy(config, store, cache, buildStarted);
    // Steps are what the Dockerfile says; reading the context and the like are not counted.
    const steps = (digests: string[]) => digests.filter((d) => !graph.info[d]?.internal).length;
    const summary: BuildSummary = {
      digest: exported.digest,
      configDigest: exported.configDigest,
      size: exported.size,
      names: exported.names,
      ran: steps(solved.ran),
      cached: steps(solved.cached),
    };
    events.completed(summary);
    if (request.explain === true)
      await explain(events, { graph, solved, cache, store, request, buildStarted });
    return summary;
  } finally {
    await close();
  }
}

/** `--explain`: for each step that ran, an `explain` event saying what changed (explain.ts). */
async function explain(
  events: BuildEventStream,
  build: {
    graph: BuildGraph;
    solved: Parameters<typeof import("./explain.js").explainBuild>[0]["solved"];
    cache: CacheIndex;
    store: Store;
    request: BuildRequest;
    buildStarted: number;
  },
): Promise<void> {
  const { explainBuild } = await import("./explain.js");
  const { graph, solved, cache, store, request, buildStarted } = build;
  const buildArgs = Object.keys(request.buildArgs ?? {});
  for (const explanation of await explainBuild({
    graph,
    solved,
    cache,
    storeRoot: store.root,
    buildArgs,
    buildStarted,
  })) {
    events.emit({ type: "explain", ...explanation });
  }
}

/**
 * Writes a registry or local `--cache-to` (its records collected by `describe`), as the step
 * "exporting cache"; with `ignore-error=true` a cache that cannot be written is a warning, as
 * the image is already made. With mounts=true the cache mounts the build used are packed first
 * (a step each) and go with it; the step says of each whether its blob was sent.
 */
async function exportBuildCache(
  cacheTo: Exclude<CacheExportSpec, { type: "inline" }>,
  describe: () => Promise<CacheDescription>,
  on: {
    buildCache: typeof import("../solver/build-cache.js");
    events: BuildEventStream;
    ctx: RunContext;
    store: Store;
    registry: PushOptions;
    mountTransport: CacheMountTransport | undefined;
  },
): Promise<void> {
  const step = "exporting cache";
  await (async () => {
    const mounts = cacheTo.mounts === true ? ((await on.mountTransport?.packUsed()) ?? []) : [];
    await on.events.internal(step, async () =>
      on.buildCache.writeBuildCache(
        cacheTo,
        { ...(await describe()), ...(mounts.length > 0 ? { mounts } : {}) },
        on.store,
        on.registry,
        on.ctx.served?.cacheDirectories,
        (mount, sent) => on.events.internalLog(step, describeMountExport(mount, sent, cacheTo.type)),
      ),
    );
  })().catch((err: unknown) => {
    if (cacheTo.ignoreError !== true || on.ctx.signal.aborted) throw err;
    on.events.warn(`the cache was not exported (ignore-error=true): ${(err as Error).message}`);
  });
}

/**
 * What a build's solve needs beside its worker: a state directory, a directory for its secrets
 * (when it has any), the cache index, and which vertices ignore the cache (`--no-cache`, or a stage
 * of `--no-cache-filter` in any of `lowered`). `close` removes them.
 */
async function openBuildState(
  request: BuildRequest,
  store: Store,
  secrets: Record<string, SecretSource>,
  lowered: readonly LoweredBuild[],
) {
  const stateDir = await makeBuildStateDir(store.root);
  const secretsDir = Object.keys(secrets).length > 0 ? await makeSecretsDir() : undefined;
  const cache = CacheIndex.forStore(store.root);
  const noCacheStages = new Set((request.noCacheFilter ?? []).map((s) => s.toLowerCase()));
  const stageOf = new Map<string, string>();
  for (const build of lowered) {
    for (const [digest, stage] of vertexStages(build.graph, build.stages)) stageOf.set(digest, stage);
  }
  const ignoreCache = (digest: string) =>
    request.noCache === true || noCacheStages.has(stageOf.get(digest) ?? "");
  const close = async () => {
    cache.close();
    await rm(stateDir, { recursive: true, force: true });
    if (secretsDir !== undefined) await rm(secretsDir, { recursive: true, force: true });
  };
  return { stateDir, secretsDir, cache, ignoreCache, close };
}

/**
 * config.toml's [gc] limits, applied after a build: to the build cache, then to the cache mounts
 * this build did not use. The images of kept containers stay.
 */
async function enforceGcPolicy(
  config: TbuildConfig,
  store: Store,
  cache: CacheIndex,
  buildStarted: number,
): Promise<void> {
  const gcPolicy = readGcPolicy(config);
  if (!gcPolicy) return;
  const keepImages = (await containerImages(store.root)).map((c) => c.image);
  if (await applyGcPolicy(store, cache, { ...gcPolicy, keepImages })) await pruneUnneededLayers(store, cache);
  await applyGcPolicyToCacheMounts(store, cache, { ...gcPolicy, keepImages }, buildStarted);
}

/** The worker that runs a build's steps here: the store's snapshots, the build's sources, secrets and agents. */
function localWorker(
  build: Pick<
    SharedBuild,
    "request" | "ctx" | "store" | "snapshotter" | "secrets" | "sshAgents" | "registry" | "sourceDateEpoch"
  >,
  options: {
    localSources: Record<string, string>;
    ignoreCache: (digest: string) => boolean;
    warn: (message: string) => void;
    stateDir: string;
    secretsDir: string | undefined;
    cacheMounts?: OpContext["cacheMounts"];
  },
): LocalWorker {
  const { request, ctx, store, snapshotter, secrets, sshAgents, registry, sourceDateEpoch } = build;
  return new LocalWorker({
    store,
    ignoreCache: options.ignoreCache,
    snapshotter,
    warn: options.warn,
    localSources: options.localSources,
    secrets,
    proxyEnv: proxyEnv(request.buildArgs ?? {}),
    ssh: sshAgents,
    compression: "gzip",
    ...(sourceDateEpoch !== undefined ? { sourceDateEpoch } : {}),
    stateDir: options.stateDir,
    ...(options.secretsDir !== undefined ? { secretsDir: options.secretsDir } : {}),
    ...(options.cacheMounts ? { cacheMounts: options.cacheMounts } : {}),
    ...(request.stepTimeoutMs !== undefined ? { stepTimeoutMs: request.stepTimeoutMs } : {}),
    registry: { hosts: registry.hosts, configPath: registry.configPath, env: ctx.env },
  });
}

/** What a build of several platforms shares with the single-platform path, set up once. */
interface SharedBuild {
  request: BuildRequest;
  ctx: RunContext;
  events: BuildEventStream;
  dockerfile: Awaited<ReturnType<typeof readRequestDockerfile>>;
  config: Awaited<ReturnType<typeof loadConfig>>;
  jobs: number;
  sourceDateEpoch: number | undefined;
  secrets: Record<string, SecretSource>;
  sshAgents: Record<string, string>;
  registry: PushOptions;
  store: Store;
  snapshotter: Snapshotter;
  /** The cache export and import code, loaded when the build has a `--cache-to` or `--cache-from`. */
  buildCache: typeof import("../solver/build-cache.js") | undefined;
}

/**
 * A build for several platforms (`--platform linux/amd64,linux/arm64`), as BuildKit makes one:
 * a plan and a solve per platform, each step named with its platform; what two platforms share
 * (the context, a stage `FROM --platform=$BUILDPLATFORM`) is the same vertex, solved once and
 * cached for the other. The result is one index with a manifest per platform
 * (exporters/index.ts exportPlatforms).
 */
async function buildPlatforms(platforms: Platform[], shared: SharedBuild): Promise<BuildResult> {
  const { request, ctx, events, dockerfile, config, jobs, sourceDateEpoch, secrets, sshAgents, store } =
    shared;
  const { registry } = shared;
  const warn = (message: string) => events.warn(message);
  const { checkPlatformsOutput } = await import("../exporters/index.js");
  for (const output of request.outputs ?? []) checkPlatformsOutput(output, platforms);
  const plans: BuildPlan[] = [];
  for (const platform of platforms) {
    const name = formatPlatform(platform);
    plans.push(
      await events.internal(`[internal] load metadata and resolve base images for ${name}`, () =>
        planBuild(
          { ...request, platforms: [name] },
          {
            store,
            config,
            env: ctx.env,
            cwd: ctx.cwd,
            signal: ctx.signal,
            warn,
            platformInNames: true,
            ...servedToPlan(ctx),
          },
          dockerfile,
        ),
      ),
    );
  }
  for (const plan of plans) checkRequiredSecrets(plan.lowered.graph, secrets, sshAgents);
  const { buildCache } = shared;
  const cacheTo = request.cacheTo;
  const imported = await buildCache?.importBuildCache(
    request.cacheFrom ?? [],
    store.content,
    { ...registry, platforms: plans.map((plan) => plan.targetPlatform) },
    ctx.served?.cacheDirectories,
  );
  const mountTransport = cacheMountTransport(request, store, imported, events, ctx.signal);
  // Each platform's records, collected after its solve; written as one cache after the last.
  const platformCaches: CacheDescription[] = [];
  const { stateDir, secretsDir, cache, ignoreCache, close } = await openBuildState(
    request,
    store,
    secrets,
    plans.map((plan) => plan.lowered),
  );
  const buildStarted = Date.now();
  const provenance = provenanceOf(request);
  const vcs = provenance ? await gitCheckoutOf(dockerfile.contextDir) : undefined;
  try {
    const worker = localWorker(shared, {
      localSources: plans[0]!.localSources,
      ignoreCache,
      warn,
      stateDir,
      secretsDir,
      ...(mountTransport ? { cacheMounts: mountTransport.hook() } : {}),
    });
    const images: PlatformImage[] = [];
    const exporters = await import("../exporters/index.js");
    // One solve of every platform's graph: a vertex they share (content-addressed, so the same
    // digest) runs once, and the platforms' own steps run side by side in one queue.
    const graph: BuildGraph = { vertices: {}, info: {} };
    for (const plan of plans) {
      const { graph: own, root } = plan.lowered;
      for (const [digest, vertex] of Object.entries(own.vertices)) graph.vertices[digest] ??= vertex;
      for (const [digest, info] of Object.entries(own.info)) graph.info[digest] ??= info;
      events.emit({
        type: "build.planned",
        vertices: root ? reachable(own, root).size : 0,
        ...(root ? { root } : {}),
        graph: own,
        image: plan.lowered.image,
      });
    }
    const roots = plans.flatMap((plan) => (plan.lowered.root ? [plan.lowered.root] : []));
    const solved =
      roots.length > 0
        ? await solve(graph, roots, {
            worker,
            cache,
            hasBlob: (digest) => store.content.has(digest),
            ...(imported ? { remoteCache: imported } : {}),
            jobs,
            signal: ctx.signal,
            onEvent: (event) => events.solved(event),
            ignoreCache,
          })
        : undefined;
    const solvedAt = new Date();
    if (solved) mountTransport?.noteDeclared(graph, solved);
    let nextRoot = 0;
    for (const plan of plans) {
      const { root } = plan.lowered;
      // This platform's part of the solve: what its root needed.
      const mine = root ? reachable(plan.lowered.graph, root) : new Set<string>();
      const own = <T>(digests: T[], digestOf: (item: T) => string) =>
        digests.filter((d) => mine.has(digestOf(d)));
      const part = {
        result: root ? solved!.rootResults[nextRoot++]! : { layers: [] },
        keys: new Map(own([...(solved?.keys ?? [])], ([d]) => d)),
        results: solved?.results ?? new Map(),
        ran: own(solved?.ran ?? [], (d) => d),
        cached: own(solved?.cached ?? [], (d) => d),
      };
      const cacheOf = (mode: "min" | "max") =>
        buildCache!.collectBuildCache(part, cache, imported, store.content, mode);
      if (cacheTo !== undefined && cacheTo.type !== "inline")
        platformCaches.push(await cacheOf(cacheTo.mode));
      // Inline cache: each platform's image config carries its own records, as BuildKit's do.
      const imageConfig =
        cacheTo?.type === "inline"
          ? { ...plan.lowered.image, [INLINE_CACHE_FIELD]: encodeCacheDescription(await cacheOf("min")) }
          : plan.lowered.image;
      const when = sourceDateEpoch !== undefined ? { sourceDateEpoch } : { now: builtAt(part, cache) };
      const assembled = await exporters.assembleImage(
        store.content,
        { result: part.result, config: imageConfig },
        when,
      );
      const attestations = provenance
        ? [
            collectProvenance(provenance, {
              request,
              dockerfile,
              graph: plan.lowered.graph,
              ...(root ? { root } : {}),
              localSources: Object.keys(plan.localSources),
              vcs,
              startedOn: new Date(buildStarted),
              finishedOn: solvedAt,
              ...(sourceDateEpoch !== undefined ? { epoch: sourceDateEpoch } : {}),
              env: ctx.env,
            }),
          ]
        : [];
      if (sbomOf(request)) {
        attestations.push(
          await events.internal(
            `scanning the image for its SBOM (${formatPlatform(plan.targetPlatform)})`,
            () =>
              collectSbom({
                store,
                snapshotter: shared.snapshotter,
                lowered: plan.lowered,
                result: part.result,
                results: part.results,
                contextDir: dockerfile.contextDir,
                name: sbomName(request, plan.lowered.target.name),
                ...(sourceDateEpoch !== undefined ? { epoch: sourceDateEpoch } : {}),
                signal: ctx.signal,
              }),
          ),
        );
      }
      images.push({ platform: plan.targetPlatform, assembled, result: part.result, attestations });
    }
    // Steps are what the Dockerfile says (tbuild's own helper steps not counted), each once.
    const steps = (digests: string[]) => digests.filter((d) => !graph.info[d]?.internal);
    const ran = new Set(steps(solved?.ran ?? []));
    const cached = new Set(steps(solved?.cached ?? []).filter((d) => !ran.has(d)));
    const keys = new Set(solved?.keys.values() ?? []);
    ctx.onCacheKeys?.([...keys]);
    const outcome = await events.internal("exporting to image", () =>
      exportPlatformsBuild(images, request, { ...ctx, warn }, registry, store),
    );
    if (cacheTo !== undefined && cacheTo.type !== "inline") {
      await exportBuildCache(cacheTo, async () => buildCache!.combinePlatformCaches(platformCaches), {
        buildCache: buildCache!,
        events,
        ctx,
        store,
        registry,
        mountTransport,
      });
    }
    await enforceGcPolicy(config, store, cache, buildStarted);
    const size = images.reduce(
      (sum, { assembled }) =>
        sum +
        assembled.manifestDescriptor.size +
        assembled.configDescriptor.size +
        assembled.manifest.layers.reduce((n, layer) => n + layer.size, 0),
      0,
    );
    const summary: BuildSummary = {
      digest: outcome.digest,
      size,
      names: outcome.names,
      ran: ran.size,
      cached: cached.size,
    };
    events.completed(summary);
    // Every platform's steps at once: each is named with its platform, so it is compared with
    // that platform's earlier record of the step.
    if (request.explain === true && solved !== undefined)
      await explain(events, { graph, solved, cache, store, request, buildStarted });
    return summary;
  } finally {
    await close();
  }
}

/** The outputs of a build of several platforms; the outcome reported is the index's (stored or pushed). */
export async function exportPlatformsBuild(
  images: PlatformImage[],
  request: BuildRequest,
  ctx: RunContext & { warn: (message: string) => void },
  registry: PushOptions,
  store: Store,
) {
  const exporters = await import("../exporters/index.js");
  const outcome =
    (await exportEach(exportRequests(request, ctx), (output) =>
      exporters.exportPlatforms(store, images, output, exportOptions(ctx, registry)),
    )) ??
    // Unnamed and unexported (only filesystem outputs, or none): the index is still made, as the
    // build's result, so that its digest means what a stored one would.
    (await exporters.exportPlatforms(store, images, { type: "image", names: [] }, { signal: ctx.signal }))!;
  await writeOutcomeFiles(request, ctx.cwd, outcome);
  return outcome;
}

/**
 * The outputs of a build whose image is already in the store (a remote worker's, brought back),
 * each written as a local build writes it (exportBuild), from the image as stored; the outcome
 * reported is chosen as exportBuild chooses it, none when no output gives one.
 */
export async function exportStoredImage(
  store: Store,
  manifest: Descriptor,
  request: BuildRequest,
  ctx: RunContext & { warn: (message: string) => void },
  registry: PushOptions,
) {
  const exporters = await import("../exporters/index.js");
  const { assembled, result } = await exporters.storedImage(store.content, manifest);
  return exportEach(exportRequests(request, ctx), (output) =>
    exporters.exportImage(store, assembled, result, output, exportOptions(ctx, registry)),
  );
}

async function exportBuild(
  store: Store,
  image: ImageConfig,
  result: FsResult,
  request: BuildRequest,
  ctx: RunContext & { warn: (message: string) => void },
  /** The image's time: SOURCE_DATE_EPOCH's, or when it was built. */
  when: { sourceDateEpoch: number } | { now: Date },
  registry: PushOptions,
  attestations: readonly Attestation[] = [],
) {
  const exporters = await import("../exporters/index.js");
  const assembled = await exporters.assembleImage(store.content, { result, config: image }, when);
  ctx.onImage?.(assembled.manifestDescriptor);
  const size =
    assembled.manifestDescriptor.size +
    assembled.configDescriptor.size +
    assembled.manifest.layers.reduce((sum, layer) => sum + layer.size, 0);
  const exported = await exportEach(exportRequests(request, ctx), (output) =>
    exporters.exportImage(store, assembled, result, output, exportOptions(ctx, registry), attestations),
  );
  // A filesystem output (local, tar) has no manifest of its own: the assembled image's digests.
  const outcome: { digest: string; configDigest?: string; names: string[] } = exported ?? {
    digest: assembled.manifestDescriptor.digest,
    configDigest: assembled.configDescriptor.digest,
    names: [],
  };
  await writeOutcomeFiles(request, ctx.cwd, outcome);
  return { ...outcome, size };
}

/**
 * The exports a build's request asks for, as buildx reads them: each `-o` (its destination
 * relative to the caller), and the store (and push) under the `-t` names, which also name the
 * image inside oci and docker archives. Warns when there is nothing to write.
 */
function exportRequests(request: BuildRequest, ctx: RunContext & { warn: (message: string) => void }) {
  const names = request.tags ?? [];
  const outputs = (request.outputs ?? []).map((output) => resolveDest(output, ctx.cwd));
  const requests = outputs.map((output) => {
    const named = (output.type === "oci" || output.type === "docker") && !output.names?.length;
    return named && names.length > 0 ? { ...output, names } : output;
  });
  if (names.length > 0) requests.unshift({ type: "image", names, push: request.push === true });
  if (names.length === 0 && outputs.length === 0) {
    ctx.warn("no output given (-t NAME or -o): the result stays in the build cache only");
  }
  // An image output that names nothing stores nothing.
  return requests.filter((output) => output.type !== "image" || (output.names ?? []).length > 0);
}

/**
 * Writes each export in turn. Outputs may differ in digest (an archive's Docker media types,
 * another compression): the outcome reported is the stored or pushed image's, as buildx reports
 * the pushed digest; else the last archive's. A filesystem output (local, tar) gives none.
 */
async function exportEach<T>(
  requests: ExportRequest[],
  exportOne: (output: ExportRequest) => Promise<T | undefined>,
): Promise<T | undefined> {
  let outcome: T | undefined;
  let reportedRank = -1;
  for (const output of requests) {
    const exported = await exportOne(output);
    const rank = REPORTED_OUTPUT_RANK[output.type];
    if (exported !== undefined && rank >= reportedRank) {
      outcome = exported;
      reportedRank = rank;
    }
  }
  return outcome;
}

function exportOptions(ctx: RunContext & { warn: (message: string) => void }, registry: PushOptions) {
  return { signal: ctx.signal, warn: ctx.warn, registry, stdout: ctx.stdout ?? process.stdout };
}

/** `--iidfile` and `--metadata-file`, when the request asks for them. */
async function writeOutcomeFiles(
  request: BuildRequest,
  cwd: string,
  outcome: Parameters<typeof import("../exporters/index.js").writeMetadataFile>[1],
): Promise<void> {
  const exporters = await import("../exporters/index.js");
  if (request.iidFile) await exporters.writeIidFile(path.resolve(cwd, request.iidFile), outcome);
  if (request.metadataFile)
    await exporters.writeMetadataFile(path.resolve(cwd, request.metadataFile), outcome);
}

/** An output's destination, relative to the caller's directory (`-` is standard output). */
function resolveDest(output: ExportRequest, cwd: string): ExportRequest {
  return output.dest === undefined || output.dest === "-"
    ? output
    : { ...output, dest: path.resolve(cwd, output.dest) };
}

/** Which output's digest the build reports when there are several: the highest rank, the last of equals. */
const REPORTED_OUTPUT_RANK: Record<ExportType, number> = {
  image: 2,
  oci: 1,
  docker: 1,
  tar: 0,
  local: 0,
};

const inputsIn = (graph: BuildGraph) => (digest: string) => graph.vertices[digest]?.inputs ?? [];

/** The vertices `root` needs: the steps a build reports on. */
function reachable(graph: BuildGraph, root: string): Set<string> {
  return new Set(inputsFirst([root], inputsIn(graph)));
}

/** Which stage each vertex belongs to, for `--no-cache-filter`: the stage whose root reaches it first. */
function vertexStages(graph: BuildGraph, stages: { name: string; root?: string }[]): Map<string, string> {
  const owner = new Map<string, string>();
  const seen = new Set<string>();
  for (const stage of stages) {
    if (!stage.root) continue;
    for (const digest of inputsFirst([stage.root], inputsIn(graph), seen)) owner.set(digest, stage.name);
  }
  return owner;
}

/**
 * When the image was made: when the newest of the steps' results the build used was made, as the build cache
 * records it (a step that ran was recorded as it finished). A rebuild that changed nothing, or
 * that took every step from an imported cache, so gives the very same image (its config's
 * `created` unchanged), as Docker's builder does. Now when there is no step to go by.
 */
function builtAt(
  solved: { ran: string[]; cached: string[]; keys: Map<string, string>; results: Map<string, unknown> },
  cache: CacheIndex,
): Date {
  let newest: number | undefined;
  for (const digest of [...solved.ran, ...solved.cached]) {
    // Below a cache hit: a step whose result the build never needed, and may hold no record.
    if (!solved.results.has(digest)) continue;
    const key = solved.keys.get(digest);
    // No key: a source only read through the selections of the steps that use it (see solve.ts).
    if (key === undefined) continue;
    const created = cache.createdAt(key);
    if (created === undefined) return new Date();
    newest = Math.max(newest ?? 0, created);
  }
  return new Date(newest ?? Date.now());
}
