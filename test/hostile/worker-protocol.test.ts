/**
 * `tbuild worker --stdio` reads whatever its client sends: over SSH that is someone with a login
 * on the host, through `cmd://` any program. A client that lies in a frame header, sends garbage,
 * names a directory that is no store, or vanishes mid-call must get one clear line and a worker
 * that ends, never a crash, an allocation of what a header claims, a write where no store is, or
 * a process left behind; and the store stays usable.
 */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { lengthPrefix } from "../../worker/remote/bytes.js";
import { encodeListing } from "../../worker/remote/context-sync.js";
import { connect } from "../../worker/remote/protocol.js";
import { decodeFrames, frame } from "../worker/remote/frames.js";
import { spawnWorker, type WorkerProcess } from "../worker/remote/worker-process.js";
import { hostileWorld, MODES, type Mode, tbuildCommandLine } from "./harness.js";

const world = hostileWorld();

function startWorker(mode: Mode, store: string): WorkerProcess {
  return spawnWorker(tbuildCommandLine(mode, store, ["worker", "--stdio"]));
}

/** What the worker wrote to stdout, as frames (after its magic). */
function collectOutput(worker: WorkerProcess): () => Buffer {
  const chunks: Buffer[] = [];
  worker.child.stdout!.on("data", (chunk: Buffer) => chunks.push(chunk));
  return () => Buffer.concat(chunks);
}

describe.each(MODES)("a hostile client of tbuild worker --stdio (%s)", (mode) => {
  it("a frame header claiming 4 GiB is refused on the header, with one line; the store stays usable", async () => {
    const store = world.store(mode);
    const worker = startWorker(mode, store);
    const client = await connect(worker.stream, { side: "client", peer: "worker under attack" });
    // The worker has opened and measured the store: then comes the lie, and not one byte of its payload.
    expect(await client.request("info", {})).toMatchObject({ store, rootless: mode === "rootless" });
    worker.child.stdin!.write(frame(99, 1, Buffer.alloc(0), 0xffffffff));
    const told = await client.closed;
    expect(await worker.ended).toEqual({ code: 1, signal: null });
    const line =
      "the client broke the tbuild worker protocol: it announced a frame of 4294967295 bytes, over the limit of 1048576; the connection is closed";
    expect(worker.stderr()).toBe(`ERROR: ${line}\n`);
    expect(told?.message).toBe(`worker under attack ended the connection: ${line}`);
    expect(worker.groupAlive()).toBe(false);
    world.expectStoreUsable(mode, store);
  });

  it("random bytes instead of the protocol end it with one line quoting them", async () => {
    const store = world.store(mode);
    const worker = startWorker(mode, store);
    const output = collectOutput(worker);
    const garbage = Buffer.concat([Buffer.from("GET / HTTP/1.1\r\n"), randomBytes(64 * 1024)]);
    worker.child.stdin!.end(garbage);
    expect(await worker.ended).toEqual({ code: 1, signal: null });
    const stderr = worker.stderr();
    expect(stderr.split("\n")).toHaveLength(2);
    expect(stderr).toMatch(
      /^ERROR: the client does not speak the tbuild worker protocol: what it sent begins "GET \/ HTTP\/1\.1\\r\\n.*\(`tbuild worker --stdio` serves tbuild's --worker only\)\n$/,
    );
    // The worker said hello, then why it stopped, in a frame the client could read.
    const frames = decodeFrames(output());
    expect(frames.map((f) => [f.channel, f.kind])).toEqual([
      [0, 1],
      [0, 4],
    ]);
    expect(worker.groupAlive()).toBe(false);
  });

  it("a client naming someone's directory as the store learns it holds nothing, and nothing is written there", async () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const worker = startWorker(mode, store);
    const client = await connect(worker.stream, { side: "client", peer: "worker w", store: canary.dir });
    const info = await client.request("info", {});
    client.close();
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    expect(info).toMatchObject({ store: canary.dir, cacheSize: 0 });
    canary.expectUntouched(JSON.stringify(info), worker.stderr());
  });

  it("a build call naming its contexts wrongly, or announcing a frame of files over the limit, fails with one line; the store stays usable", async () => {
    const store = world.store(mode);
    const worker = startWorker(mode, store);
    const client = await connect(worker.stream, { side: "client", peer: "worker w" });
    const key = "ab".repeat(16);
    const build = (params: Record<string, unknown>) =>
      client.openStream("build", {
        contextKey: key,
        dockerfile: { name: "Dockerfile", source: "" },
        ignore: [],
        request: {},
        fileOutputs: [],
        imageNames: [],
        secretIds: [],
        sshIds: [],
        ...params,
      });
    const refused = async (params: Record<string, unknown>) => {
      const call = build(params);
      call.writable.end();
      return (await call.result.catch((err: Error) => err)) as Error;
    };
    // The build context's own name, the same copy twice, a key that is no key.
    expect(
      (await refused({ namedContexts: [{ name: "context", contextKey: "cd".repeat(16) }] })).message,
    ).toContain('a build call names a context "context"');
    expect((await refused({ namedContexts: [{ name: "assets", contextKey: key }] })).message).toContain(
      "a build call names a context twice",
    );
    expect(
      (await refused({ namedContexts: [{ name: "assets", contextKey: "../../etc" }] })).message,
    ).toContain("a build call names no valid context key");
    // A listing of one file, then a frame header claiming 4 GiB of it: refused on the header.
    const call = build({});
    const listing = encodeListing([{ path: "a", type: "file", mode: 0o644, size: 1, mtimeMs: 0 }]);
    call.writable.write(Buffer.concat([lengthPrefix(listing.length), listing]));
    call.writable.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    const err = (await call.result.catch((e: Error) => e)) as Error;
    expect(err.message).toContain("a frame of the context's files is 4294967295 bytes, more than 16777216");
    client.close();
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    world.expectStoreUsable(mode, store);
  });

  it("a client that vanishes mid-call leaves no worker process behind, and the store usable", async () => {
    const store = world.store(mode);
    const worker = startWorker(mode, store);
    const client = await connect(worker.stream, { side: "client", peer: "worker w" });
    const pending = client.request("info", {});
    // Gone at once: its pipes closed with the call in flight, unanswered or not.
    worker.stream.destroy();
    await pending.catch(() => {});
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    expect(worker.groupAlive()).toBe(false);
    expect(worker.stderr()).toBe("");
    world.expectStoreUsable(mode, store);
  });
});
