/**
 * A registry that says what a test tells it to, on a real loopback socket: the distribution API's
 * read side (`/v2/`, manifests by tag or digest, blobs) over whatever bytes the test hands it,
 * valid or not, without the checks a real registry makes on push. A route can be replaced by a
 * handler of the test's own (a body trickled a byte at a time, a TLS-less answer).
 */
import { createReadStream, readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { BlobFile } from "./layer-images.js";

export interface ServedManifest {
  body: Buffer | string;
  /** The Content-Type header; the OCI manifest type unless told otherwise. */
  type?: string;
}

export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

export interface DistributionServer {
  host: string;
  port: number;
  /** Manifests by `repository:reference` (a tag or a digest). */
  manifests: Map<string, ServedManifest>;
  /** Blobs by digest: bytes, or a file. */
  blobs: Map<string, Buffer | BlobFile>;
  /** Handlers that answer matching paths instead (`/v2/app/blobs/sha256:…`). */
  routes: Map<string, RouteHandler>;
  /** Every request path seen. */
  seen: string[];
  stop(): Promise<void>;
}

const MANIFEST = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const BLOB = /^\/v2\/(.+)\/blobs\/([^/]+)$/;

export async function startDistributionServer(): Promise<DistributionServer> {
  const manifests = new Map<string, ServedManifest>();
  const blobs = new Map<string, Buffer | BlobFile>();
  const routes = new Map<string, RouteHandler>();
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://server").pathname;
    seen.push(path);
    req.resume();
    const route = routes.get(path);
    if (route) return route(req, res);
    if (path === "/v2/" || path === "/v2") {
      res.writeHead(200, { "content-type": "application/json" });
      return res.end("{}");
    }
    const manifest = MANIFEST.exec(path);
    const served = manifest && manifests.get(`${manifest[1]}:${manifest[2]}`);
    if (served) {
      const body = Buffer.from(served.body);
      res.writeHead(200, {
        "content-type": served.type ?? "application/vnd.oci.image.manifest.v1+json",
        "content-length": body.length,
      });
      return res.end(req.method === "HEAD" ? undefined : body);
    }
    const blob = BLOB.exec(path);
    const stored = blob && blobs.get(blob[2]!);
    if (stored) {
      if (Buffer.isBuffer(stored)) {
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": stored.length });
        return res.end(req.method === "HEAD" ? undefined : stored);
      }
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": stored.size });
      if (req.method === "HEAD") return res.end();
      createReadStream(stored.file).pipe(res);
      return;
    }
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}');
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    port,
    manifests,
    blobs,
    routes,
    seen,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Serves `blobs` and a manifest for `repository:tag` (and by its digest). */
export function serveImage(
  server: DistributionServer,
  repository: string,
  tag: string,
  manifest: BlobFile & { text?: string },
  blobs: (BlobFile | undefined)[],
  type?: string,
): void {
  const served: ServedManifest = {
    body: manifest.text ?? readFileSync(manifest.file),
    ...(type !== undefined ? { type } : {}),
  };
  server.manifests.set(`${repository}:${tag}`, served);
  server.manifests.set(`${repository}:${manifest.digest}`, served);
  for (const blob of blobs) if (blob) server.blobs.set(blob.digest, blob);
}
