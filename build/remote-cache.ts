/**
 * type=local build caches of a build on a remote worker (`--cache-to type=local,dest=DIR`,
 * `--cache-from type=local,src=DIR` with `--worker`): the directories are the client's, as with
 * buildx and a remote builder. The worker never touches a path of its own for them; it reaches the
 * client's over the build's connection, through the solver's CacheDirectories seam:
 *
 * - an import asks the client for the description first (`cache-dir-read`), and for a layer blob
 *   only when a step's record is used (`cache-dir-blob`), so a cache's unused layers never travel;
 * - an export asks which of its layer blobs the directory lacks (`cache-dir-lacks`), then sends the
 *   description and only those blobs (`cache-to-dir`); the client checks each against its digest
 *   and writes the layout a local build writes (solver/cache-transfer.ts): blobs, the cache
 *   manifest, index.json naming it with the tag.
 *
 * The client serves only the directories its own request names, and of an imported one only the
 * blobs its description names: a worker cannot read or write anything else of the client's.
 *
 * A build of several platforms on workers (build/remote.ts runRemotePlatforms) exports one cache,
 * as a local build of several platforms does: each platform's part sends its blobs and records,
 * and once every part is done the client writes one manifest holding them all (`finish`).
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../errors/index.js";
import type { Descriptor } from "../oci/spec.js";
import type { CacheDirectories, CacheExportSpec, CacheImportSpec } from "../solver/build-cache.js";
import {
  type CacheDescription,
  describedLayers,
  encodeCacheDescription,
  parseCacheDescription,
} from "../solver/cache-description.js";
import {
  type CacheSource,
  cacheDirLacks,
  loadCacheFromDir,
  placeCacheBlob,
  writeCacheDirIndex,
} from "../solver/cache-transfer.js";
import { mergeCacheDescriptions } from "../solver/cache-writers.js";
import { ByteTaker, lengthPrefix } from "../worker/remote/bytes.js";
import type { Handler, IncomingCall } from "../worker/remote/protocol.js";
import type { BuildEventStream } from "./events.js";
import type { BuildRequest } from "./request.js";

/** The largest cache description that travels (as solver/cache-transfer.ts reads a registry's). */
const MAX_DESCRIPTION_BYTES = 256 * 1024 * 1024;
/** Digests per `cache-dir-lacks` call: its params stay well within a protocol message. */
const LACKS_BATCH = 4096;

type LocalImport = Extract<CacheImportSpec, { type: "local" }>;
type LocalExport = Extract<CacheExportSpec, { type: "local" }>;

function refused(message: string): TbuildError {
  return new TbuildError("E_WORKER_PROTOCOL", message);
}

/** What the worker names a `--cache-from type=local` by: the client's own spec. */
interface DirParams {
  src: string;
  tag?: string;
  digest?: string;
}

/**
 * The client's half: the handlers serving the request's cache directories to the worker, and,
 * for a build of several platforms (`several`), the one cache written once every part is in.
 */
export function clientCacheDirectories(request: BuildRequest, options: { several: boolean }) {
  const imports = (request.cacheFrom ?? []).filter((spec): spec is LocalImport => spec.type === "local");
  const exported = request.cacheTo?.type === "local" ? request.cacheTo : undefined;
  // Each import read once, however many platforms' parts ask for it.
  const loaded = new Map<LocalImport, Promise<{ source: CacheSource; digests: Set<string> }>>();
  const load = (spec: LocalImport) => {
    let found = loaded.get(spec);
    if (!found) {
      found = loadCacheFromDir(spec.src, spec).then((source) => ({
        source,
        digests: new Set(describedLayers(source.description).map((layer) => layer.descriptor.digest)),
      }));
      loaded.set(spec, found);
    }
    return found;
  };
  const importOf = (params: DirParams): LocalImport => {
    const spec = imports.find(
      (s) => s.src === params?.src && s.tag === params.tag && s.digest === params.digest,
    );
    if (!spec) {
      throw refused(
        `the worker asked for a cache directory this build does not name (${JSON.stringify(params?.src)})`,
      );
    }
    return spec;
  };
  const exportOf = (): LocalExport => {
    if (!exported) throw refused("the worker sent a type=local cache this build does not export");
    return exported;
  };
  // The parts' records (several platforms), written as one cache by `finish`.
  const collected: CacheDescription[] = [];

  const handlers: Record<string, Handler> = {
    "cache-dir-read": async (params, call) => {
      const { source } = await load(importOf(params as DirParams));
      const encoded = Buffer.from(JSON.stringify(encodeCacheDescription(source.description)));
      await writeAll(call.writable, [lengthPrefix(encoded.length), encoded]);
    },
    "cache-dir-blob": async (params, call) => {
      const { src, digest } = params as { src: string; digest: string };
      // Only blobs a description this build read from that directory names.
      for (const spec of imports.filter((s) => s.src === src)) {
        const { source, digests } = await load(spec);
        if (!digests.has(digest)) continue;
        const layer = describedLayers(source.description).find((l) => l.descriptor.digest === digest)!;
        await pipeline(source.blob(layer.descriptor) as AsyncIterable<Uint8Array>, call.writable, {
          end: false,
          signal: call.signal,
        });
        return;
      }
      throw refused(
        `the worker asked for a blob (${JSON.stringify(digest)}) that no cache this build imports names`,
      );
    },
    "cache-dir-lacks": async (params) => {
      const { digests } = params as { digests: unknown };
      if (!Array.isArray(digests) || !digests.every((d) => typeof d === "string"))
        throw refused("`cache-dir-lacks` needs a list of digests");
      return { lacking: await cacheDirLacks(exportOf().dest, digests) };
    },
    "cache-to-dir": async (params, call) => {
      const spec = exportOf();
      const { blobs } = params as { blobs: unknown };
      if (!Array.isArray(blobs)) throw refused("`cache-to-dir` needs the list of blobs that follow");
      const data = new ByteTaker(call.readable);
      const description = parseCacheDescription(
        parseJson(await data.part("the cache's description", MAX_DESCRIPTION_BYTES)),
      );
      const layers = new Map(describedLayers(description).map((l) => [l.descriptor.digest, l.descriptor]));
      for (const blob of blobs as Descriptor[]) {
        const layer = layers.get(blob?.digest);
        if (!layer || layer.size !== blob.size)
          throw refused(`the worker sent a blob (${JSON.stringify(blob?.digest)}) its cache does not name`);
        const size = Number((await data.take(8, "a cache blob")).readBigUInt64BE());
        if (size !== layer.size)
          throw refused(`the worker announced ${size} bytes of ${layer.digest}, whose size is ${layer.size}`);
        await placeCacheBlob(spec.dest, layer, data.stream(size, `blob ${layer.digest}`), {
          verify: true,
          signal: call.signal,
        });
      }
      // Then the end of the data: read, so that the answer follows it.
      for await (const extra of data.rest()) {
        if (extra.length > 0) throw refused("the worker sent more than the cache blobs it announced");
      }
      if (options.several) {
        collected.push(description);
        return {};
      }
      return { manifest: await writeCacheDirIndex(spec.dest, description, spec.tag) };
    },
  };

  /**
   * A build of several platforms: the one cache of every part's records, written once they are
   * all in, as the step "exporting cache" (with `ignore-error=true`, a failure is a warning).
   */
  const finish = async (events: BuildEventStream, signal: AbortSignal) => {
    // No part sent its records (each failed to, with ignore-error=true): the tag keeps what it had.
    if (!options.several || !exported || collected.length === 0) return;
    await events
      .internal("exporting cache", () =>
        writeCacheDirIndex(exported.dest, mergeCacheDescriptions(collected), exported.tag),
      )
      .catch((err: unknown) => {
        if (exported.ignoreError !== true || signal.aborted) throw err;
        events.warn(`the cache was not exported (ignore-error=true): ${(err as Error).message}`);
      });
  };
  return { handlers, finish };
}

/**
 * The worker's half: the client's cache directories, as a build on this worker reads and writes
 * them (RunContext `served.cacheDirectories`).
 */
export function servedCacheDirectories(call: IncomingCall): CacheDirectories {
  const { connection } = call;
  return {
    load: async (spec) => {
      const named: DirParams = {
        src: spec.src,
        ...(spec.tag !== undefined ? { tag: spec.tag } : {}),
        ...(spec.digest !== undefined ? { digest: spec.digest } : {}),
      };
      const read = connection.openStream("cache-dir-read", named, { signal: call.signal });
      read.writable.end();
      const bytes = await new ByteTaker(read.readable)
        .part("the cache's description", MAX_DESCRIPTION_BYTES)
        .catch(async (err: unknown) => {
          // The client's refusal, rather than the short stream it left.
          await read.result;
          throw err;
        });
      await read.result;
      const description = parseCacheDescription(parseJson(bytes));
      return {
        name: `${spec.src} on the client`,
        description,
        blob: (descriptor) => {
          const blob = connection.openStream(
            "cache-dir-blob",
            { src: spec.src, digest: descriptor.digest },
            { signal: call.signal },
          );
          blob.writable.end();
          return blob.readable;
        },
      };
    },
    write: async (_spec, description, content) => {
      const layers = describedLayers(description).map((layer) => layer.descriptor);
      const lacking = new Set<string>();
      for (let at = 0; at < layers.length; at += LACKS_BATCH) {
        const digests = layers.slice(at, at + LACKS_BATCH).map((layer) => layer.digest);
        const answer = (await connection.request(
          "cache-dir-lacks",
          { digests },
          { signal: call.signal },
        )) as {
          lacking: string[];
        };
        for (const digest of answer.lacking) lacking.add(digest);
      }
      const blobs = layers.filter((layer) => lacking.has(layer.digest));
      const stop = new AbortController();
      const sent = connection.openStream(
        "cache-to-dir",
        { blobs },
        { signal: AbortSignal.any([call.signal, stop.signal]) },
      );
      const encoded = Buffer.from(JSON.stringify(encodeCacheDescription(description)));
      async function* parts() {
        yield lengthPrefix(encoded.length);
        yield encoded;
        for (const blob of blobs) {
          yield lengthPrefix(blob.size);
          yield* content.open(blob.digest) as AsyncIterable<Buffer>;
        }
      }
      // A failure to send (a blob missing here) cancels the call, and is the error it ends with.
      pipeline(Readable.from(parts()), sent.writable).catch((err: unknown) => stop.abort(err));
      // The client answers once it has read all it needs and written the cache; the end of the
      // data may still be on its way then, and that stream torn by the answer is no failure. The
      // client's own error says more than the torn stream it causes.
      await sent.result;
    },
  };
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    throw refused("a cache description that travelled is not JSON");
  }
}

async function writeAll(writable: NodeJS.WritableStream, chunks: Buffer[]): Promise<void> {
  await pipeline(Readable.from(chunks), writable, { end: false });
}
