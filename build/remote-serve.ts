/**
 * A worker's half of a remote build (`tbuild worker --stdio` on the build host): one `build` call
 * per build, carrying everything over its one channel, so that nothing of it outlives the call.
 *
 * 1. The client's data carries its contexts in turn, the build context first, then each named
 *    directory context (`--build-context NAME=DIR`): a listing, to which the worker answers with a
 *    `sync.plan` event (worker/remote/context-sync.ts), then the files asked for, framed (nothing
 *    when the plan asks for nothing). Each synced copy is a context of the build. An image in an
 *    OCI layout of the client's (`NAME=oci-layout://DIR`) is fetched from it when the build is
 *    planned, only the blobs this store lacks (build/remote-layout.ts).
 * 2. The build runs here, in this worker's store, as `runBuild` runs any build: its events go back
 *    as they come, so the client shows the same progress as for a local build.
 * 3. What the client is to keep goes back on the call's data, each part length-prefixed: the `-o`
 *    files (written here into the call's own temp directory, which goes when the call ends), then
 *    the blobs of the image its store lacks. `--push` pushes from here.
 * 4. One platform's part of a build of several pushes its image by digest, untagged, into every
 *    repository the build pushes to (`pushByDigest`), and sends back only the manifest and config
 *    of what it pushed: the client makes the index of the platforms and pushes that alone.
 *
 * A synced context is locked for its build: a second build of the same context (from the same
 * client) waits for the first.
 */
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../errors/index.js";
import type { ExportRequest } from "../exporters/request.js";
import { type Credentials, getCredentials } from "../oci/registry/credentials.js";
import type { PushOptions } from "../oci/registry/push.js";
import { type Descriptor, type Manifest, MediaType } from "../oci/spec.js";
import { openStore, type Store } from "../oci/store/index.js";
import type { SecretSource } from "../worker/ops/context.js";
import { ByteTaker, lengthPrefix } from "../worker/remote/bytes.js";
import { asksNothing, decodeListing, SyncedContext } from "../worker/remote/context-sync.js";
import type { Handler, IncomingCall } from "../worker/remote/protocol.js";
import { workerStore } from "../worker/remote/server.js";
import { loadConfig, registryOptions } from "./config.js";
import { BuildEventStream } from "./events.js";
import { type AffinityParams, answerAffinity, recordBuildKeys } from "./remote-affinity.js";
import { servedCacheDirectories } from "./remote-cache.js";
import { dockerfileDigest } from "./remote-keys.js";
import { checkLayouts, layoutsFromClient, type RemoteLayout } from "./remote-layout.js";
import type { BuildRequest } from "./request.js";
import { type BuildResult, runBuild } from "./run.js";

/** What a client sends with a `build` call (its data carries the listing and the files). */
export interface RemoteBuildParams {
  /** Names the client's context among this worker's synced ones (hex). */
  contextKey: string;
  /**
   * The request's named contexts that are directories of the client's (`--build-context
   * NAME=DIR`), synced after the build context in this order, each as its own copy here.
   */
  namedContexts?: Array<{ name: string; contextKey: string }>;
  /**
   * The request's `oci-layout://` contexts, which are the client's: the image each names there,
   * whose blobs the worker asks for (`layout-has`, `layout-blob` calls back).
   */
  layouts?: RemoteLayout[];
  /** The Dockerfile's name and content (base64): it may lie outside the context. */
  dockerfile: { name: string; source: string };
  /** The `.dockerignore` patterns the client read for this Dockerfile. */
  ignore: string[];
  /** The build, less what is the client's: its context, Dockerfile, worker, and files it writes. */
  request: BuildRequest;
  /** `-o` outputs whose bytes come back, in order (their `dest` is the client's business). */
  fileOutputs: ExportRequest[];
  /** Send the image back for the client's store, under these names. */
  imageNames: string[];
  /**
   * Send the image back though the client names it nothing: one platform's image of a build of
   * several, which the client puts in its index.
   */
  sendImage?: boolean;
  /**
   * Image outputs pushed from here by digest, untagged, each as its request asks (compression,
   * media types), into each of its names' repositories: one platform's image of a build of
   * several, whose index the client pushes. Each pushed manifest comes back with its config only.
   */
  pushByDigest?: ExportRequest[];
  /**
   * One platform's part of the client's build of several: steps are named with the platform (the
   * client shows them, and `--explain` compares them, as a local build of several names them).
   */
  platformPart?: boolean;
  /** Ids of the secrets the client serves on demand (`secret` calls back). */
  secretIds: string[];
  /** Ids of the SSH agents the client relays (`ssh-agent` calls back). */
  sshIds: string[];
}

/** What a `build` call answers, after the parts on its data. */
export interface RemoteBuildAnswer {
  summary: BuildResult;
  /** The manifests pushed by digest, one per `pushByDigest` request, in order. */
  pushed?: Descriptor[];
}

/** The largest context listing a worker reads (gzip'd). */
const MAX_LISTING_BYTES = 256 * 1024 * 1024;
/** The largest frame of a context's files a worker takes (the client sends 64 KiB parts). */
const MAX_FRAME_BYTES = 16 * 1024 * 1024;

export function remoteBuildHandlers(env: NodeJS.ProcessEnv): Record<string, Handler> {
  return {
    build: (params, call) => serveBuild(params as RemoteBuildParams, call, env),
    // A pool's scheduler asks each worker how much of a build's cache it holds (remote-affinity.ts).
    affinity: (params, call) =>
      answerAffinity(workerStore(call.connection.peerHello.store, env), params as AffinityParams),
  };
}

/** The build context, then each named directory context, as a build call lists them. */
function syncedContexts(params: RemoteBuildParams): Array<{ key: string; name?: string }> {
  const named = params.namedContexts ?? [];
  const all: Array<{ key: string; name?: string }> = [
    { key: params.contextKey },
    ...named.map((c) => ({ key: c.contextKey, name: c.name })),
  ];
  for (const { key, name } of all) {
    if (typeof key !== "string" || !/^[0-9a-f]{16,64}$/.test(key)) {
      throw new TbuildError("E_WORKER_PROTOCOL", "a build call names no valid context key");
    }
    if (name !== undefined && (typeof name !== "string" || name === "" || name === "context")) {
      throw new TbuildError("E_WORKER_PROTOCOL", `a build call names a context ${JSON.stringify(name)}`);
    }
  }
  if (
    new Set(all.map((c) => c.key)).size !== all.length ||
    new Set(named.map((c) => c.name)).size !== named.length
  ) {
    throw new TbuildError("E_WORKER_PROTOCOL", "a build call names a context twice");
  }
  return all;
}

async function serveBuild(params: RemoteBuildParams, call: IncomingCall, env: NodeJS.ProcessEnv) {
  const wanted = syncedContexts(params);
  const pushes = checkPushes(params.pushByDigest ?? []);
  const layouts = checkLayouts(params.layouts);
  const storeRoot = workerStore(call.connection.peerHello.store, env);
  const contexts = path.join(storeRoot, "remote-contexts");
  await mkdir(contexts, { recursive: true, mode: 0o700 });
  const { default: lockfile } = await import("proper-lockfile");
  // Each synced copy is locked for the build, in one order (by key), so that two builds naming
  // the same copies wait for each other rather than each holding one.
  const releases: Array<() => Promise<void>> = [];
  const unlock = async () => {
    for (const release of releases.splice(0).reverse()) await release().catch(() => {});
  };
  const synced = new Map<string, SyncedContext>();
  try {
    for (const { key } of [...wanted].sort((a, b) => a.key.localeCompare(b.key))) {
      const copy = new SyncedContext(path.join(contexts, key));
      await mkdir(copy.dir, { recursive: true, mode: 0o700 });
      releases.push(
        await lockfile.lock(copy.dir, {
          realpath: false,
          stale: 30_000,
          update: 7_500,
          retries: { retries: 10_000, minTimeout: 20, maxTimeout: 500 },
        }),
      );
      synced.set(key, copy);
    }
  } catch (err) {
    await unlock();
    throw err;
  }
  const temp = await mkdtemp(path.join(contexts, ".build-")).catch(async (err: unknown) => {
    await unlock();
    throw err;
  });
  try {
    const data = new ByteTaker(call.readable);
    // Each context in turn: its listing, the plan, and the files the plan asks for (framed; none
    // follow a plan that asks for nothing, so an unchanged context costs no round trip).
    const namedDirs: Record<string, string> = {};
    for (const { key, name } of wanted) {
      const copy = synced.get(key)!;
      const what = name === undefined ? "the context" : `the context ${name}`;
      const listing = decodeListing(await data.part(`${what}'s listing`, MAX_LISTING_BYTES));
      const plan = await copy.plan(listing);
      call.notify({ type: "sync.plan", plan, ...(name !== undefined ? { context: name } : {}) });
      await copy.apply(
        listing,
        asksNothing(plan) ? undefined : data.frames(`${what}'s files`, MAX_FRAME_BYTES),
        call.signal,
      );
      if (name !== undefined) namedDirs[name] = copy.tree;
    }
    const mainContext = synced.get(params.contextKey)!;

    // The Dockerfile and its ignore patterns as the client read them, beside each other.
    // A name only, in the call's own directory: never `..`, never a path.
    const base = path.basename(params.dockerfile.name ?? "");
    const name = base === "" || base === "." || base === ".." ? "Dockerfile" : base;
    const dockerfile = path.join(temp, name);
    await writeFile(dockerfile, Buffer.from(params.dockerfile.source, "base64"));
    await writeFile(`${dockerfile}.dockerignore`, params.ignore.map((p) => `${p}\n`).join(""));

    const parts = params.fileOutputs.map((output, i) => ({
      ...output,
      dest: path.join(temp, `output-${i}${output.tar === false ? ".d" : ""}`),
    }));
    // The image the client keeps is assembled here unnamed (an image output without names), and its
    // blobs go back below by need.
    const sendsImage = params.imageNames.length > 0 || params.sendImage === true;
    const image: ExportRequest[] = sendsImage || pushes.length > 0 ? [{ type: "image", names: [] }] : [];
    const request: BuildRequest = {
      ...params.request,
      // Directories of the client's, by their synced copies here; images and the like as named.
      ...(Object.keys(namedDirs).length > 0
        ? { contexts: { ...params.request.contexts, ...namedDirs } }
        : {}),
      context: mainContext.tree,
      dockerfile,
      outputs: [...parts, ...image],
    };
    delete request.worker;
    const agents = await relayAgents(call, params.sshIds ?? [], temp);
    let summary: BuildResult;
    let keys: string[] = [];
    /** The image as assembled, before an output converted its layers: what the client gets. */
    let assembled: string | undefined;
    const buildEnv = { ...env, TBUILD_ROOT: storeRoot };
    // A registry the client has nothing for: this host's own login, if any (base images).
    const credentials = async (host: string) => {
      const answer = (await call.connection.request("credentials", { host }, { signal: call.signal })) as {
        credentials: Credentials | null;
      };
      return answer.credentials ?? getCredentials(host, env);
    };
    try {
      summary = await runBuild(request, {
        // The store the client named (its hello), not only the worker user's default one.
        env: buildEnv,
        cwd: temp,
        signal: call.signal,
        onEvent: (event) => call.notify(event),
        onCacheKeys: (solved) => {
          keys = solved;
        },
        onImage: (manifest) => {
          assembled = manifest.digest;
        },
        served: {
          secrets: servedSecrets(call, params.secretIds ?? []),
          ssh: agents.sockets,
          ...(layouts.length > 0 ? { layouts: layoutsFromClient(call, storeRoot, layouts) } : {}),
          credentials,
          // type=local caches are the client's directories, never this host's.
          cacheDirectories: servedCacheDirectories(call),
          ...(params.platformPart === true ? { platformPart: true } : {}),
        },
      });
    } finally {
      agents.close();
    }
    await recordBuildKeys(
      storeRoot,
      {
        contextKey: params.contextKey,
        dockerfile: dockerfileDigest(Buffer.from(params.dockerfile.source, "base64")),
      },
      keys,
    );
    // Every build of one platform (all a worker is given) tells its image; else the build's own.
    const built = assembled ?? summary.digest;
    const pushed =
      pushes.length > 0
        ? await pushByDigest(call, storeRoot, built, pushes, {
            ...registryOptions(await loadConfig(buildEnv), { env: buildEnv }),
            credentials,
          })
        : [];
    for (const output of parts) {
      const size = (await stat(output.dest!)).size;
      await write(call, lengthPrefix(size));
      for await (const chunk of createReadStream(output.dest!)) await write(call, chunk as Buffer);
    }
    if (sendsImage) await sendImage(call, storeRoot, built, { layers: true });
    for (const descriptor of pushed) await sendImage(call, storeRoot, descriptor.digest, { layers: false });
    return { summary, ...(pushes.length > 0 ? { pushed } : {}) } satisfies RemoteBuildAnswer;
  } finally {
    await rm(temp, { recursive: true, force: true });
    await unlock();
  }
}

/** The client's secrets, each asked for when a step mounts it. */
function servedSecrets(call: IncomingCall, ids: readonly string[]): Record<string, SecretSource> {
  const out: Record<string, SecretSource> = {};
  for (const id of ids) {
    out[id] = {
      fetch: async () => {
        const answer = (await call.connection.request("secret", { id }, { signal: call.signal })) as {
          value: string;
        };
        return Buffer.from(answer.value, "base64");
      },
    };
  }
  return out;
}

/**
 * A socket here for each of the client's SSH agents: each connection a step makes to it is relayed
 * to the client's agent over the worker connection. They exist for the build's time only.
 */
async function relayAgents(call: IncomingCall, ids: readonly string[], dir: string) {
  const servers: net.Server[] = [];
  const sockets: Record<string, string> = {};
  for (const [n, id] of ids.entries()) {
    const socket = path.join(dir, `agent-${n}.sock`);
    const server = net.createServer((conn) => {
      const relay = call.connection.openStream("ssh-agent", { id }, { signal: call.signal });
      relay.result.catch(() => conn.destroy());
      pipeline(conn, relay.writable).catch(() => {});
      pipeline(relay.readable, conn).catch(() => {});
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socket, resolve);
    });
    servers.push(server);
    sockets[id] = socket;
  }
  return {
    sockets,
    close: () => {
      for (const server of servers) server.close();
    },
  };
}

/** What a worker sends first of the image: its manifest's descriptor, and the blobs that follow. */
export interface ImageParts {
  manifest: Descriptor;
  blobs: Descriptor[];
}

/** The push-by-digest requests of a build call: image outputs that name where they go. */
function checkPushes(pushes: unknown): ExportRequest[] {
  if (!Array.isArray(pushes))
    throw new TbuildError("E_WORKER_PROTOCOL", "a build call's pushByDigest is no list");
  for (const push of pushes as ExportRequest[]) {
    const names = push?.names;
    if (
      push?.type !== "image" ||
      !Array.isArray(names) ||
      names.length === 0 ||
      !names.every((n) => typeof n === "string")
    ) {
      throw new TbuildError(
        "E_WORKER_PROTOCOL",
        "a build call asks to push by digest an image output without names",
      );
    }
  }
  return pushes as ExportRequest[];
}

/**
 * Pushes the build's image (`digest`, as assembled) by digest as each request asks: exported as
 * the request wants it (compression, media types; named nothing here), then pushed untagged into
 * each name's repository, as the step "pushing NAME by digest". Gives each pushed manifest.
 */
async function pushByDigest(
  call: IncomingCall,
  storeRoot: string,
  digest: string,
  pushes: readonly ExportRequest[],
  /** This worker's registry settings (its config.toml), with the client's logins. */
  registry: PushOptions,
): Promise<Descriptor[]> {
  const exporters = await import("../exporters/index.js");
  const { pushDescriptor } = await import("../oci/registry/push.js");
  const store = await openStore(storeRoot);
  const { assembled, result } = await exporters.storedImage(
    store.content,
    await manifestDescriptor(store, digest),
  );
  const events = new BuildEventStream((event) => call.notify(event));
  const warn = (message: string) => events.warn(message);
  const options = { ...registry, signal: call.signal, warn, byDigest: true };
  const pushed: Descriptor[] = [];
  for (const push of pushes) {
    const image = { ...push, names: [], push: false };
    const { descriptor } = await exporters.exportImage(store, assembled, result, image, {
      signal: call.signal,
      warn,
    });
    await events.internal(`pushing ${push.names!.join(", ")} by digest`, async () => {
      for (const name of push.names!) await pushDescriptor(store, name, descriptor, options);
    });
    pushed.push(descriptor);
  }
  return pushed;
}

/** A stored manifest's descriptor, its media type read from it. */
async function manifestDescriptor(store: Store, digest: string): Promise<Descriptor> {
  const bytes = await store.content.readBytes(digest);
  const manifest = JSON.parse(bytes.toString("utf8")) as Manifest;
  return { mediaType: manifest.mediaType ?? MediaType.ociManifest, digest, size: bytes.length };
}

/**
 * An image for the client's store: the client is asked which of its blobs it lacks, and only
 * those follow (after a rebuild, the layers that changed), each length-prefixed. Without
 * `layers`, its manifest and config only (an image pushed by digest, for the client's index).
 */
async function sendImage(
  call: IncomingCall,
  storeRoot: string,
  digest: string,
  { layers }: { layers: boolean },
): Promise<void> {
  const store = await openStore(storeRoot);
  const manifest = await store.content.readJson<Manifest>(digest);
  const all: Descriptor[] = [
    await manifestDescriptor(store, digest),
    manifest.config,
    ...(layers ? manifest.layers : []),
  ];
  const { lacking } = (await call.connection.request(
    "lacks",
    { digests: all.map((d) => d.digest) },
    { signal: call.signal },
  )) as { lacking: string[] };
  const wanted = new Set(lacking);
  const parts: ImageParts = { manifest: all[0]!, blobs: all.filter((d) => wanted.has(d.digest)) };
  const header = Buffer.from(JSON.stringify(parts));
  await write(call, lengthPrefix(header.length));
  await write(call, header);
  for (const blob of parts.blobs) {
    await write(call, lengthPrefix(blob.size));
    for await (const chunk of store.content.open(blob.digest)) await write(call, chunk as Buffer);
  }
}

/** Writes to the caller, waiting while its window is full. */
function write(call: IncomingCall, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    call.writable.write(chunk, (err) => (err ? reject(err) : resolve()));
  });
}
