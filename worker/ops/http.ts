/**
 * `http` (ADD https://…): the download as a one-layer filesystem holding `/<filename>`, owned by
 * 0:0 with mode 0600 and the mtime of its Last-Modified header (the epoch without one), as
 * BuildKit's http source makes it. Redirects are followed; the body streams to disk while it is
 * hashed; `--checksum` must match.
 *
 * The cache key is the promised checksum when there is one; otherwise the content's own digest,
 * which needs the download. What was downloaded is remembered: for the rest of the build in the
 * state directory (so the step that uses it does not download again), and across builds in the
 * store, by URL and ETag, so that an unchanged resource is answered by a 304 without its body.
 */

import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TbuildError } from "../../errors/index.js";
import { TAR_END, tarEntry } from "../../oci/archive/tar.js";
import { writeFileAtomic } from "../../oci/atomic-file.js";
import { writeLayer } from "../../oci/layer.js";
import type { Descriptor } from "../../oci/spec.js";
import type { HttpOp } from "../../solver/graph.js";
import type { FsResult } from "../../solver/worker.js";
import type { OpContext } from "./context.js";

const MAX_REDIRECTS = 10;
const FILE_MODE = 0o600;

export class DownloadError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_DOWNLOAD", message, cause === undefined ? {} : { cause });
  }
}

/** The download does not have the digest `--checksum` promised. */
export class ChecksumMismatchError extends TbuildError {
  constructor(url: string, expected: string, actual: string) {
    super(
      "E_CHECKSUM_MISMATCH",
      `${url}: checksum mismatch: --checksum expected ${expected}, the download is ${actual}`,
    );
  }
}

interface Downloaded {
  url: string;
  filename: string;
  /** `sha256:<hex>` of the content. */
  digest: string;
  etag?: string;
  lastModified?: string;
  layer: { descriptor: Descriptor; diffId: string };
}

export async function httpContentKey(op: HttpOp, ctx: OpContext): Promise<string> {
  if (op.checksum !== undefined) return normalizeChecksum(op.checksum);
  return (await download(op, ctx)).digest;
}

export async function runHttp(op: HttpOp, _inputs: FsResult[], ctx: OpContext): Promise<FsResult> {
  const result = await download(op, ctx);
  return { layers: [result.layer] };
}

function normalizeChecksum(checksum: string): string {
  const text = checksum.trim().toLowerCase();
  if (!/^sha(256|384|512):[0-9a-f]+$/.test(text)) {
    throw new DownloadError(`invalid --checksum=${checksum}: expected sha256:<64 hexadecimal digits>`);
  }
  return text;
}

function urlKey(url: string): string {
  return createHash("sha256").update(url).digest("hex").slice(0, 32);
}

async function readRecord(file: string): Promise<Downloaded | undefined> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as Downloaded;
  } catch {
    return undefined;
  }
}

async function writeRecord(file: string, record: Downloaded): Promise<void> {
  // A record only saves a download; a read-only store still builds.
  await writeFileAtomic(file, JSON.stringify(record), { makeDirectory: true }).catch(() => {});
}

async function download(op: HttpOp, ctx: OpContext): Promise<Downloaded> {
  const key = urlKey(op.url);
  const buildRecord = path.join(ctx.stateDir, "http", `${key}.json`);
  const storeRecord = path.join(ctx.store.root, "http-cache", `${key}.json`);
  const usable = async (r: Downloaded | undefined) =>
    r !== undefined &&
    r.url === op.url &&
    r.filename === op.filename &&
    (await ctx.store.content.has(r.layer.descriptor.digest));

  const thisBuild = await readRecord(buildRecord);
  if (await usable(thisBuild)) return verified(op, thisBuild!);

  const earlier = await readRecord(storeRecord);
  const conditional = (await usable(earlier)) && earlier!.etag !== undefined ? earlier : undefined;
  const response = await get(op.url, ctx.signal, conditional?.etag);
  let record: Downloaded;
  if (response.statusCode === 304 && conditional) {
    response.resume();
    record = conditional;
  } else {
    record = await storeDownload(op, response, ctx);
  }
  await writeRecord(buildRecord, record);
  await writeRecord(storeRecord, record);
  return verified(op, record);
}

function verified(op: HttpOp, record: Downloaded): Downloaded {
  if (op.checksum !== undefined) {
    const expected = normalizeChecksum(op.checksum);
    if (!expected.startsWith("sha256:")) {
      throw new DownloadError(`--checksum=${op.checksum}: only sha256 checksums are supported yet`);
    }
    if (record.digest !== expected) throw new ChecksumMismatchError(op.url, expected, record.digest);
  }
  return record;
}

/** Streams the body to a temp file (hashing it), then stores the one-file layer. */
async function storeDownload(
  op: HttpOp,
  response: http.IncomingMessage,
  ctx: OpContext,
): Promise<Downloaded> {
  const dir = path.join(ctx.stateDir, "http");
  await mkdir(dir, { recursive: true });
  const temp = path.join(dir, `download-${randomBytes(8).toString("hex")}`);
  const hash = createHash("sha256");
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  try {
    try {
      await pipeline(response, hashing, createWriteStream(temp, { mode: FILE_MODE }), { signal: ctx.signal });
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      throw new DownloadError(`${op.url}: the download broke off (${(err as Error).message})`, err);
    }
    const digest = `sha256:${hash.digest("hex")}`;
    if (op.checksum !== undefined) {
      const expected = normalizeChecksum(op.checksum);
      if (expected.startsWith("sha256:") && digest !== expected) {
        throw new ChecksumMismatchError(op.url, expected, digest);
      }
    }
    const lastModified = headerValue(response.headers["last-modified"]);
    const parsed = lastModified !== undefined ? Date.parse(lastModified) : Number.NaN;
    const mtime = new Date(Number.isNaN(parsed) ? 0 : parsed);
    const size = (await stat(temp)).size;
    async function* tar(): AsyncGenerator<Buffer> {
      yield* tarEntry(
        { path: op.filename, type: "File", mode: FILE_MODE, uid: 0, gid: 0, size, mtime },
        createReadStream(temp),
      );
      yield TAR_END;
    }
    // Only ever read by the copy that uses it: left uncompressed (see local.ts).
    const layer = await writeLayer(ctx.store.content, Readable.from(tar()), {
      compression: "uncompressed",
      signal: ctx.signal,
    });
    const etag = headerValue(response.headers.etag);
    return {
      url: op.url,
      filename: op.filename,
      digest,
      ...(etag !== undefined ? { etag } : {}),
      ...(lastModified !== undefined ? { lastModified } : {}),
      layer: { descriptor: layer.descriptor, diffId: layer.diffId },
    };
  } finally {
    await rm(temp, { force: true });
  }
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** GET with redirects followed; resolves with a 2xx (or, when `etag` is given, a 304) response. */
async function get(
  url: string,
  signal: AbortSignal,
  etag: string | undefined,
): Promise<http.IncomingMessage> {
  let current = new URL(url);
  for (let redirects = 0; ; redirects++) {
    const client = current.protocol === "https:" ? https : current.protocol === "http:" ? http : undefined;
    if (!client) throw new DownloadError(`${url}: only http and https URLs can be downloaded`);
    const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const request = client.get(
        current,
        {
          signal,
          headers: {
            "user-agent": "tbuild",
            ...(etag !== undefined ? { "if-none-match": etag } : {}),
          },
        },
        resolve,
      );
      request.on("error", (err) => {
        reject(signal.aborted ? err : new DownloadError(`${url}: ${(err as Error).message}`, err));
      });
    });
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return response;
    if (status === 304 && etag !== undefined) return response;
    response.resume();
    if ([301, 302, 303, 307, 308].includes(status) && response.headers.location) {
      if (redirects >= MAX_REDIRECTS) throw new DownloadError(`${url}: more than ${MAX_REDIRECTS} redirects`);
      current = new URL(response.headers.location, current);
      continue;
    }
    throw new DownloadError(
      `${url}: the server answered ${status} ${response.statusMessage ?? ""}`.trim() +
        (current.href !== url ? ` (at ${current.href})` : ""),
    );
  }
}
