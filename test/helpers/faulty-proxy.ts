/**
 * A misbehaving HTTP proxy on a real loopback socket, in front of a registry: it forwards every
 * request (Host header kept, so the registry's Location URLs point back at the proxy) and, as the
 * test asks, answers 503 once, cuts blob bodies half-way (headers promise the full length, then the
 * socket is destroyed), or flips a byte of a blob. It logs every request it saw.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface ProxiedRequest {
  method: string;
  /** Path and query, e.g. `/v2/app/blobs/uploads/?mount=sha256:…&from=base`. */
  url: string;
  status?: number;
}

export interface Faults {
  /** Requests matching this get one 503 each (with `Retry-After: 0`), the first time only. */
  unavailableOnce?: (req: ProxiedRequest) => boolean;
  /** Answer 429 with this Retry-After (seconds) to the first request matching `tooManyRequestsOnce`. */
  tooManyRequestsOnce?: (req: ProxiedRequest) => boolean;
  /** The first N full (not ranged) blob GETs are cut after half their bytes. */
  cutBlobBodies?: number;
  /** Blob GETs of this digest have one byte flipped (length unchanged). */
  corruptBlob?: string;
  /** Strip Range from blob GETs, as registries that cannot resume do. */
  ignoreRange?: boolean;
}

export interface FaultyProxy {
  host: string;
  port: number;
  requests: ProxiedRequest[];
  faults: Faults;
  stop(): Promise<void>;
}

const BLOB_GET = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})$/;

export async function startFaultyProxy(target: { port: number }, faults: Faults = {}): Promise<FaultyProxy> {
  const requests: ProxiedRequest[] = [];
  const answeredOnce = new Set<string>();
  const proxy: Omit<FaultyProxy, "host" | "port" | "stop"> = { requests, faults };

  const server = http.createServer((req, res) => {
    const entry: ProxiedRequest = { method: req.method ?? "GET", url: req.url ?? "/" };
    requests.push(entry);
    const key = `${entry.method} ${entry.url}`;
    const once = (kind: string, predicate: ((r: ProxiedRequest) => boolean) | undefined): boolean => {
      if (!predicate?.(entry) || answeredOnce.has(`${kind} ${key}`)) return false;
      answeredOnce.add(`${kind} ${key}`);
      return true;
    };
    if (once("503", proxy.faults.unavailableOnce)) {
      entry.status = 503;
      req.resume();
      res.writeHead(503, { "retry-after": "0", "content-type": "application/json" });
      res.end('{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}');
      return;
    }
    if (once("429", proxy.faults.tooManyRequestsOnce)) {
      entry.status = 429;
      req.resume();
      res.writeHead(429, { "retry-after": "1", "content-type": "application/json" });
      res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}');
      return;
    }
    const path = new URL(entry.url, "http://proxy").pathname;
    const blob = entry.method === "GET" ? BLOB_GET.exec(path)?.[1] : undefined;
    const headers = { ...req.headers };
    if (blob && proxy.faults.ignoreRange) delete headers.range;
    const upstream = http.request(
      { host: "127.0.0.1", port: target.port, method: req.method, path: req.url, headers },
      (up) => {
        entry.status = up.statusCode;
        res.writeHead(up.statusCode ?? 502, up.headers);
        const ranged = up.statusCode === 206;
        const length = Number(up.headers["content-length"] ?? 0);
        if (blob && up.statusCode === 200 && !ranged && (proxy.faults.cutBlobBodies ?? 0) > 0 && length > 1) {
          proxy.faults.cutBlobBodies = (proxy.faults.cutBlobBodies ?? 0) - 1;
          let sent = 0;
          const half = Math.floor(length / 2);
          up.on("data", (chunk: Buffer) => {
            if (sent >= half) return;
            const part = chunk.subarray(0, half - sent);
            sent += part.length;
            res.write(part, () => {
              if (sent >= half) {
                up.destroy();
                res.socket?.destroy();
              }
            });
          });
          return;
        }
        if (blob && blob === proxy.faults.corruptBlob && up.statusCode === 200) {
          let first = true;
          up.on("data", (chunk: Buffer) => {
            if (first && chunk.length > 0) {
              const copy = Buffer.from(chunk);
              copy[0] = copy[0]! ^ 0xff;
              res.write(copy);
              first = false;
            } else {
              res.write(chunk);
            }
          });
          up.on("end", () => res.end());
          return;
        }
        up.pipe(res);
      },
    );
    upstream.on("error", () => res.socket?.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(proxy, {
    host: `127.0.0.1:${port}`,
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
