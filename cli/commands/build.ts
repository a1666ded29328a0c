import { constants } from "node:fs";
import { access, rm, stat } from "node:fs/promises";
import { availableParallelism } from "node:os";
import path from "node:path";
import { TbuildError, UsageError } from "../../errors/index.js";
import type { ExportType } from "../../exporters/index.js";
import { type ExportRequest, parseOutputSpec } from "../../exporters/request.js";
import { readDockerignore } from "../../frontend/dockerignore.js";
import { lowerDockerfile, proxyEnv } from "../../frontend/lower/index.js";
import { parseDockerfileCached } from "../../frontend/syntax/parse-cache.js";
import { hostPlatform } from "../../oci/platform.js";
import { defaultStoreRoot, type Store } from "../../oci/store/index.js";
import { CacheIndex } from "../../solver/cache.js";
import { encodeCacheDescription, INLINE_CACHE_FIELD } from "../../solver/cache-description.js";
import { applyGcPolicy, parseDuration } from "../../solver/gc.js";
import type { BuildGraph } from "../../solver/graph.js";
import { StepFailedError, solve } from "../../solver/solve.js";
import { inputsFirst } from "../../solver/walk.js";
import {
  makeBuildStateDir,
  removeAbandonedBuildStates,
  stopAbandonedContainers,
} from "../../worker/build-state.js";
import { LocalWorker } from "../../worker/local.js";
import type { SecretSource } from "../../worker/ops/context.js";
import { Snapshotter } from "../../worker/snapshot/index.js";
import { hasWorkerPrivileges, reexecInUserNamespace } from "../../worker/userns.js";
import { parseBuildContexts } from "../build-context.js";
import { loadConfig, readBuildDefaults, readGcPolicy, readWorkerSettings } from "../config.js";
import { type DockerfileInput, readDockerfileInput } from "../dockerfile.js";
import { parseBuildNetwork } from "../network.js";
import { describeStepFailure, openProgress, type ProgressSink, progressModeOf } from "../progress/index.js";
import { storeImageResolver } from "../resolver.js";
import type { CommandContext, ParsedCommandLine } from "../spec.js";
import { containerImages, openCommandStore, pruneUnneededLayers } from "../store.js";
import { parseBuildPlatform, parseImageTag, parseKeyValues } from "../values.js";

type Values = ParsedCommandLine["values"];
const list = (values: Values, name: string) => (values[name] as string[] | undefined) ?? [];
const text = (values: Values, name: string) => values[name] as string | undefined;

/** Flags a user of `docker buildx build` may pass that tbuild cannot honour yet: refused, never ignored. */
const NOT_YET = ["worker"] as const;

export async function run(args: ParsedCommandLine, commandCtx: CommandContext): Promise<number> {
  const { values } = args;
  for (const flag of NOT_YET) {
    const value = values[flag];
    if (value !== undefined && value !== false && !(Array.isArray(value) && value.length === 0)) {
      throw new TbuildError("E_NOT_SUPPORTED", `--${flag} is not supported yet`);
    }
  }
  const [contextArg, ...extra] = args.positionals;
  if (contextArg === undefined || extra.length > 0)
    throw new UsageError("tbuild build takes exactly one CONTEXT (a directory)");
  // Checked before anything runs (and before a rootless re-exec); build() reads it again.
  parseStepTimeout(text(values, "step-timeout"));
  for (const tag of list(values, "tag")) parseImageTag(tag, "-t");
  const progressMode = progressModeOf(
    text(values, "progress") ?? commandCtx.env.TBUILD_PROGRESS,
    values.quiet === true,
    commandCtx.stderr,
    commandCtx.env,
  );

  // Unprivileged: the whole build runs again inside a user namespace over the user's subuids.
  if (!hasWorkerPrivileges()) await stopAbandonedContainers(defaultStoreRoot(commandCtx.env));
  const reexec = await reexecInUserNamespace(process.argv.slice(2), commandCtx.env);
  if (reexec !== undefined) return reexec;

  const dockerfile = await readDockerfileInput(commandCtx.cwd, contextArg, text(values, "file"));
  const progress = openProgress(progressMode, commandCtx);
  // Warnings go through the progress, so that they never tear the live view.
  const ctx: CommandContext = { ...commandCtx, warn: (message) => progress.warn(message) };
  try {
    return await build(args, ctx, dockerfile, progress);
  } catch (err) {
    return reportBuildError(err, progress, dockerfile);
  }
}

/**
 * A failed step is reported as BuildKit reports it (its last output, the Dockerfile excerpt), then
 * the reason on the `ERROR:` line; other errors end the progress and go up as they are.
 */
function reportBuildError(err: unknown, progress: ProgressSink, dockerfile: DockerfileInput): number {
  const failure =
    err instanceof StepFailedError
      ? describeStepFailure(err, progress.lastOutput(err.digest), dockerfile)
      : undefined;
  progress.finish({ ok: false, error: err, ...(failure ? { failure } : {}) });
  if (progress.reportsErrors && err instanceof TbuildError) return err.exitCode;
  if (failure) throw new TbuildError("E_STEP_FAILED", failure.reason, { cause: err });
  throw err;
}

async function build(
  args: ParsedCommandLine,
  ctx: CommandContext,
  { contextDir, dockerfilePath, displayName, source }: DockerfileInput,
  progress: ProgressSink,
): Promise<number> {
  const { values } = args;
  const targetPlatform = parseBuildPlatform(text(values, "platform"));
  const config = await loadConfig(ctx.env);
  const jobs =
    values.jobs !== undefined
      ? positiveInt(text(values, "jobs")!, "--jobs")
      : (readBuildDefaults(config).jobs ?? availableParallelism());
  const network = parseBuildNetwork(text(values, "network"));
  const stepTimeoutMs = parseStepTimeout(text(values, "step-timeout"));
  // Checked before anything is resolved or run: a bad --secret is the user's to fix at once.
  const secrets = await parseSecrets(list(values, "secret"), ctx);
  const sshAgents = parseSsh(list(values, "ssh"), ctx.env);
  // Loaded only for builds that import or export cache (it brings the registry client).
  const buildCache =
    text(values, "cache-to") || list(values, "cache-from").length > 0
      ? await import("../../solver/build-cache.js")
      : undefined;
  const cacheTo = text(values, "cache-to")
    ? buildCache!.parseCacheExportSpec(text(values, "cache-to")!, ctx.cwd)
    : undefined;
  const cacheFrom = list(values, "cache-from").map((spec) => buildCache!.parseCacheImportSpec(spec, ctx.cwd));
  const outputs = list(values, "output").map((spec) => parseOutputSpec(spec));
  const { snapshotter: snapshotMode } = readWorkerSettings(config);
  const store = await openCommandStore(ctx);
  // What builds killed with SIGKILL left: their state directories and the containers in them,
  // then the root filesystems those containers ran on (still mounted, as real root), the layers
  // and context snapshots they were making, the blobs they were writing.
  await removeAbandonedBuildStates(store.root, { warn: ctx.warn });
  const snapshotter = new Snapshotter(store.root, store.content, snapshotMode ? { mode: snapshotMode } : {});
  await snapshotter.cleanAbandoned();
  await snapshotter.removeAbandonedTemps();
  await store.content.cleanIngest();

  const ast = await parseDockerfileCached(source, {
    file: displayName,
    cacheDir: path.join(store.root, "dockerfiles"),
  });
  for (const w of ast.warnings) ctx.warn(`${ast.file}:${w.range.start.line}: ${w.message}`);
  const target = text(values, "target");
  const buildArgs = parseKeyValues(list(values, "build-arg"), "--build-arg", ctx.env);
  // As BuildKit: --build-arg SOURCE_DATE_EPOCH=N counts as the environment variable does.
  const sourceDateEpoch = parseSourceDateEpoch(buildArgs.SOURCE_DATE_EPOCH ?? ctx.env.SOURCE_DATE_EPOCH);
  const buildContexts = await parseBuildContexts(list(values, "build-context"), {
    cwd: ctx.cwd,
    store,
    platform: targetPlatform,
    signal: ctx.signal,
  });
  const lowered = await progress.internal(`[internal] load metadata and resolve base images`, async () =>
    lowerDockerfile(ast, {
      buildArgs,
      namedContexts: buildContexts.namedContexts,
      ...(target !== undefined ? { target } : {}),
      targetPlatform,
      buildPlatform: hostPlatform(),
      resolver: storeImageResolver(store, {
        pull: values.pull === true ? "always" : "missing",
        hosts: config.registries,
        configPath: config.path,
        env: ctx.env,
        warn: ctx.warn,
      }),
      excludePatterns: await readDockerignore(contextDir, dockerfilePath),
      labels: parseKeyValues(list(values, "label"), "--label", {}),
      network,
      signal: ctx.signal,
      warn: (w) => ctx.warn(`${w.position ? `${w.file}:${w.position.line}: ` : ""}${w.message}`),
    }),
  );

  const registryOptions = { hosts: config.registries, configPath: config.path, env: ctx.env, warn: ctx.warn };
  const imported = await buildCache?.importBuildCache(cacheFrom, store.content, {
    ...registryOptions,
    platform: targetPlatform,
  });
  checkRequiredSecrets(lowered.graph, secrets, sshAgents);
  const stateDir = await makeBuildStateDir(store.root);
  const cache = CacheIndex.forStore(store.root);
  const noCacheStages = new Set(list(values, "no-cache-filter").map((s) => s.toLowerCase()));
  const stageOf = vertexStages(lowered.graph, lowered.stages);
  const ignoreCache = (digest: string) =>
    values["no-cache"] === true || noCacheStages.has(stageOf.get(digest) ?? "");
  try {
    const worker = new LocalWorker({
      store,
      ignoreCache,
      snapshotter,
      warn: ctx.warn,
      localSources: { ...buildContexts.localSources, context: contextDir },
      secrets,
      proxyEnv: proxyEnv(buildArgs),
      ssh: sshAgents,
      compression: "gzip",
      ...(sourceDateEpoch !== undefined ? { sourceDateEpoch } : {}),
      stateDir,
      ...(stepTimeoutMs !== undefined ? { stepTimeoutMs } : {}),
      registry: { hosts: config.registries, configPath: config.path, env: ctx.env },
    });
    const buildStarted = Date.now();
    if (lowered.root) progress.plan(reachable(lowered.graph, lowered.root).size);
    const solved = lowered.root
      ? await solve(lowered.graph, lowered.root, {
          worker,
          cache,
          hasBlob: (digest) => store.content.has(digest),
          ...(imported ? { remoteCache: imported } : {}),
          jobs,
          signal: ctx.signal,
          onEvent: (event) => progress.handle(event),
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
    const cacheOf = (mode: "min" | "max") =>
      buildCache!.collectBuildCache(solved, cache, imported, store.content, mode);
    // Inline cache rides in the image config, so it is collected before the image is assembled.
    const image =
      cacheTo?.type === "inline"
        ? { ...lowered.image, [INLINE_CACHE_FIELD]: encodeCacheDescription(await cacheOf("min")) }
        : lowered.image;
    const exported = await progress.internal("exporting to image", () =>
      exportBuild(
        store,
        image,
        solved.result,
        values,
        outputs,
        ctx,
        sourceDateEpoch !== undefined ? { sourceDateEpoch } : { now: builtAt(solved, cache) },
        {
          hosts: config.registries,
          configPath: config.path,
          env: ctx.env,
          warn: ctx.warn,
        },
      ),
    );
    if (cacheTo !== undefined && cacheTo.type !== "inline") {
      await progress
        .internal("exporting cache", async () =>
          buildCache!.writeBuildCache(cacheTo, await cacheOf(cacheTo.mode), store.content, registryOptions),
        )
        .catch((err: unknown) => {
          // ignore-error=true: the image is made; a cache that could not be written is a warning.
          if (cacheTo.ignoreError !== true || ctx.signal.aborted) throw err;
          ctx.warn(`the cache was not exported (ignore-error=true): ${(err as Error).message}`);
        });
    }
    // config.toml's [gc] limits, enforced once the image is named (so its blobs are never candidates).
    const gcPolicy = readGcPolicy(config);
    if (gcPolicy) {
      const keepImages = (await containerImages(store.root)).map((c) => c.image);
      if (await applyGcPolicy(store, cache, { ...gcPolicy, keepImages }))
        await pruneUnneededLayers(store, cache);
    }
    // Steps are what the Dockerfile says; reading the context and the like are not counted.
    const steps = (digests: string[]) => digests.filter((d) => !lowered.graph.info[d]?.internal).length;
    progress.finish({
      ok: true,
      summary: {
        digest: exported.digest,
        configDigest: exported.configDigest,
        size: exported.size,
        names: exported.names,
        ran: steps(solved.ran),
        cached: steps(solved.cached),
      },
    });
    if (values.explain === true) {
      const { printExplanations } = await import("../explain.js");
      await printExplanations(ctx.stderr, progress.reportsErrors ? "rawjson" : "text", {
        graph: lowered.graph,
        solved,
        cache,
        storeRoot: store.root,
        buildArgs: Object.keys(buildArgs),
        buildStarted,
      });
    }
    return 0;
  } finally {
    cache.close();
    await rm(stateDir, { recursive: true, force: true });
  }
}

async function exportBuild(
  store: Store,
  image: Parameters<typeof import("../../exporters/index.js")["assembleImage"]>[1]["config"],
  result: import("../../solver/worker.js").FsResult,
  values: Values,
  outputs: ExportRequest[],
  ctx: CommandContext,
  /** The image's time: SOURCE_DATE_EPOCH's, or when it was built. */
  when: { sourceDateEpoch: number } | { now: Date },
  registry: import("../../oci/registry/push.js").PushOptions,
) {
  const exporters = await import("../../exporters/index.js");
  const assembled = await exporters.assembleImage(store.content, { result, config: image }, when);
  const names = list(values, "tag");
  // As buildx does, the -t names also name the image inside oci and docker archives.
  const requests = outputs.map((request) => {
    const named = (request.type === "oci" || request.type === "docker") && !request.names?.length;
    return named && names.length > 0 ? { ...request, names } : request;
  });
  if (names.length > 0 || requests.length === 0) {
    requests.unshift({ type: "image", names, push: values.push === true });
  }
  const size =
    assembled.manifestDescriptor.size +
    assembled.configDescriptor.size +
    assembled.manifest.layers.reduce((sum, layer) => sum + layer.size, 0);
  let outcome: { digest: string; configDigest: string; names: string[] } = {
    digest: assembled.manifestDescriptor.digest,
    configDigest: assembled.configDescriptor.digest,
    names: [],
  };
  if (names.length === 0 && outputs.length === 0) {
    ctx.warn("no output given (-t NAME or -o): the result stays in the build cache only");
  }
  // Outputs may differ in digest (an archive's Docker media types, another compression): the one
  // reported is the stored or pushed image's, as buildx reports the pushed digest; else the last
  // archive's; a filesystem output (local, tar) has no manifest of its own.
  let reportedRank = -1;
  for (const request of requests) {
    if (request.type === "image" && (request.names ?? []).length === 0) continue;
    const exported = await exporters.exportImage(store, assembled, result, request, {
      signal: ctx.signal,
      warn: ctx.warn,
      registry,
      stdout: ctx.stdout,
    });
    const rank = REPORTED_OUTPUT_RANK[request.type];
    if (rank >= reportedRank) {
      outcome = exported;
      reportedRank = rank;
    }
  }
  const iidfile = text(values, "iidfile");
  if (iidfile) await exporters.writeIidFile(path.resolve(ctx.cwd, iidfile), outcome);
  const metadataFile = text(values, "metadata-file");
  if (metadataFile) await exporters.writeMetadataFile(path.resolve(ctx.cwd, metadataFile), outcome);
  return { ...outcome, size };
}

/** Which output's digest the build reports when there are several: the highest rank, the last of equals. */
const REPORTED_OUTPUT_RANK: Record<ExportType, number> = {
  image: 2,
  oci: 1,
  docker: 1,
  tar: 0,
  local: 0,
};

/** `--step-timeout 30s|5m|1h`: off when absent. */
function parseStepTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(value);
  if (ms === undefined || ms < 1) {
    throw new UsageError(`--step-timeout takes a duration such as 30s, 5m or 1h, not "${value}"`);
  }
  return ms;
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new UsageError(`${flag} takes a whole number of at least 1, not "${value}"`);
  return n;
}

/**
 * `--secret id=ID[,src=PATH|source=PATH|env=VAR]`; `id=ID` alone reads the environment variable ID,
 * as buildx does. A source that cannot give a secret (no such file, a directory, an unset variable)
 * is an error naming the secret before any step runs; buildx would fail only in the step that
 * mounts it (a directory), or mount an empty secret (an unset variable).
 */
async function parseSecrets(
  specs: string[],
  { env, cwd }: { env: NodeJS.ProcessEnv; cwd: string },
): Promise<Record<string, SecretSource>> {
  const secrets: Record<string, SecretSource> = {};
  for (const spec of specs) {
    const fields = Object.fromEntries(
      spec.split(",").map((f) => {
        const eq = f.indexOf("=");
        return eq < 0 ? [f, ""] : [f.slice(0, eq), f.slice(eq + 1)];
      }),
    ) as Record<string, string>;
    const id = fields.id;
    if (!id) throw new UsageError(`--secret "${spec}" has no id=`);
    const file = fields.src ?? fields.source;
    if (file !== undefined) {
      secrets[id] = { file: await checkSecretFile(id, path.resolve(cwd, file), file) };
    } else if (fields.env !== undefined) {
      if (env[fields.env] === undefined) {
        throw new TbuildError(
          "E_SECRET_SOURCE",
          `--secret id=${id}: the environment variable ${fields.env} is not set: set it (${fields.env}= for an empty secret), or give src=FILE`,
        );
      }
      secrets[id] = { env: fields.env };
    } else if (env[id] !== undefined) secrets[id] = { env: id };
    else throw new UsageError(`--secret id=${id} names no src= file or env= variable, and $${id} is not set`);
  }
  return secrets;
}

/** The secret's file, if it is one tbuild can read; else an error naming the secret and the file. */
async function checkSecretFile(id: string, file: string, shown: string): Promise<string> {
  const problem = (what: string) =>
    new TbuildError("E_SECRET_SOURCE", `--secret id=${id}: src=${shown} ${what}`);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw code === "ENOENT" ? problem("does not exist") : problem(`cannot be read (${code})`);
  }
  if (info.isDirectory()) throw problem("is a directory: a secret is one file");
  try {
    await access(file, constants.R_OK);
  } catch (err) {
    throw problem(`cannot be read (${(err as NodeJS.ErrnoException).code})`);
  }
  return file;
}

/** `--ssh default` forwards $SSH_AUTH_SOCK; `--ssh ID=SOCKET` a given agent socket. */
function parseSsh(specs: string[], env: NodeJS.ProcessEnv): Record<string, string> {
  const agents: Record<string, string> = {};
  for (const spec of specs) {
    const [id, socket] = spec.includes("=") ? (spec.split("=", 2) as [string, string]) : [spec, undefined];
    const resolved = socket ?? env.SSH_AUTH_SOCK;
    if (!resolved) throw new UsageError(`--ssh ${spec}: no agent socket given and SSH_AUTH_SOCK is not set`);
    agents[id] = path.resolve(resolved);
  }
  return agents;
}

/** A required secret the build was not given is an error before anything runs. */
function checkRequiredSecrets(
  graph: BuildGraph,
  secrets: Record<string, SecretSource>,
  ssh: Record<string, string>,
) {
  for (const [digest, vertex] of Object.entries(graph.vertices)) {
    if (vertex.op.kind !== "exec") continue;
    const where = graph.info[digest]?.location;
    const at = where ? `${where.file}:${where.startLine}: ` : "";
    for (const mount of vertex.op.mounts) {
      if (mount.secret?.required && secrets[mount.secret.id] === undefined) {
        throw new TbuildError(
          "E_MISSING_SECRET",
          `${at}RUN needs secret "${mount.secret.id}" (required=true), which this build was not given: pass --secret id=${mount.secret.id},src=PATH`,
        );
      }
      if (mount.ssh?.required && ssh[mount.ssh.id] === undefined) {
        const flag = mount.ssh.id === "default" ? "--ssh default" : `--ssh ${mount.ssh.id}=SOCKET`;
        throw new TbuildError(
          "E_MISSING_SECRET",
          `${at}RUN needs the ssh agent "${mount.ssh.id}" (required=true), which this build was not given: pass ${flag}`,
        );
      }
    }
  }
}

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
 * When the image was made: now, unless no step ran, when it is when the newest of the cached
 * results was made, so that a rebuild that changed nothing gives the very same image (its
 * config's `created` unchanged), as Docker's builder does.
 */
function builtAt(
  solved: { ran: string[]; cached: string[]; keys: Map<string, string> },
  cache: CacheIndex,
): Date {
  if (solved.ran.length > 0 || solved.cached.length === 0) return new Date();
  let newest = 0;
  for (const digest of solved.cached) {
    const key = solved.keys.get(digest);
    // No key: a source only read through the selections of the steps that use it (see solve.ts).
    if (key === undefined) continue;
    const created = cache.createdAt(key);
    if (created === undefined) return new Date();
    newest = Math.max(newest, created);
  }
  return new Date(newest);
}

/** SOURCE_DATE_EPOCH's seconds; a value that is not a whole number of seconds is the user's to fix. */
function parseSourceDateEpoch(value: string | undefined): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d+$/.test(value)) {
    throw new UsageError(
      `SOURCE_DATE_EPOCH must be a whole number of seconds since 1970, not ${JSON.stringify(value)}`,
    );
  }
  return Number(value);
}
