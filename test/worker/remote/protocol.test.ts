/**
 * The worker protocol between two ends in this process, over a pair of connected streams (what an
 * SSH channel or a command's stdio is to the real ends): calls both ways, many at once,
 * cancellation, the handshake, what a broken or vanished far end does to pending calls, and flow
 * control bounding what a slow reader holds of a 200 MiB stream. server.test.ts runs the real
 * `tbuild worker --stdio`.
 */
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { type Duplex, duplexPair } from "node:stream";
import { describe, expect, it } from "vitest";
import { TbuildError } from "../../../errors/index.js";
import {
  type Connection,
  type ConnectOptions,
  connect,
  DEFAULT_WINDOW,
  type Handler,
  MAX_FRAME_BYTES,
  MAX_INCOMING_CALLS,
} from "../../../worker/remote/protocol.js";
import { projectRoot } from "../../helpers/cli.js";
import { decodeFrames, frame, hello, MAGIC, messageFrame } from "./frames.js";

const VERSION = (JSON.parse(readFileSync(`${projectRoot}package.json`, "utf8")) as { version: string })
  .version;

/** A client and a worker connected to each other. */
async function connectedPair(
  workerHandlers: Record<string, Handler>,
  clientOptions: Partial<ConnectOptions> = {},
): Promise<{ client: Connection; worker: Connection; clientEnd: Duplex; workerEnd: Duplex }> {
  const [clientEnd, workerEnd] = duplexPair();
  const [client, worker] = await Promise.all([
    connect(clientEnd, { side: "client", peer: "worker test-host", ...clientOptions }),
    connect(workerEnd, { side: "worker", peer: "the client", handlers: workerHandlers }),
  ]);
  return { client, worker, clientEnd, workerEnd };
}

/** A promise and the function that resolves it: for waiting on an event, never on time. */
function signalled<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe("calls", () => {
  it("a request gets its handler's result, and a handler's error arrives as the same TbuildError", async () => {
    const { client, worker } = await connectedPair({
      echo: (params) => ({ echoed: params }),
      refuse: () => {
        throw new TbuildError("E_BUILD_CONTEXT", "no context named web");
      },
    });
    expect(await client.request("echo", { a: [1, "two"] })).toEqual({ echoed: { a: [1, "two"] } });
    const refused = await client.request("refuse", {}).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(TbuildError);
    expect(refused).toMatchObject({ code: "E_BUILD_CONTEXT", message: "no context named web" });
    client.close();
    expect(await worker.closed).toBeUndefined();
  });

  it("a method the far end does not serve is refused at once as not supported, naming it", async () => {
    const { client } = await connectedPair({ info: () => ({}) });
    const refused = await client.request("build", {}).catch((err: unknown) => err);
    expect(refused).toMatchObject({ code: "E_NOT_SUPPORTED" });
    expect((refused as Error).message).toContain("`build` is not supported yet by this worker");
    expect((refused as Error).message).toContain(`tbuild ${VERSION}`);
    expect(await client.request("info", {})).toEqual({});
    client.close();
  });

  it("100 requests at once each get their own answer, though answered in reverse order", async () => {
    const arrived: { n: number; answer: (value: unknown) => void }[] = [];
    const allArrived = signalled();
    const { client } = await connectedPair({
      slow: (params) =>
        new Promise((answer) => {
          arrived.push({ n: (params as { n: number }).n, answer });
          if (arrived.length === 100) allArrived.resolve();
        }),
    });
    const calls = Array.from({ length: 100 }, (_, n) => client.request("slow", { n }));
    await allArrived.promise;
    for (const { n, answer } of [...arrived].reverse()) answer({ square: n * n });
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 100 }, (_, n) => ({ square: n * n })));
    expect(client.stats().channels).toBe(0);
    client.close();
  });

  it("calls go both ways: the worker asks the client for a secret while the client waits for it", async () => {
    const [clientEnd, workerEnd] = duplexPair();
    const [client] = await Promise.all([
      connect(clientEnd, {
        side: "client",
        peer: "worker test-host",
        handlers: { secret: (params) => ({ value: `value-of-${(params as { id: string }).id}` }) },
      }),
      connect(workerEnd, {
        side: "worker",
        peer: "the client",
        handlers: {
          step: async (_params, call) => {
            const secret = (await call.connection.request("secret", { id: "npmrc" })) as { value: string };
            return { ran: `with ${secret.value}` };
          },
        },
      }),
    ]);
    expect(await client.request("step", {})).toEqual({ ran: "with value-of-npmrc" });
    client.close();
  });

  it("events a handler sends reach the caller in order, before its result", async () => {
    const { client } = await connectedPair({
      build: (_params, call) => {
        for (const step of ["1/3", "2/3", "3/3"]) call.notify({ step });
        return "done";
      },
    });
    const seen: unknown[] = [];
    const result = await client.request("build", {}, { onEvent: (event) => seen.push(event) });
    expect(result).toBe("done");
    expect(seen).toEqual([{ step: "1/3" }, { step: "2/3" }, { step: "3/3" }]);
    client.close();
  });
});

describe("cancellation", () => {
  it("aborting a call's signal rejects it at once and aborts the handler's signal on the far end", async () => {
    const started = signalled();
    const handlerAborted = signalled<unknown>();
    const { client } = await connectedPair({
      ping: () => "pong",
      long: (_params, call) =>
        new Promise((_resolve, reject) => {
          started.resolve();
          call.signal.addEventListener("abort", () => {
            handlerAborted.resolve(call.signal.reason);
            reject(call.signal.reason);
          });
        }),
    });
    const controller = new AbortController();
    const call = client.request("long", {}, { signal: controller.signal });
    await started.promise;
    const reason = new TbuildError("E_CANCELED", "the user pressed Ctrl-C");
    controller.abort(reason);
    await expect(call).rejects.toBe(reason);
    const handlerReason = await handlerAborted.promise;
    expect(handlerReason).toMatchObject({ code: "E_CANCELED" });
    expect((handlerReason as Error).message).toContain("the client canceled `long`");
    // The connection goes on.
    expect(await client.request("ping", {})).toBe("pong");
    client.close();
  });

  it("a call whose signal is aborted already is never sent", async () => {
    let called = false;
    const { client } = await connectedPair({
      work: () => {
        called = true;
      },
      ping: () => "pong",
    });
    const controller = new AbortController();
    controller.abort(new TbuildError("E_CANCELED", "not wanted"));
    await expect(client.request("work", {}, { signal: controller.signal })).rejects.toThrow("not wanted");
    // Frames go in order: the ping's answer comes after anything the work call would have done.
    expect(await client.request("ping", {})).toBe("pong");
    expect(called).toBe(false);
    client.close();
  });
});

describe("the handshake", () => {
  it("a protocol mismatch is refused on both ends, each naming both versions and what to install", async () => {
    const [clientEnd, workerEnd] = duplexPair();
    const [clientSide, workerSide] = await Promise.allSettled([
      connect(clientEnd, {
        side: "client",
        peer: "worker build1.example",
        announce: { protocol: 7, tbuild: "9.9.9" },
      }),
      connect(workerEnd, { side: "worker", peer: "the client", handlers: {} }),
    ]);
    expect(clientSide.status).toBe("rejected");
    expect(workerSide.status).toBe("rejected");
    const clientError = (clientSide as PromiseRejectedResult).reason as TbuildError;
    const workerError = (workerSide as PromiseRejectedResult).reason as TbuildError;
    expect(clientError.code).toBe("E_WORKER_VERSION");
    expect(clientError.message).toBe(
      `worker build1.example runs tbuild ${VERSION} (worker protocol 3) and this tbuild 9.9.9 speaks protocol 7: install tbuild 9.9.9 on the host of worker build1.example, or run tbuild ${VERSION} here`,
    );
    expect(workerError.code).toBe("E_WORKER_VERSION");
    expect(workerError.message).toBe(
      `the client runs tbuild 9.9.9 (worker protocol 7) and this worker's tbuild ${VERSION} speaks protocol 3: install tbuild 9.9.9 on this host, or run tbuild ${VERSION} on the client`,
    );
  });

  it("the client's hello names the store the worker is to use", async () => {
    const { client, worker } = await connectedPair({}, { store: "/srv/tbuild-store" });
    expect(worker.peerHello.store).toBe("/srv/tbuild-store");
    expect(client.peerHello.tbuild).toBe(VERSION);
    client.close();
  });

  it("a relative store path is refused before anything is sent", async () => {
    const [clientEnd] = duplexPair();
    await expect(connect(clientEnd, { side: "client", peer: "worker w", store: "store" })).rejects.toThrow(
      'the worker\'s store must be an absolute path on its host, not "store"',
    );
  });
});

/** A worker connection whose far end is raw bytes this test writes, and what the worker sends back. */
async function rawClient(): Promise<{ worker: Promise<Connection>; raw: Duplex; received: () => Buffer }> {
  const [raw, workerEnd] = duplexPair();
  const chunks: Buffer[] = [];
  raw.on("data", (chunk: Buffer) => chunks.push(chunk));
  const worker = connect(workerEnd, { side: "worker", peer: "the client", handlers: { ping: () => "pong" } });
  worker.catch(() => {});
  return { worker, raw, received: () => Buffer.concat(chunks) };
}

describe("a broken far end", () => {
  it("an oversized frame ends the connection with one clear error at once, and the far end is told", async () => {
    const { worker, raw, received } = await rawClient();
    raw.write(Buffer.concat([MAGIC, hello("client")]));
    const connection = await worker;
    // A header announcing 4 GiB - 1, and not one byte of it: refused on the header alone.
    raw.write(frame(1, 1, Buffer.alloc(0), 0xffffffff));
    const failure = await connection.closed;
    expect(failure).toMatchObject({ code: "E_WORKER_PROTOCOL" });
    expect(failure!.message).toBe(
      `the client broke the tbuild worker protocol: it announced a frame of 4294967295 bytes, over the limit of ${MAX_FRAME_BYTES}; the connection is closed`,
    );
    await once(raw, "end");
    const told = decodeFrames(received()).find((f) => f.channel === 0 && f.kind === 4);
    expect(JSON.parse(told!.payload.toString()).message).toBe(failure!.message);
  });

  it.each([
    ["a frame of an unknown kind", () => frame(1, 9, Buffer.from("{}")), "sent a frame of unknown kind 9"],
    [
      "a message that is not JSON",
      () => frame(1, 1, Buffer.from("{call")),
      "sent a malformed call on channel 1",
    ],
    [
      "data on a channel never opened",
      () => frame(1, 2, Buffer.from("abc")),
      "opened channel 1 with a data frame",
    ],
    [
      "data beyond the window",
      () =>
        Buffer.concat([
          messageFrame(1, { type: "call", method: "upload", params: {}, stream: true }),
          ...Array.from({ length: DEFAULT_WINDOW / 65536 + 1 }, () => frame(1, 2, Buffer.alloc(65536))),
        ]),
      "sent 65536 bytes on channel 1, more than the 0 its window allows",
    ],
  ])("%s ends the connection with one clear error", async (_name, bytes, detail) => {
    const [raw, workerEnd] = duplexPair();
    raw.resume();
    const handlers: Record<string, Handler> = {
      // Holds the channel open, reading nothing: the client may send a window's worth, no more.
      upload: (_params, call) => new Promise((resolve) => call.signal.addEventListener("abort", resolve)),
    };
    const worker = connect(workerEnd, { side: "worker", peer: "the client", handlers });
    raw.write(Buffer.concat([MAGIC, hello("client")]));
    const connection = await worker;
    raw.write(bytes());
    const failure = await connection.closed;
    expect(failure).toMatchObject({ code: "E_WORKER_PROTOCOL" });
    expect(failure!.message).toBe(
      `the client broke the tbuild worker protocol: it ${detail}; the connection is closed`,
    );
  });

  it("more calls open at once than the limit end the connection, not the process's memory", async () => {
    const [raw, workerEnd] = duplexPair();
    raw.resume();
    let started = 0;
    const worker = connect(workerEnd, {
      side: "worker",
      peer: "the client",
      handlers: {
        hang: () => {
          started++;
          return new Promise(() => {});
        },
      },
    });
    raw.write(Buffer.concat([MAGIC, hello("client")]));
    const connection = await worker;
    const call = (id: number) =>
      messageFrame(id, { type: "call", method: "hang", params: {}, stream: false });
    raw.write(Buffer.concat(Array.from({ length: MAX_INCOMING_CALLS + 1 }, (_, i) => call(2 * i + 1))));
    const failure = await connection.closed;
    expect(failure?.message).toBe(
      `the client broke the tbuild worker protocol: it opened more than ${MAX_INCOMING_CALLS} calls at once; the connection is closed`,
    );
    expect(started).toBe(MAX_INCOMING_CALLS);
  });

  it("a far end that is no tbuild worker (a login banner) is named with what it printed", async () => {
    const [clientEnd, raw] = duplexPair();
    raw.resume();
    raw.write("Welcome to build1! Last login: Mon\n");
    const refused = await connect(clientEnd, { side: "client", peer: "worker ssh://build1" }).catch(
      (err: unknown) => err,
    );
    expect(refused).toMatchObject({ code: "E_WORKER_PROTOCOL" });
    expect((refused as Error).message).toBe(
      'worker ssh://build1 does not speak the tbuild worker protocol: its output begins "Welcome to build1! Last login: Mon\\n" (does a login script print to standard output, or is the command wrong?)',
    );
  });

  it("a far end that ends before its hello is named, with where to look", async () => {
    const [clientEnd, raw] = duplexPair();
    raw.resume();
    raw.end();
    await expect(connect(clientEnd, { side: "client", peer: "worker ssh://build1" })).rejects.toThrow(
      "worker ssh://build1 ended the connection before the handshake",
    );
  });

  it("a far end gone mid-request rejects every pending call with one error naming the worker", async () => {
    const arrived = signalled();
    let count = 0;
    const { client, workerEnd } = await connectedPair({
      hang: () =>
        new Promise(() => {
          if (++count === 3) arrived.resolve();
        }),
    });
    const calls = [client.request("hang", {}), client.request("hang", {}), client.request("hang", {})];
    await arrived.promise;
    workerEnd.destroy();
    const errors = await Promise.all(calls.map((call) => call.catch((err: unknown) => err)));
    expect(new Set(errors).size).toBe(1);
    expect(errors[0]).toMatchObject({ code: "E_WORKER_GONE" });
    expect((errors[0] as Error).message).toBe(
      "lost the connection to worker test-host while `hang`, `hang`, `hang` were pending: the stream ended",
    );
    // Later calls fail at once, the same way.
    await expect(client.request("hang", {})).rejects.toBe(errors[0]);
  });
});

describe("flow control", () => {
  it("a 200 MiB stream to a slow reader: small requests still answer, and buffering stays bounded", async () => {
    const TOTAL = 200 * 1024 * 1024;
    const CHUNK = 256 * 1024;
    const STALL_EVERY = 20 * 1024 * 1024;
    let produced = 0;
    let producerDone = false;
    const { client, worker } = await connectedPair({
      ping: (params) => params,
      blob: async (_params, call) => {
        const chunk = Buffer.alloc(CHUNK, 0x61);
        while (produced < TOTAL) {
          produced += CHUNK;
          if (!call.writable.write(chunk)) await once(call.writable, "drain");
        }
        producerDone = true;
        return { bytes: produced };
      },
    });
    const stream = client.openStream("blob", {});
    stream.writable.end();
    let settled = false;
    stream.result.finally(() => {
      settled = true;
    });
    const chunks = stream.readable[Symbol.asyncIterator]();
    let consumed = 0;
    let maxBuffered = 0;
    let stalls = 0;
    let nextStall = 0;
    for (let next = await chunks.next(); !next.done; next = await chunks.next()) {
      consumed += (next.value as Buffer).length;
      maxBuffered = Math.max(maxBuffered, client.stats().bufferedBytes);
      if (consumed < nextStall || nextStall >= TOTAL) continue;
      nextStall += STALL_EVERY;
      // The slow reader stops reading until the worker's sender waits for window (or, without flow
      // control, has sent everything). Each turn of the loop lets the other end run; no clock is read.
      while (!producerDone && !settled && worker.stats().waitingForWindow === 0)
        await new Promise(setImmediate);
      expect(producerDone, `the whole stream was sent to a reader that stopped at ${consumed} bytes`).toBe(
        false,
      );
      expect(settled, "the stream's call failed").toBe(false);
      expect(client.stats().bufferedBytes).toBeLessThanOrEqual(DEFAULT_WINDOW + 128 * 1024);
      expect(produced - consumed).toBeLessThanOrEqual(DEFAULT_WINDOW + 4 * CHUNK);
      // A small request over the same connection answers while the stream is stuck behind its reader.
      expect(await client.request("ping", { at: consumed })).toEqual({ at: consumed });
      stalls++;
    }
    expect(consumed).toBe(TOTAL);
    expect(await stream.result).toEqual({ bytes: TOTAL });
    expect(stalls).toBe(10);
    // However the reads fell, the reader's side never held more than a window and a read buffer.
    expect(maxBuffered).toBeLessThanOrEqual(DEFAULT_WINDOW + 128 * 1024);
    client.close();
  });

  it("data written to a stream call reaches the handler in order, and its result comes after", async () => {
    const { client } = await connectedPair({
      upload: async (_params, call) => {
        let text = "";
        for await (const chunk of call.readable) text += (chunk as Buffer).toString();
        call.writable.write(`got ${text.length} bytes`);
        return { last: text.slice(-5) };
      },
    });
    const stream = client.openStream("upload", {});
    for (let i = 0; i < 1000; i++) stream.writable.write(`${String(i).padStart(5, "0")}`);
    stream.writable.end();
    let reply = "";
    for await (const chunk of stream.readable) reply += (chunk as Buffer).toString();
    expect(reply).toBe("got 5000 bytes");
    expect(await stream.result).toEqual({ last: "00999" });
    client.close();
  });
});
