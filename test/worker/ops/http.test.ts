/**
 * ADD of a URL (`http` op) against a loopback server: the file lands at `/<filename>` with mode
 * 0600 and the Last-Modified time, redirects are followed, `--checksum` is checked, and the
 * cache key is the checksum (no download) or the content's digest (one download for the build).
 */
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { HttpOp } from "../../../solver/graph.js";
import { httpContentKey, runHttp } from "../../../worker/ops/http.js";
import { layerEntries, type OpsFixture, opsFixture } from "./helpers.js";

const BODY = "#!/bin/sh\necho downloaded\n";
const BODY_DIGEST = `sha256:${createHash("sha256").update(BODY).digest("hex")}`;
const LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT";

let server: http.Server;
let base: string;
let fixture: OpsFixture;
const requests: { url: string; ifNoneMatch?: string }[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    requests.push({
      url: req.url ?? "",
      ...(req.headers["if-none-match"] ? { ifNoneMatch: req.headers["if-none-match"] } : {}),
    });
    if (req.url === "/moved") {
      res.writeHead(302, { location: "/files/tool.sh" });
      res.end();
    } else if (req.url === "/files/tool.sh") {
      if (req.headers["if-none-match"] === '"v1"') {
        res.writeHead(304);
        res.end();
        return;
      }
      res.writeHead(200, { "last-modified": LAST_MODIFIED, etag: '"v1"', "content-length": BODY.length });
      res.end(BODY);
    } else {
      res.writeHead(404);
      res.end("no such file");
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(async () => {
  await fixture?.cleanup();
  fixture = await opsFixture();
  requests.length = 0;
});

afterAll(async () => {
  await fixture.cleanup();
});

function httpOp(url: string, extra: Partial<HttpOp> = {}): HttpOp {
  const filename = new URL(url).pathname.split("/").pop() || "__unnamed__";
  return { kind: "http", url, filename, ...extra };
}

describe("the http op", () => {
  it("stores the download as /<filename>, mode 0600, owned by root, with the Last-Modified time", async () => {
    const fs = await runHttp(httpOp(`${base}/files/tool.sh`), [], fixture.ctx);
    expect(fs.layers).toHaveLength(1);
    const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
    expect(entries).toEqual([
      {
        path: "tool.sh",
        type: "File",
        mode: 0o600,
        uid: 0,
        gid: 0,
        mtime: Date.parse(LAST_MODIFIED) / 1000,
        content: BODY,
      },
    ]);
  });

  it("follows redirects, and names the file after the URL it was asked for", async () => {
    const fs = await runHttp(httpOp(`${base}/moved`), [], fixture.ctx);
    const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
    expect(entries.map((e) => [e.path, e.content])).toEqual([["moved", BODY]]);
    expect(requests.map((r) => r.url)).toEqual(["/moved", "/files/tool.sh"]);
  });

  it("keys on --checksum without downloading, and accepts a matching download", async () => {
    const op = httpOp(`${base}/files/tool.sh`, { checksum: BODY_DIGEST });
    expect(await httpContentKey(op, fixture.ctx)).toBe(BODY_DIGEST);
    expect(requests).toEqual([]);
    const fs = await runHttp(op, [], fixture.ctx);
    expect(fs.layers).toHaveLength(1);
  });

  it("refuses a download that does not match --checksum, naming both digests", async () => {
    const wrong = `sha256:${"0".repeat(64)}`;
    await expect(
      runHttp(httpOp(`${base}/files/tool.sh`, { checksum: wrong }), [], fixture.ctx),
    ).rejects.toThrow(`checksum mismatch: --checksum expected ${wrong}, the download is ${BODY_DIGEST}`);
  });

  it("keys on the content's digest otherwise, downloading once for the key and the step", async () => {
    const op = httpOp(`${base}/files/tool.sh`);
    expect(await httpContentKey(op, fixture.ctx)).toBe(BODY_DIGEST);
    const fs = await runHttp(op, [], fixture.ctx);
    expect(fs.layers).toHaveLength(1);
    expect(requests).toHaveLength(1);
  });

  it("asks with the ETag in a later build and reuses the stored layer on 304", async () => {
    const op = httpOp(`${base}/files/tool.sh`);
    const first = await runHttp(op, [], fixture.ctx);
    const nextBuild = { ...fixture.ctx, stateDir: `${fixture.ctx.stateDir}-next` };
    const second = await runHttp(op, [], nextBuild);
    expect(second).toEqual(first);
    expect(requests.map((r) => r.ifNoneMatch)).toEqual([undefined, '"v1"']);
  });

  it("names the URL and the status of a failed download", async () => {
    await expect(runHttp(httpOp(`${base}/missing.tgz`), [], fixture.ctx)).rejects.toThrow(
      `${base}/missing.tgz: the server answered 404 Not Found`,
    );
  });
});
