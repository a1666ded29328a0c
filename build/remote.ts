/**
 * A build on a remote worker (`--worker ssh://USER@HOST` or `cmd://COMMAND`): the client's half.
 * The worker is `tbuild worker --stdio`, started for this build over SSH (or by the command) and
 * gone after it: no daemon. Its half is build/remote-serve.ts.
 *
 * The client reads the Dockerfile and `.dockerignore`, lists its context, and opens one `build`
 * call: the worker asks for what its synced copy of the context lacks, builds in its own store,
 * and sends its events (shown as a local build's are) and what the client keeps: the `-o` archives
 * and files, and the image (only the blobs this store lacks) for what the client writes itself
 * with a local build's exporters: names in its store (`-t`, `-o type=image`), layout directories
 * (`tar=false`). `--push` pushes from the worker.
 *
 * Secrets and SSH agents stay the client's: the worker asks for a secret when a step mounts it, and
 * relays an agent's connections for the steps that mount it.
 *
 * Which worker (a URL, a `[worker.NAME]`, the best of a `pool:NAME`) and the retry when a
 * connection is lost (on the same worker, or another of the pool) are remote-target.ts's: it
 * connects with this file's handlers and hands it the connection.
 *
 * Several platforms (`--platform a,b`): each platform is a build of its own, all at once, each on
 * the worker chosen for it (in a pool, one that runs it natively), which pushes its image by digest;
 * the index is assembled here, as a local build assembles it, and pushed from here
 * (runRemotePlatforms).
 *
 * type=local build caches are the client's directories, which the worker reads and writes over
 * the connection (remote-cache.ts).
 */
import { createWriteStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import net from "node:net";
import { hostname, userInfo } from "node:os";
import path from "node:path";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError, UsageError } from "../errors/index.js";
import type { FsEntry } from "../exporters/filesystem.js";
import type { ExportOutcome, PlatformImage } from "../exporters/index.js";
import type { ExportRequest } from "../exporters/request.js";
import { readDockerignore } from "../frontend/dockerignore.js";
import { readTarEntries } from "../oci/archive/tar-reader.js";
import { entryComponents } from "../oci/layer-entry.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import { parseReference } from "../oci/reference.js";
import { getCredentials } from "../oci/registry/credentials.js";
import { type Descriptor, type Manifest, MediaType } from "../oci/spec.js";
import {
  defaultStoreRoot,
  normalizeImageName,
  openStore,
  parseDigest,
  type Store,
} from "../oci/store/index.js";
import type { SecretSource } from "../worker/ops/context.js";
import { ByteTaker, framed, lengthPrefix } from "../worker/remote/bytes.js";
import {
  asksNothing,
  contextData,
  encodeListing,
  filesToSend,
  listContext,
  type SyncEntry,
  type SyncPlan,
} from "../worker/remote/context-sync.js";
import type { Handler } from "../worker/remote/protocol.js";
import { loadConfig, registryOptions } from "./config.js";
import { contextSource } from "./context-source.js";
import { readRequestDockerfile } from "./dockerfile.js";
import { type BuildEvent, BuildEventStream } from "./events.js";
import { provenanceOf } from "./provenance.js";
import { clientCacheDirectories } from "./remote-cache.js";
import { contextKey } from "./remote-keys.js";
import { type ClientLayout, layoutHandlers, type RemoteLayout, readClientLayout } from "./remote-layout.js";
import type { ImageParts, RemoteBuildAnswer, RemoteBuildParams } from "./remote-serve.js";
import {
  CONNECTION_LOST,
  type OpenWorker,
  runOnWorker,
  type WorkerRun,
  whatHappened,
} from "./remote-target.js";
import { type BuildRequest, checkBuildRequest, targetPlatformsOf } from "./request.js";
import type { BuildResult, RunContext } from "./run.js";
import { resolveSecrets, resolveSshAgents } from "./secrets.js";

/**
 * Cache mounts do not travel with a remote worker's build yet: its mounts are on the worker, and
 * nothing carries them to or from the client's cache.
 */
function checkRemoteCacheMounts(request: BuildRequest): void {
  const flag =
    request.cacheTo?.type !== "inline" && request.cacheTo?.mounts === true ? "--cache-to" : undefined;
  const from = (request.cacheFrom ?? []).some((spec) => spec.mounts === true) ? "--cache-from" : undefined;
  const named = flag ?? from;
  if (named === undefined) return;
  throw new TbuildError(
    "E_NOT_SUPPORTED",
    `${named} ...,mounts=true is not supported yet with --worker: cache mounts travel only with a build on this machine; drop mounts=true or build without --worker`,
  );
}

/** The most an output part may be, as the worker announces it. */
const MAX_OUTPUT_BYTES = 2 ** 50;

export async function runRemoteBuild(asked: BuildRequest, ctx: RunContext): Promise<BuildResult> {
  checkBuildRequest(asked);
  checkRemoteCacheMounts(asked);
  const request = withoutProvenance(asked, ctx);
  remoteFileOutputs(request);
  const platforms = targetPlatformsOf(request.platforms);
  if (platforms.length > 1) return await runRemotePlatforms(platforms, request, ctx);
  const { run, secrets, agents } = await prepareRemote(request, ctx);
  return await runOnWorker(request, ctx, run, (worker, prepared) =>
    remoteBuildOnce(request, ctx, worker, prepared, secrets, agents),
  );
}

/**
 * A remote build makes no attestations yet: asked for, it is refused; buildx's default (a pushed
 * image's) is left out with a warning, and the workers are told none either way.
 */
function withoutProvenance(request: BuildRequest, ctx: RunContext): BuildRequest {
  const asked = request.attestations;
  if (asked?.provenance || asked?.sbom) {
    throw new TbuildError(
      "E_NOT_SUPPORTED",
      "attestations (--provenance, --sbom, --attest) with a remote worker (--worker) are not supported yet: build without them, or on this machine",
    );
  }
  if (asked?.provenance === undefined && provenanceOf(request) !== undefined) {
    ctx.onEvent({
      type: "warning",
      message: "the pushed image has no provenance attestation: a remote worker (--worker) makes none yet",
    });
  }
  return { ...request, attestations: { provenance: false } };
}

/**
 * What every try of a remote build (and every platform's part of one) shares: the secrets and
 * agents it serves, the handlers, and the context as read and listed here, once.
 */
async function prepareRemote(request: BuildRequest, ctx: RunContext) {
  // Checked here, before anything travels: the worker asks for each when a step mounts it.
  const secrets = await resolveSecrets(request.secrets ?? [], ctx);
  const agents = resolveSshAgents(request.ssh ?? [], ctx);
  const { namedDirs, layouts, passedOn } = await namedContexts(request, ctx.cwd);
  // A build of several platforms writes one cache of its parts' records, once they are all in.
  const caches = clientCacheDirectories(request, {
    several: targetPlatformsOf(request.platforms).length > 1,
  });
  const handlers: Record<string, Handler> = {
    // The blobs of the client's OCI layouts the worker asks for (--build-context NAME=oci-layout://).
    ...layoutHandlers(layouts),
    ...clientHandlers(secrets, agents, registriesOf(request), ctx.env),
    ...caches.handlers,
    // Which of the image's blobs this store lacks: only those come back.
    lacks: async (params) => {
      const { digests } = params as { digests: string[] };
      const store = await openStore(defaultStoreRoot(ctx.env));
      const lacking: string[] = [];
      for (const digest of digests) {
        parseDigest(digest);
        if (!(await store.content.has(digest))) lacking.push(digest);
      }
      return { lacking };
    },
  };
  const prepare = async (): Promise<PreparedContext> => {
    const dockerfile = await readRequestDockerfile(request, ctx.cwd);
    const ignore = await readDockerignore(dockerfile.contextDir, dockerfile.dockerfilePath);
    // Listed, and encoded, while the connection is still being made.
    const list = async (dir: string, patterns: string[]): Promise<ListedContext> => {
      const listing = await listContext(dir, patterns, ctx.signal);
      return { dir, listing, encoded: encodeListing(listing) };
    };
    const named: PreparedContext["named"] = [];
    for (const [name, dir] of Object.entries(namedDirs)) {
      named.push({ name, ...(await list(dir, await readDockerignore(dir))) });
    }
    return {
      dockerfile,
      ignore,
      main: await list(dockerfile.contextDir, ignore),
      named,
      passedOn,
      layouts: layouts.map(({ dir: _dir, ...told }) => told),
    };
  };
  let prepared: Promise<PreparedContext> | undefined;
  const run: WorkerRun<PreparedContext> = {
    handlers,
    prepare: () => {
      prepared ??= prepare();
      return prepared;
    },
  };
  return { run, secrets, agents, caches };
}

/**
 * A build of several platforms on workers (issue 15, "native workers first"): each platform is a
 * single-platform remote build of its own, all at once, each on the worker remote-target.ts picks
 * for that platform (in a pool, one that runs it natively; else the pool's best, which emulates;
 * a single worker builds them all). The index is assembled here from the platforms' images, as a
 * local build of several platforms assembles it (run.ts exportPlatformsBuild), so it is the one a
 * local build makes (SOURCE_DATE_EPOCH). A platform that fails stops the others.
 *
 * A push (`-t NAME --push`, `-o type=image,push=true`) is the workers': each pushes its platform's
 * image by digest into every repository named, and the client pushes only the index (the
 * registry has the rest). Each image comes back to this store (only the blobs it lacks) only when
 * something here needs it: a name in this store (`-t`, as a local build names it), an `-o` written
 * here; else only its manifest and config do. `-o type=image,push=true` names nothing here, as for
 * one platform on a worker.
 *
 * The build cache, too, ends up as a local build writes it: each part exports a registry cache
 * as a writer of its own (merged at the ref), inline cache in its image, and a type=local cache's
 * blobs to the client, which writes one manifest of every part's records (remote-cache.ts).
 */
async function runRemotePlatforms(
  platforms: Platform[],
  request: BuildRequest,
  ctx: RunContext,
): Promise<BuildResult> {
  const exporters = await import("../exporters/index.js");
  for (const output of request.outputs ?? []) exporters.checkPlatformsOutput(output, platforms);
  if (request.push === true && (request.tags ?? []).length === 0)
    throw new UsageError("push needs a name to push to: give -t NAME, or name=NAME in --output");
  const tags = request.tags ?? [];
  const outputs = request.outputs ?? [];
  const pushOnly = outputs.filter((o) => o.type === "image" && o.push === true);
  const rest = outputs.filter((o) => !pushOnly.includes(o));
  // Pushed by the workers: the -t names (--push) as they are pushed, and each push=true output.
  const pushByDigest: ExportRequest[] = [
    ...(request.push === true ? [{ type: "image" as const, names: tags, push: true }] : []),
    ...pushOnly,
  ];
  // What needs the images here, layers and all: a name in this store, an output written here (or
  // none at all: the unnamed index is the build's result, as for a local build).
  const here = tags.length > 0 || rest.length > 0 || pushOnly.length === 0;
  const events = new BuildEventStream(ctx.onEvent);
  const { run, secrets, agents, caches } = await prepareRemote(request, ctx);
  const stop = new AbortController();
  const signal = AbortSignal.any([ctx.signal, stop.signal]);
  let failureShown = false;
  const {
    tags: _tags,
    outputs: _outputs,
    push: _push,
    iidFile: _iidFile,
    metadataFile: _metadataFile,
    ...common
  } = request;
  const built = await Promise.allSettled(
    platforms.map(async (platform) => {
      const name = formatPlatform(platform);
      // The platform's part: built there, brought back here unnamed; every output is made here.
      // A registry cache is written by each part as a writer of its own (merged at the ref); a
      // local one is written here, once every part has sent its records (caches.finish).
      const part: BuildRequest = {
        ...common,
        platforms: [name],
        ...(common.cacheTo?.type === "registry" ? { cacheTo: { ...common.cacheTo, part: name } } : {}),
      };
      const partCtx: RunContext = {
        ...ctx,
        signal,
        onEvent: (event) => {
          // The first failure is the build's; the others only follow from it.
          if (event.type === "build.failed") {
            if (failureShown) return;
            failureShown = true;
          }
          ctx.onEvent(namedForPlatform(event, name));
        },
      };
      try {
        return await runOnWorker(part, partCtx, run, (worker, prepared) =>
          remoteBuildOnce(part, partCtx, worker, prepared, secrets, agents, {
            platform: name,
            image: here,
            pushByDigest,
          }),
        );
      } catch (err) {
        stop.abort(err);
        throw err;
      }
    }),
  );
  const failures = built.flatMap((b) => (b.status === "rejected" ? [b.reason as unknown] : []));
  if (failures.length > 0) {
    ctx.signal.throwIfAborted();
    // The failure that stopped the others, not the cancellations it caused.
    throw failures.find((err) => (err as { code?: string }).code !== "E_CANCELED") ?? failures[0];
  }
  const parts = built.map(
    (b) => (b as PromiseFulfilledResult<BuildResult & { pushed?: Descriptor[] }>).value,
  );
  const store = await openStore(defaultStoreRoot(ctx.env));
  /** The platforms' images, one manifest each, as the exporters take them. */
  const platformImages = async (manifests: readonly Descriptor[]) => {
    const images: PlatformImage[] = [];
    for (const [i, manifest] of manifests.entries()) {
      images.push({ platform: platforms[i]!, ...(await exporters.storedImage(store.content, manifest)) });
    }
    return images;
  };
  const warn = (message: string) => events.warn(message);
  const registry = registryOptions(await loadConfig(ctx.env), { env: ctx.env, warn });
  const { exportPlatformsBuild } = await import("./run.js");
  const outcome = await events.internal("exporting to image", async () => {
    // Each push=true output: the index of the images the workers pushed, pushed by its tags from
    // here, named nothing here; the registry has every blob of it already.
    const pushed: ExportOutcome[] = [];
    for (const [i, output] of pushOnly.entries()) {
      const { pushDescriptor } = await import("../oci/registry/push.js");
      const k = pushByDigest.indexOf(output);
      const images = await platformImages(parts.map((part) => part.pushed![k]!));
      const index = (await exporters.exportPlatforms(
        store,
        images,
        { ...output, names: [], push: false },
        {
          signal: ctx.signal,
          warn,
        },
      ))!;
      const names = [...new Set((output.names ?? []).map(normalizeImageName))];
      for (const name of names) {
        await pushDescriptor(store, name, index.descriptor!, { ...registry, signal: ctx.signal, warn });
      }
      pushed[i] = { ...index, names };
    }
    // The rest, from the images that came back whole: named, pushed (the index only, as the workers
    // pushed the rest), written.
    const { iidFile: _iid, metadataFile: _metadata, ...unreported } = request;
    const stored = here
      ? await exportPlatformsBuild(
          await platformImages(
            await Promise.all(parts.map((part) => manifestDescriptor(store, part.digest))),
          ),
          pushOnly.length > 0 ? { ...unreported, outputs: rest } : request,
          { ...ctx, warn },
          registry,
          store,
        )
      : undefined;
    if (pushed.length === 0) return stored!;
    // The pushed index is the build's, as buildx reports the pushed digest.
    const reported = {
      ...pushed.at(-1)!,
      names: [...new Set([...(stored?.names ?? []), ...pushed.flatMap((p) => p.names)])],
    };
    if (request.iidFile) await exporters.writeIidFile(path.resolve(ctx.cwd, request.iidFile), reported);
    if (request.metadataFile)
      await exporters.writeMetadataFile(path.resolve(ctx.cwd, request.metadataFile), reported);
    return reported;
  });
  await caches.finish(events, ctx.signal);
  const summary: BuildResult = {
    digest: outcome.digest,
    size: parts.reduce((sum, part) => sum + part.size, 0),
    names: outcome.names,
    ran: parts.reduce((sum, part) => sum + part.ran, 0),
    cached: parts.reduce((sum, part) => sum + part.cached, 0),
  };
  events.completed(summary);
  return summary;
}

/** A stored manifest's descriptor, its media type read from it. */
async function manifestDescriptor(store: Store, digest: string): Promise<Descriptor> {
  const bytes = await store.content.readBytes(digest);
  const manifest = JSON.parse(bytes.toString("utf8")) as Manifest;
  return { mediaType: manifest.mediaType ?? MediaType.ociManifest, digest, size: bytes.length };
}

/**
 * One platform's event: its steps the worker named as a local build of several platforms names
 * them (`[linux/arm64 2/3] RUN …`, RemoteBuildParams.platformPart); tbuild's own steps get the
 * platform here, so that two workers' are two steps.
 */
function namedForPlatform(event: BuildEvent, platform: string): BuildEvent {
  if (!("vertex" in event) || event.vertex === undefined) return event;
  if (!event.vertex.startsWith("internal:")) return event;
  const vertex = `${event.vertex} for ${platform}`;
  if (!("name" in event) || typeof event.name !== "string") return { ...event, vertex };
  return { ...event, vertex, name: `${event.name} for ${platform}` } as BuildEvent;
}

/** A directory of the client's as the worker syncs it: its listing, and that listing as it travels. */
interface ListedContext {
  dir: string;
  listing: SyncEntry[];
  encoded: Buffer;
}

/** The client's side of the contexts: read and listed once, for every try. */
interface PreparedContext {
  dockerfile: Awaited<ReturnType<typeof readRequestDockerfile>>;
  ignore: string[];
  /** The build context. */
  main: ListedContext;
  /** `--build-context NAME=DIR` directories, synced after it. */
  named: Array<ListedContext & { name: string }>;
  /** The other named contexts (images, and OCI layouts as named), which the worker resolves as they are. */
  passedOn: Record<string, string>;
  /** `--build-context NAME=oci-layout://DIR` images, whose blobs the worker asks for by need. */
  layouts: RemoteLayout[];
}

/**
 * The request's named contexts: directories (synced to the worker like the build context), OCI
 * layout directories (their image chosen here, before anything travels: remote-layout.ts), and
 * the rest, passed on as they are.
 */
async function namedContexts(request: BuildRequest, cwd: string) {
  const namedDirs: Record<string, string> = {};
  const layouts: ClientLayout[] = [];
  const passedOn: Record<string, string> = {};
  for (const [name, source] of Object.entries(request.contexts ?? {})) {
    const kind = contextSource(name, source);
    if (kind.kind === "oci-layout") layouts.push(await readClientLayout(name, kind.layout, cwd));
    if (kind.kind !== "directory") {
      passedOn[name] = source;
      continue;
    }
    const dir = path.resolve(cwd, kind.path);
    const info = await stat(dir).catch(() => undefined);
    if (!info?.isDirectory())
      throw new UsageError(`--build-context ${name}=${source}: ${dir} is not a directory`);
    namedDirs[name] = dir;
  }
  return { namedDirs, layouts, passedOn };
}

/**
 * The `-o` outputs whose files come back from the worker (archives, `type=local`). Image outputs
 * are the worker's to push (`push=true`) or the client's to write (clientImageOutputs), as are
 * layout directories.
 */
function remoteFileOutputs(request: BuildRequest): ExportRequest[] {
  const fileOutputs: ExportRequest[] = [];
  for (const output of request.outputs ?? []) {
    if (output.type === "image" || output.tar === false) continue;
    fileOutputs.push(output);
  }
  return fileOutputs;
}

/**
 * The `-o` outputs the client writes itself from the image brought back (only the blobs its store
 * lacks travel), with the exporters a local build uses, so they are what a local build writes:
 * an image named in this store (`type=image` without `push=true`), and layout directories
 * (`type=oci|docker,tar=false`).
 */
function clientImageOutputs(request: BuildRequest): ExportRequest[] {
  return (request.outputs ?? []).filter(
    (output) => (output.type === "image" && output.push !== true) || output.tar === false,
  );
}

/** Which output's digest a build reports, as run.ts ranks them: an image's, else an archive's. */
function reportedRank(outputs: readonly ExportRequest[]): number {
  return Math.max(
    -1,
    ...outputs.map((o) => (o.type === "image" ? 2 : o.type === "oci" || o.type === "docker" ? 1 : -1)),
  );
}

/** One platform's part of a build of several, as remoteBuildOnce builds it. */
interface RemotePart {
  platform: string;
  /** Its image comes back whole (layers too): something on the client needs them. */
  image: boolean;
  /** Image outputs the worker pushes by digest, for the index the client pushes. */
  pushByDigest: ExportRequest[];
}

/** One try of a remote build, on the worker remote-target.ts connected to. */
async function remoteBuildOnce(
  request: BuildRequest,
  ctx: RunContext,
  worker: OpenWorker,
  { dockerfile, ignore, main, named, passedOn, layouts }: PreparedContext,
  secrets: Record<string, SecretSource>,
  agents: Record<string, string>,
  /**
   * One platform's part of a build of several: its image comes back unnamed, for the index, when
   * `image` (layers and all); each of `pushByDigest` is pushed from the worker by digest, and only
   * its manifest and config come back.
   */
  part?: RemotePart,
): Promise<BuildResult & { pushed?: Descriptor[] }> {
  const tags = request.tags ?? [];
  // An archive is named inside by the -t names, as a local build names it (run.ts exportRequests).
  const fileOutputs = remoteFileOutputs(request).map((output) =>
    (output.type === "oci" || output.type === "docker") && !output.names?.length && tags.length > 0
      ? { ...output, names: tags }
      : output,
  );
  const pushOutputs = (request.outputs ?? []).filter((o) => o.type === "image" && o.push === true);
  const clientOutputs = clientImageOutputs(request);
  const pushByDigest = part?.pushByDigest ?? [];
  // The image comes back for a name in this store, an output written here, or a platform's index.
  const wantsImage = tags.length > 0 || clientOutputs.length > 0 || part?.image === true;

  const { transport, connection, describe } = worker;
  try {
    const {
      worker: _worker,
      context: _context,
      dockerfile: _dockerfile,
      outputs: _outputs,
      secrets: _secrets,
      ssh: _ssh,
      iidFile,
      metadataFile,
      ...rest
    } = request;
    const host = hostname();
    const uid = String(userInfo().uid);
    const params: RemoteBuildParams = {
      contextKey: contextKey(host, uid, dockerfile.contextDir),
      namedContexts: named.map((c) => ({ name: c.name, contextKey: contextKey(host, uid, c.dir, c.name) })),
      ...(layouts.length > 0 ? { layouts } : {}),
      dockerfile: {
        name: path.basename(dockerfile.dockerfilePath),
        source: dockerfile.source.toString("base64"),
      },
      ignore,
      request: {
        ...rest,
        // The worker adds its synced copies of the directories.
        ...(request.contexts !== undefined ? { contexts: passedOn } : {}),
        context: ".",
        // Pushed from the worker: its names, its push; the local store's copy comes back below.
        tags: request.push === true ? tags : [],
        outputs: [...pushOutputs],
      },
      // A directory comes back as the tar of its files, written here as type=local writes them.
      fileOutputs: fileOutputs.map((output) => (output.type === "local" ? { type: "tar" } : output)),
      imageNames: tags,
      ...(wantsImage ? { sendImage: true } : {}),
      ...(pushByDigest.length > 0 ? { pushByDigest } : {}),
      ...(part ? { platformPart: true } : {}),
      secretIds: Object.keys(secrets),
      sshIds: Object.keys(agents),
    };
    ctx.onEvent({ type: "build.worker", worker: describe, ...(part ? { platform: part.platform } : {}) });
    // The worker's `build.completed` is held back until the image is named here, so that what it
    // says (the names) is true when it is shown; a failure after it ends the build as failed.
    let completed: Extract<BuildEvent, { type: "build.completed" }> | undefined;
    const plans = new PlanQueue();
    const call = connection.openStream("build", params, {
      signal: ctx.signal,
      onEvent: (event) => {
        const e = event as { type: string; plan?: SyncPlan };
        if (e.type === "sync.plan") {
          plans.push(e.plan!);
          return;
        }
        if (e.type === "build.completed") {
          completed = event as typeof completed;
          return;
        }
        ctx.onEvent(event as BuildEvent);
      },
    });
    void sendContexts([main, ...named], plans, call.writable).catch((err: unknown) =>
      call.writable.destroy(err as Error),
    );

    // The parts come back in the order asked: the -o files, then the image for the local store.
    const data = new ByteTaker(call.readable);
    // Once output has gone to standard output, a try again would write it twice into the pipe.
    let wroteStdout = false;
    async function* firstOnStdout(chunks: AsyncIterable<Buffer>) {
      for await (const chunk of chunks) {
        wroteStdout = true;
        yield chunk;
      }
    }
    /** What the client's own outputs gave, for the digest the build reports. */
    let written: ExportOutcome | undefined;
    const pushedHere: Descriptor[] = [];
    const store = await openStore(defaultStoreRoot(ctx.env));
    /** An image's parts (the blobs this store lacked, by the handler `lacks`), each checked. */
    const receiveImage = async (layers: boolean) => {
      const parts = JSON.parse(
        (await data.part("the image", 16 * 1024 * 1024)).toString("utf8"),
      ) as ImageParts;
      for (const blob of parts.blobs) {
        const size = Number((await data.take(8, "a blob")).readBigUInt64BE());
        await store.content.write(
          data.stream(size, `blob ${blob.digest}`),
          { digest: blob.digest, size: blob.size },
          ctx.signal,
        );
      }
      // Named or written only once every blob it needs is here, each checked against its digest.
      const manifest = await store.content.readJson<Manifest>(parts.manifest.digest);
      for (const blob of [manifest.config, ...(layers ? manifest.layers : [])]) {
        if (!(await store.content.has(blob.digest))) {
          throw new TbuildError(
            "E_WORKER_PROTOCOL",
            `worker ${describe} did not send ${blob.digest} of the image`,
          );
        }
      }
      return parts.manifest;
    };
    const receiving = (async () => {
      for (const output of fileOutputs) {
        const size = Number((await data.take(8, "an output")).readBigUInt64BE());
        if (size > MAX_OUTPUT_BYTES) throw new TbuildError("E_WORKER_PROTOCOL", `an output of ${size} bytes`);
        if (output.type === "local") {
          await writeLocalOutput(data.stream(size, "an output"), output, ctx);
          continue;
        }
        const toStdout = output.dest === undefined || output.dest === "-";
        const target = toStdout
          ? (ctx.stdout ?? process.stdout)
          : createWriteStream(path.resolve(ctx.cwd, output.dest!));
        const bytes = data.stream(size, "an output");
        await pipeline(Readable.from(toStdout ? firstOnStdout(bytes) : bytes), target as Writable, {
          end: !toStdout,
        });
      }
      if (wantsImage) {
        const manifest = await receiveImage(true);
        if (!part && (tags.length > 0 || clientOutputs.length > 0)) {
          // Named and written here as a local build names and writes them; pushed by the worker.
          const { exportStoredImage } = await import("./run.js");
          const warn = (message: string) => ctx.onEvent({ type: "warning", message });
          written = await exportStoredImage(
            store,
            manifest,
            { ...request, push: false, outputs: clientOutputs },
            { ...ctx, warn },
            {},
          );
        }
      }
      for (const _ of pushByDigest) pushedHere.push(await receiveImage(false));
    })();
    receiving.catch(() => {});
    let answer: RemoteBuildAnswer;
    try {
      answer = (await call.result) as RemoteBuildAnswer;
      await receiving;
    } catch (err) {
      if (completed) {
        ctx.onEvent({
          type: "build.failed",
          durationMs: completed.durationMs,
          error: (err as Error).message,
          ...((err as { code?: string }).code ? { code: (err as { code: string }).code } : {}),
        });
      }
      if (wroteStdout && CONNECTION_LOST.has((err as { code?: string }).code ?? "")) {
        throw new TbuildError(
          "E_WORKER_OUTPUT_CUT",
          `${whatHappened(err)} while part of the output had gone to standard output already, so tbuild does not try again (the output would repeat): run the build again`,
          { cause: err },
        );
      }
      throw err;
    }
    const names = [
      ...new Set([...answer.summary.names, ...tags.map(normalizeImageName), ...(written?.names ?? [])]),
    ];
    // The digest reported is the stored or pushed image's, else an archive's (run.ts exportEach):
    // the worker's outputs' or those written here, whichever ranks higher.
    const workerRank = reportedRank([
      ...pushOutputs,
      ...(request.push === true && tags.length > 0 ? [{ type: "image" as const }] : []),
      ...fileOutputs,
    ]);
    const ownRank = reportedRank([
      ...(tags.length > 0 ? [{ type: "image" as const }] : []),
      ...clientOutputs,
    ]);
    const mine = written !== undefined && ownRank >= workerRank;
    const summary: BuildResult & { pushed?: Descriptor[] } = {
      ...answer.summary,
      ...(mine ? { digest: written!.digest } : {}),
      names,
      ...(part ? { pushed: pushedHere } : {}),
    };
    // A platform's part: the build completes once the index is made (runRemotePlatforms).
    if (completed && !part) ctx.onEvent({ ...completed, digest: summary.digest, names });
    const exporters = await import("../exporters/index.js");
    const outcome = { digest: summary.digest, configDigest: summary.configDigest, names };
    if (iidFile) await exporters.writeIidFile(path.resolve(ctx.cwd, iidFile), outcome);
    if (metadataFile) await exporters.writeMetadataFile(path.resolve(ctx.cwd, metadataFile), outcome);
    connection.close();
    return summary;
  } finally {
    await transport.close();
  }
}

/**
 * What the worker may ask of the client during the build: a secret's value, when a step mounts it
 * (never stored there: it lives in the step's memory-backed file), and a connection to an SSH
 * agent, for a step that mounts it. Only those this build was given are served.
 */
function clientHandlers(
  secrets: Record<string, SecretSource>,
  agents: Record<string, string>,
  registries: ReadonlySet<string>,
  env: NodeJS.ProcessEnv,
): Record<string, Handler> {
  return {
    // Only for the registries this build names (its tags, outputs, cache refs): a worker asking for
    // another gets nothing, and uses its own login there if it has one.
    credentials: async (params) => {
      const { host } = params as { host: string };
      return { credentials: registries.has(host) ? ((await getCredentials(host, env)) ?? null) : null };
    },
    secret: async (params) => {
      const { id } = params as { id: string };
      const source = secrets[id];
      if (source === undefined) {
        throw new TbuildError(
          "E_WORKER_PROTOCOL",
          `the worker asked for a secret this build was not given (${id})`,
        );
      }
      const value =
        source.file !== undefined ? await readFile(source.file) : Buffer.from(env[source.env ?? ""] ?? "");
      return { value: value.toString("base64") };
    },
    "ssh-agent": async (params, call) => {
      const { id } = params as { id: string };
      const socket = agents[id];
      if (socket === undefined) {
        throw new TbuildError(
          "E_WORKER_PROTOCOL",
          `the worker asked for an SSH agent this build was not given (${id})`,
        );
      }
      const agent = net.connect(socket);
      await new Promise<void>((resolve, reject) => {
        agent.once("connect", resolve);
        agent.once("error", reject);
      });
      call.signal.addEventListener("abort", () => agent.destroy(), { once: true });
      await Promise.all([
        pipeline(call.readable, agent).catch(() => {}),
        pipeline(agent, call.writable).catch(() => {}),
      ]);
    },
  };
}

/** `-o type=local`: the worker's tar of the files, written under `dest` as the local exporter writes them. */
async function writeLocalOutput(
  tar: AsyncIterable<Buffer>,
  output: ExportRequest,
  ctx: RunContext,
): Promise<void> {
  const { writeFilesystem } = await import("../exporters/local.js");
  const dest = output.dest;
  if (dest === undefined || dest === "-")
    throw new UsageError("type=local writes a directory: give dest=DIRECTORY");
  async function* entries(): AsyncGenerator<FsEntry> {
    for await (const entry of readTarEntries(tar, { what: "the worker's files" })) {
      // As any tar from outside: a path that climbs out, or is absolute, is refused.
      const parts = entryComponents(entry.path);
      if (parts.length === 0) continue;
      yield {
        path: parts.join("/"),
        type: entry.type,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        size: entry.size,
        mtime: entry.mtime,
        ...(entry.type === "SymbolicLink" || entry.type === "Link"
          ? { linkpath: entry.type === "Link" ? entryComponents(entry.linkpath).join("/") : entry.linkpath }
          : {}),
        ...(entry.type === "CharacterDevice" || entry.type === "BlockDevice"
          ? { devmaj: entry.devmaj, devmin: entry.devmin }
          : {}),
        xattrs: entry.xattrs,
        ...(entry.type === "File" ? { body: entry.body } : {}),
      };
    }
  }
  await writeFilesystem(entries(), path.resolve(ctx.cwd, dest), {
    signal: ctx.signal,
    warn: (message) => ctx.onEvent({ type: "warning", message }),
  });
}

/** The registries a build names: where it pushes, and where its cache goes or comes from. */
function registriesOf(request: BuildRequest): Set<string> {
  const refs = [
    ...(request.push === true ? (request.tags ?? []) : []),
    ...(request.outputs ?? []).flatMap((output) => (output.push === true ? (output.names ?? []) : [])),
    ...(request.cacheFrom ?? []).flatMap((spec) => (spec.type === "registry" ? [spec.ref] : [])),
    ...(request.cacheTo?.type === "registry" ? [request.cacheTo.ref] : []),
  ];
  const hosts = new Set<string>();
  for (const ref of refs) {
    try {
      hosts.add(parseReference(ref).domain);
    } catch {
      // Refused by the worker's build with its own message.
    }
  }
  return hosts;
}

/** The worker's plans, in the order it sends them (one per context), for the sender to wait on. */
class PlanQueue {
  private readonly arrived: SyncPlan[] = [];
  private waiting: ((plan: SyncPlan) => void) | undefined;

  push(plan: SyncPlan): void {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = undefined;
      resolve(plan);
    } else this.arrived.push(plan);
  }

  next(): Promise<SyncPlan> {
    const plan = this.arrived.shift();
    if (plan !== undefined) return Promise.resolve(plan);
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }
}

/**
 * The contexts on the call's data, in turn: each listing, then (once the worker's plan for it is
 * here) the files the plan asks for, framed; nothing for a plan that asks for nothing. Then the
 * end of the data. A call that ends first (the worker failed) leaves the wait unanswered, and the
 * call's own error is what the build reports.
 */
async function sendContexts(contexts: readonly ListedContext[], plans: PlanQueue, writable: Writable) {
  const write = (chunk: Buffer) =>
    new Promise<void>((resolve, reject) => writable.write(chunk, (err) => (err ? reject(err) : resolve())));
  for (const { dir, listing, encoded } of contexts) {
    await write(Buffer.concat([lengthPrefix(encoded.length), encoded]));
    const plan = await plans.next();
    if (asksNothing(plan)) continue;
    const files = await filesToSend(dir, plan, listing);
    await pipeline(Readable.from(framed(contextData(dir, files))), writable, { end: false });
  }
  writable.end();
}
