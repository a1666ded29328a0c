/**
 * The protocol a client and a remote worker (`tbuild worker --stdio`) speak over one byte stream:
 * an SSH channel, a `cmd://` command's stdio, a socket. Where buildx needs gRPC over a long-lived
 * buildkitd, this is small enough to read in one sitting (docs/worker-protocol.md describes it):
 *
 * - **Frames.** Each direction starts with the magic `TBWP`, then frames: a 9-byte header (payload
 *   length u32, channel id u32, kind u8) and at most MAX_FRAME_BYTES of payload. Kinds: a JSON
 *   `message`, raw `data`, `end` of a channel's data, an `error` (a TbuildError as plain JSON,
 *   errors/wire.ts) and a `window` (credit for more data). A frame that breaks these rules ends the
 *   connection with one clear error, before anything is allocated for it.
 * - **Channels.** Every call is a channel of its own, so many run at once over the one stream:
 *   calls go both ways (the worker asks the client for a secret while the client waits for a
 *   build), the caller's AbortSignal cancels the handler's, and an ended stream rejects every
 *   pending call with one error naming the far end.
 * - **Flow control**, as HTTP/2 and SSH channels do it: a sender sends a channel's data only within
 *   the window the receiver granted, and the receiver grants more as its reader consumes. So a
 *   reader's memory holds at most a window per channel however big the stream, and frames of all
 *   channels take turns on the wire: a 200 MiB blob does not hold up a small request.
 * - **Handshake.** Both ends send `hello` first (protocol number, tbuild version, window; the
 *   client adds the store the worker is to use) and refuse a different protocol number, naming
 *   both versions and what to install where.
 */
import { readFileSync } from "node:fs";
import { type Duplex, Readable, Writable } from "node:stream";
import { capLine } from "../../errors/excerpt.js";
import { TbuildError } from "../../errors/index.js";
import { errorFromWire, errorToWire, type WireError } from "../../errors/wire.js";

/** Bumped whenever a message, a method or the framing changes in a way an older end would misread. */
export const PROTOCOL_VERSION = 3;
/** The first bytes each end sends: what tells a tbuild worker from a login banner or a shell's prompt. */
export const MAGIC = Buffer.from("TBWP", "latin1");
export const HEADER_BYTES = 9;
/** The largest payload of one frame: a message, or a piece of data. */
export const MAX_FRAME_BYTES = 1024 * 1024;
/** Data goes in frames of at most this, so that channels sending at once take turns often. */
const DATA_FRAME_BYTES = 64 * 1024;
/** Bytes of data per channel an end accepts before it grants more (announced in its hello). */
export const DEFAULT_WINDOW = 1024 * 1024;
/** Calls of the far end open at once: with a window each, what bounds a connection's memory. */
export const MAX_INCOMING_CALLS = 1024;

export const FrameKind = { message: 1, data: 2, end: 3, error: 4, window: 5 } as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];
const KIND_NAMES = Object.fromEntries(Object.entries(FrameKind).map(([name, kind]) => [kind, name]));

/** Which end this is: the client opens odd channel ids, the worker even ones; channel 0 is the connection's. */
export type Side = "client" | "worker";

/** The first message each end sends, on channel 0. */
export interface Hello {
  type: "hello";
  protocol: number;
  /** The tbuild version of that end, for the message that refuses a mismatch. */
  tbuild: string;
  side: Side;
  /** Bytes of data per channel this end accepts before granting more. */
  window: number;
  /** The client's: the store the worker builds in (an absolute path); its default store when absent. */
  store?: string;
}

/** Messages on a call's channel. */
type ChannelMessage =
  | { type: "call"; method: string; params: unknown; stream: boolean }
  | { type: "result"; result: unknown }
  | { type: "event"; event: unknown }
  | { type: "cancel" };

/** The far end broke the protocol: a malformed or oversized frame, data beyond its window, garbage. */
export class WorkerProtocolError extends TbuildError {
  constructor(message: string) {
    super("E_WORKER_PROTOCOL", message);
  }
}

/** The two ends speak different protocol versions. */
export class WorkerVersionError extends TbuildError {
  constructor(message: string) {
    super("E_WORKER_VERSION", message);
  }
}

/** The connection ended (end of stream, a stream error, close()) while calls were pending. */
export class WorkerConnectionError extends TbuildError {
  constructor(message: string, cause?: unknown) {
    super("E_WORKER_GONE", message, cause === undefined ? {} : { cause });
  }
}

/** What a handler gets besides the params: the call's signal, data streams, events, and the connection. */
export interface IncomingCall {
  method: string;
  /** Aborted when the caller cancels, or the connection ends. */
  signal: AbortSignal;
  /** The data the caller sends (openStream); ended at once for a request. */
  readable: Readable;
  /** Data to the caller; ended for the handler when it returns. */
  writable: Writable;
  /** Sends an event (progress, a log line) to the caller, in order with the data. */
  notify(event: unknown): void;
  /** For calls back to the caller's end (a secret, an ssh-agent request). */
  connection: Connection;
}

/** Serves one method; its result (JSON) is the caller's, a thrown error rejects the caller's call. */
export type Handler = (params: unknown, call: IncomingCall) => unknown;

export interface CallOptions {
  signal?: AbortSignal;
  /** Events the handler sends with `notify`, in order. */
  onEvent?: (event: unknown) => void;
}

/** A call with data both ways: what the caller writes, what the handler writes back, then its result. */
export interface OutgoingStream {
  /** The handler's data. Errors when the call fails (the error `result` rejects with). */
  readable: Readable;
  /** Data to the handler; `end()` it when done. */
  writable: Writable;
  result: Promise<unknown>;
}

export interface ConnectOptions {
  side: Side;
  /** The far end as messages name it: `worker ssh://build1`, `the client`. */
  peer: string;
  /** Methods the far end may call. */
  handlers?: Record<string, Handler>;
  /** The client's: the store the worker is to use (absolute). */
  store?: string;
  /** Bytes of data per channel this end buffers before granting more. */
  window?: number;
  /** Gives up waiting for the far end's hello. */
  signal?: AbortSignal;
  /** Announces another protocol number or tbuild version than this tbuild's: for tests of a mismatch. */
  announce?: { protocol?: number; tbuild?: string };
}

export interface ConnectionStats {
  /** Received data not yet taken by its readers, over all channels: at most a window (and a read buffer) each. */
  bufferedBytes: number;
  /** Calls open in either direction. */
  channels: number;
  /** Channels whose data waits for the far end to grant more (its reader is behind). */
  waitingForWindow: number;
  bytesIn: number;
  bytesOut: number;
}

let cachedVersion: string | undefined;

/** This tbuild's version, from its package.json (two levels above this file in the source, three in dist/). */
export function tbuildVersion(): string {
  if (cachedVersion) return cachedVersion;
  for (const up of ["../../", "../../../"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(`${up}package.json`, import.meta.url), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "tbuild" && pkg.version) {
        cachedVersion = pkg.version;
        return cachedVersion;
      }
    } catch {
      // not here
    }
  }
  return "unknown";
}

/**
 * Speaks the protocol over `stream`: sends this end's hello and resolves once the far end's has
 * come and agrees. Rejects with WorkerVersionError on a mismatch, WorkerProtocolError when what
 * comes is not the protocol, WorkerConnectionError when the stream ends first.
 */
export async function connect(stream: Duplex, options: ConnectOptions): Promise<Connection> {
  if (options.store !== undefined && !options.store.startsWith("/")) {
    throw new TbuildError(
      "E_WORKER_STORE",
      `the worker's store must be an absolute path on its host, not ${JSON.stringify(options.store)}`,
    );
  }
  const connection = new Connection(stream, options);
  await connection.handshake(options.signal);
  return connection;
}

interface QueuedFrame {
  bytes: Buffer;
  written?: () => void;
  dropped?: (err: Error) => void;
}

/** One call, at either end. */
interface Channel {
  id: number;
  method: string;
  /** This end made the call. */
  outgoing: boolean;
  /** Frames waiting for their turn on the wire, in order. */
  frames: QueuedFrame[];
  inRotation: boolean;
  /** The call message is on the wire: the far end knows the channel. */
  announced: boolean;
  /** Bytes of data this end may still send. */
  credit: number;
  wakeSender?: () => void;
  /** Bytes of data the far end may still send. */
  allowance: number;
  /** Consumed bytes not yet granted back. */
  ungranted: number;
  /** Received data the reader has not asked for yet. */
  queue: Buffer[];
  queuedBytes: number;
  readerWants: boolean;
  readerGone: boolean;
  incomingEnded: boolean;
  endPushed: boolean;
  readable: Readable;
  writable: Writable;
  /** No more frames are accepted or sent for this call (answered, canceled, failed). */
  done: boolean;
  // caller's end
  resolve?: (value: unknown) => void;
  reject?: (err: Error) => void;
  onEvent?: (event: unknown) => void;
  // handler's end
  controller?: AbortController;
}

export class Connection {
  readonly peer: string;
  readonly side: Side;
  /** The far end's hello (its tbuild version, the store it was asked to use). */
  peerHello!: Hello;
  /** Settles when the connection ends: undefined when it ended cleanly (end of stream, close()), else why. */
  readonly closed: Promise<Error | undefined>;

  private readonly stream: Duplex;
  private readonly handlers: Record<string, Handler>;
  private readonly window: number;
  private readonly hello: Hello;
  private readonly channels = new Map<number, Channel>();
  private nextId: number;
  /** The highest channel id the far end has opened: lower ones not in `channels` are finished. */
  private highestPeerId = 0;
  /** Calls of the far end open here. */
  private incomingCalls = 0;
  private readonly reader = new FrameReader();
  private urgent: QueuedFrame[] = [];
  private rotation: Channel[] = [];
  private waitingForDrain = false;
  private failure: Error | undefined;
  private ended = false;
  private settleClosed!: (err: Error | undefined) => void;
  private helloArrived!: () => void;
  private counters = { bytesIn: 0, bytesOut: 0 };

  constructor(stream: Duplex, options: ConnectOptions) {
    this.stream = stream;
    this.peer = options.peer;
    this.side = options.side;
    this.handlers = options.handlers ?? {};
    this.window = options.window ?? DEFAULT_WINDOW;
    this.nextId = options.side === "client" ? 1 : 2;
    this.hello = {
      type: "hello",
      protocol: options.announce?.protocol ?? PROTOCOL_VERSION,
      tbuild: options.announce?.tbuild ?? tbuildVersion(),
      side: options.side,
      window: this.window,
      ...(options.store !== undefined ? { store: options.store } : {}),
    };
    this.closed = new Promise((resolve) => {
      this.settleClosed = resolve;
    });
    stream.on("data", (chunk: Buffer) => this.receive(chunk));
    stream.on("end", () => this.onEnd());
    stream.on("error", (err: NodeJS.ErrnoException) => {
      // The far end gone (its pipe closed under a write, the pipes closed in the middle): an end of stream.
      if (err.code && END_OF_STREAM_CODES.has(err.code)) this.onEnd();
      else this.fail(this.lost(err.message, err));
    });
    stream.on("close", () => this.onEnd());
    this.urgent.push({ bytes: MAGIC });
    this.urgent.push({ bytes: encodeFrame(0, FrameKind.message, jsonPayload(this.hello)) });
    this.pump();
  }

  /** Resolves once the far end's hello has come and agrees with this end's. */
  async handshake(signal?: AbortSignal): Promise<void> {
    const arrived = new Promise<void>((resolve) => {
      this.helloArrived = resolve;
    });
    const onAbort = () =>
      this.fail(new WorkerConnectionError(`gave up waiting for ${this.peer}'s handshake`));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const outcome = await Promise.race([arrived.then(() => undefined), this.closed]);
      if (this.failure) throw this.failure;
      if (outcome) throw outcome;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Calls `method` on the far end; resolves to its result. Aborting `signal` cancels the handler there. */
  request(method: string, params: unknown, options: CallOptions = {}): Promise<unknown> {
    const call = this.call(method, params, false, options);
    call.readable.resume();
    return call.result;
  }

  /** Calls `method` with data both ways: what `writable` takes reaches the handler, its data `readable`. */
  openStream(method: string, params: unknown, options: CallOptions = {}): OutgoingStream {
    return this.call(method, params, true, options);
  }

  /** Sizes, for tests and `--debug`: what the flow control bounds. */
  stats(): ConnectionStats {
    let bufferedBytes = 0;
    let waitingForWindow = 0;
    for (const channel of this.channels.values()) {
      bufferedBytes += channel.queuedBytes + channel.readable.readableLength;
      if (channel.wakeSender) waitingForWindow++;
    }
    return { bufferedBytes, channels: this.channels.size, waitingForWindow, ...this.counters };
  }

  /** Ends the connection: pending calls reject, the stream is ended once what is queued is written. */
  close(): void {
    this.fail(this.lost("this end closed it"), { clean: true });
  }

  private call(method: string, params: unknown, stream: boolean, options: CallOptions): OutgoingStream {
    const channel = this.newChannel(this.nextId, method, true);
    this.nextId += 2;
    const result = new Promise<unknown>((resolve, reject) => {
      channel.resolve = resolve;
      channel.reject = reject;
    });
    // The caller learns of a failure from `result`; the streams must not crash a process that did not listen.
    result.catch(() => {});
    if (options.onEvent) channel.onEvent = options.onEvent;
    const streams = { readable: channel.readable, writable: channel.writable, result };
    if (this.failure) {
      this.finishChannel(channel, this.failure);
      return streams;
    }
    const { signal } = options;
    if (signal?.aborted) {
      this.finishChannel(channel, abortReason(signal));
      return streams;
    }
    let message: Buffer;
    try {
      message = jsonPayload({ type: "call", method, params, stream } satisfies ChannelMessage);
    } catch (err) {
      this.finishChannel(channel, err as Error);
      return streams;
    }
    this.channels.set(channel.id, channel);
    if (signal) {
      const onAbort = () => this.cancel(channel, abortReason(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      result.then(
        () => signal.removeEventListener("abort", onAbort),
        () => signal.removeEventListener("abort", onAbort),
      );
    }
    this.enqueue(channel, {
      bytes: encodeFrame(channel.id, FrameKind.message, message),
      written: () => {
        channel.announced = true;
      },
    });
    return streams;
  }

  private newChannel(id: number, method: string, outgoing: boolean): Channel {
    const channel = {
      id,
      method,
      outgoing,
      frames: [],
      inRotation: false,
      announced: !outgoing,
      // Calls are made, and served, only once the far end's hello (and window) is known.
      credit: this.peerHello?.window ?? 0,
      allowance: this.window,
      ungranted: 0,
      queue: [],
      queuedBytes: 0,
      readerWants: false,
      readerGone: false,
      incomingEnded: false,
      endPushed: false,
      done: false,
    } as unknown as Channel;
    channel.readable = new Readable({
      highWaterMark: DATA_FRAME_BYTES,
      read: () => {
        channel.readerWants = true;
        this.feedReader(channel);
      },
      destroy: (err, callback) => {
        // A reader that gave up: what still comes is taken and granted at once, so the sender is not stuck.
        channel.readerGone = true;
        this.grant(channel, channel.queuedBytes);
        channel.queue = [];
        channel.queuedBytes = 0;
        callback(err);
      },
    });
    channel.writable = new Writable({
      highWaterMark: DATA_FRAME_BYTES,
      write: (chunk: Buffer, _encoding, callback) => {
        this.sendData(channel, chunk).then(() => callback(), callback);
      },
      final: (callback) => {
        if (channel.done) return callback();
        this.enqueueAwaited(channel, encodeFrame(channel.id, FrameKind.end, EMPTY)).then(
          () => callback(),
          callback,
        );
      },
    });
    channel.readable.on("error", () => {});
    channel.writable.on("error", () => {});
    return channel;
  }

  // ---- receiving ----

  private receive(chunk: Buffer): void {
    if (this.failure) return;
    this.counters.bytesIn += chunk.length;
    this.reader.push(chunk);
    try {
      for (let frame = this.reader.next(); frame; frame = this.failure ? undefined : this.reader.next()) {
        this.dispatch(frame);
      }
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.violation(err.detail, err.firstBytes);
    }
  }

  private dispatch(frame: Frame): void {
    if (frame.channel === 0) {
      this.connectionFrame(frame);
      return;
    }
    if (!this.peerHello) {
      this.violation(`sent a ${KIND_NAMES[frame.kind]} frame before its hello`);
      return;
    }
    const channel = this.channels.get(frame.channel);
    if (!channel) {
      this.frameOfNoOpenChannel(frame);
      return;
    }
    switch (frame.kind) {
      case FrameKind.message:
        this.channelMessage(channel, frame);
        return;
      case FrameKind.data:
        this.receiveData(channel, frame.payload);
        return;
      case FrameKind.end:
        channel.incomingEnded = true;
        this.feedReader(channel);
        return;
      case FrameKind.error: {
        const err = this.remoteError(frame.payload);
        if (err) this.finishChannel(channel, err);
        return;
      }
      case FrameKind.window:
        this.receiveWindow(channel, frame.payload);
        return;
    }
  }

  private connectionFrame(frame: Frame): void {
    if (frame.kind === FrameKind.error) {
      const err = this.remoteError(frame.payload);
      if (err) {
        err.message = `${this.peer} ended the connection: ${err.message}`;
        this.fail(err);
      }
      return;
    }
    if (frame.kind !== FrameKind.message || this.peerHello) {
      this.violation(`sent a ${KIND_NAMES[frame.kind]} frame on channel 0`);
      return;
    }
    const hello = parseJson(frame.payload) as Partial<Hello> | undefined;
    if (
      hello?.type !== "hello" ||
      typeof hello.protocol !== "number" ||
      typeof hello.tbuild !== "string" ||
      (hello.side !== "client" && hello.side !== "worker") ||
      !isCount(hello.window) ||
      (hello.store !== undefined && typeof hello.store !== "string")
    ) {
      this.violation("sent a malformed hello");
      return;
    }
    if (hello.protocol !== this.hello.protocol) {
      this.refuseVersion(hello as Hello);
      return;
    }
    if (hello.side === this.side) {
      this.violation(`is a ${hello.side} too: one end must be the worker`);
      return;
    }
    this.peerHello = hello as Hello;
    this.helloArrived();
  }

  private refuseVersion(theirs: Hello): void {
    const ours = this.hello;
    const advice =
      this.side === "client"
        ? `install tbuild ${ours.tbuild} on the host of ${this.peer}, or run tbuild ${theirs.tbuild} here`
        : `install tbuild ${theirs.tbuild} on this host, or run tbuild ${ours.tbuild} on the client`;
    const self = this.side === "client" ? "this tbuild" : "this worker's tbuild";
    this.fail(
      new WorkerVersionError(
        `${this.peer} runs tbuild ${theirs.tbuild} (worker protocol ${theirs.protocol}) and ${self} ${ours.tbuild} speaks protocol ${ours.protocol}: ${advice}`,
      ),
      { tell: true },
    );
  }

  /** A frame for a channel not open here: a new call, or a late frame of a finished one. */
  private frameOfNoOpenChannel(frame: Frame): void {
    const peersChannel = frame.channel % 2 === (this.side === "client" ? 0 : 1);
    if (peersChannel && frame.channel > this.highestPeerId) {
      if (frame.kind !== FrameKind.message) {
        this.violation(`opened channel ${frame.channel} with a ${KIND_NAMES[frame.kind]} frame`);
        return;
      }
      const message = parseJson(frame.payload) as Partial<ChannelMessage> | undefined;
      if (
        message?.type !== "call" ||
        typeof message.method !== "string" ||
        typeof message.stream !== "boolean"
      ) {
        this.violation(`sent a malformed call on channel ${frame.channel}`);
        return;
      }
      this.highestPeerId = frame.channel;
      if (this.incomingCalls >= MAX_INCOMING_CALLS) {
        this.violation(`opened more than ${MAX_INCOMING_CALLS} calls at once`);
        return;
      }
      this.serve(frame.channel, message.method, message.params, message.stream);
      return;
    }
    // Finished here (answered, canceled): frames the far end sent before it knew are dropped.
    if (peersChannel || frame.channel < this.nextId) return;
    this.violation(
      `sent a ${KIND_NAMES[frame.kind]} frame on channel ${frame.channel}, which was never opened`,
    );
  }

  private channelMessage(channel: Channel, frame: Frame): void {
    const message = parseJson(frame.payload) as Partial<ChannelMessage> | undefined;
    if (channel.outgoing && message?.type === "result") {
      this.finishChannel(channel, undefined, (message as { result: unknown }).result);
      return;
    }
    if (channel.outgoing && message?.type === "event") {
      try {
        channel.onEvent?.((message as { event: unknown }).event);
      } catch (err) {
        this.cancel(channel, err as Error);
      }
      return;
    }
    if (!channel.outgoing && message?.type === "cancel") {
      this.finishChannel(
        channel,
        new TbuildError("E_CANCELED", `${this.peer} canceled \`${channel.method}\``),
      );
      return;
    }
    this.violation(`sent an unexpected message on channel ${channel.id}`);
  }

  private receiveData(channel: Channel, payload: Buffer): void {
    if (channel.incomingEnded) {
      this.violation(`sent data after the end of channel ${channel.id}`);
      return;
    }
    if (payload.length > channel.allowance) {
      this.violation(
        `sent ${payload.length} bytes on channel ${channel.id}, more than the ${channel.allowance} its window allows`,
      );
      return;
    }
    channel.allowance -= payload.length;
    if (channel.readerGone) {
      this.grant(channel, payload.length);
      return;
    }
    channel.queue.push(payload);
    channel.queuedBytes += payload.length;
    this.feedReader(channel);
  }

  /** Hands queued data to the channel's reader as it asks, granting the far end what it takes. */
  private feedReader(channel: Channel): void {
    while (channel.readerWants && channel.queue.length > 0) {
      const chunk = channel.queue.shift()!;
      channel.queuedBytes -= chunk.length;
      this.grant(channel, chunk.length);
      channel.readerWants = channel.readable.push(chunk);
    }
    if (channel.queue.length === 0 && channel.incomingEnded && !channel.endPushed && !channel.readerGone) {
      channel.endPushed = true;
      channel.readable.push(null);
    }
  }

  private grant(channel: Channel, bytes: number): void {
    channel.ungranted += bytes;
    // In quarters of the window: fewer frames than one per chunk, and the sender never waits long.
    if (channel.done || channel.incomingEnded || channel.ungranted < this.window / 4) return;
    const payload = Buffer.alloc(4);
    payload.writeUInt32BE(channel.ungranted);
    channel.allowance += channel.ungranted;
    channel.ungranted = 0;
    this.urgent.push({ bytes: encodeFrame(channel.id, FrameKind.window, payload) });
    this.pump();
  }

  private receiveWindow(channel: Channel, payload: Buffer): void {
    if (payload.length !== 4) {
      this.violation(`sent a window frame of ${payload.length} bytes`);
      return;
    }
    channel.credit += payload.readUInt32BE(0);
    channel.wakeSender?.();
  }

  private remoteError(payload: Buffer): Error | undefined {
    const wire = parseJson(payload) as Partial<WireError> | undefined;
    if (
      typeof wire?.message !== "string" ||
      typeof wire.name !== "string" ||
      typeof wire.fields !== "object"
    ) {
      this.violation("sent a malformed error frame");
      return undefined;
    }
    return errorFromWire({
      name: wire.name,
      message: wire.message,
      tbuild: wire.tbuild === true,
      fields: wire.fields ?? {},
    });
  }

  // ---- serving the far end's calls ----

  private serve(id: number, method: string, params: unknown, stream: boolean): void {
    const channel = this.newChannel(id, method, false);
    const controller = new AbortController();
    channel.controller = controller;
    this.channels.set(id, channel);
    this.incomingCalls++;
    if (!stream) {
      channel.incomingEnded = true;
      this.feedReader(channel);
    }
    const handler = Object.hasOwn(this.handlers, method) ? this.handlers[method] : undefined;
    const call: IncomingCall = {
      method,
      signal: controller.signal,
      readable: channel.readable,
      writable: channel.writable,
      notify: (event) => {
        if (!channel.done) {
          this.enqueue(channel, {
            bytes: encodeFrame(id, FrameKind.message, jsonPayload({ type: "event", event })),
          });
        }
      },
      connection: this,
    };
    const answer = async () => {
      if (!handler) {
        throw new TbuildError(
          "E_NOT_SUPPORTED",
          `\`${method}\` is not supported yet by this ${this.side} (tbuild ${this.hello.tbuild}, worker protocol ${this.hello.protocol}); it serves: ${Object.keys(this.handlers).sort().join(", ") || "nothing"}`,
        );
      }
      const result = await handler(params, call);
      if (stream) {
        if (!channel.writable.writableEnded) channel.writable.end();
        await finishedWriting(channel.writable);
      }
      return jsonPayload({ type: "result", result: result ?? null } satisfies ChannelMessage);
    };
    answer().then(
      (payload) => {
        if (channel.done) return;
        this.enqueue(channel, { bytes: encodeFrame(id, FrameKind.message, payload) });
        this.finishChannel(channel);
      },
      (err) => {
        if (channel.done) return;
        // What was queued of its data is dropped: the caller gets the error, not a torn stream.
        this.dropFrames(channel, err);
        this.enqueue(channel, { bytes: encodeFrame(id, FrameKind.error, jsonPayload(errorToWire(err))) });
        this.finishChannel(channel);
      },
    );
  }

  // ---- sending ----

  private async sendData(channel: Channel, chunk: Buffer): Promise<void> {
    for (let offset = 0; offset < chunk.length; ) {
      if (channel.done) throw this.failure ?? new WorkerConnectionError(`\`${channel.method}\` is over`);
      if (channel.credit === 0) {
        await new Promise<void>((resolve) => {
          channel.wakeSender = resolve;
        });
        channel.wakeSender = undefined;
        continue;
      }
      const size = Math.min(chunk.length - offset, channel.credit, DATA_FRAME_BYTES);
      channel.credit -= size;
      await this.enqueueAwaited(
        channel,
        encodeFrame(channel.id, FrameKind.data, chunk.subarray(offset, offset + size)),
      );
      offset += size;
    }
  }

  private enqueueAwaited(channel: Channel, bytes: Buffer): Promise<void> {
    return new Promise((resolve, reject) =>
      this.enqueue(channel, { bytes, written: resolve, dropped: reject }),
    );
  }

  private enqueue(channel: Channel, frame: QueuedFrame): void {
    if (this.failure) {
      frame.dropped?.(this.failure);
      return;
    }
    channel.frames.push(frame);
    if (!channel.inRotation) {
      channel.inRotation = true;
      this.rotation.push(channel);
    }
    this.pump();
  }

  /**
   * Writes queued frames while the stream takes them: the connection's own first, then one frame
   * of each channel in turn, so that a small call goes out after at most one data frame of each
   * stream. Frames wait here, not in the stream's buffer, when the far end reads slowly.
   */
  private pump(): void {
    while (!this.ended) {
      const urgent = this.urgent.shift();
      // The connection's own frames (hello, windows) are small and never wait behind data.
      if (!urgent && this.stream.writableNeedDrain) {
        if (!this.waitingForDrain) {
          this.waitingForDrain = true;
          this.stream.once("drain", () => {
            this.waitingForDrain = false;
            this.pump();
          });
        }
        return;
      }
      const frame = urgent ?? this.nextChannelFrame();
      if (!frame) return;
      this.counters.bytesOut += frame.bytes.length;
      this.stream.write(frame.bytes);
      frame.written?.();
    }
  }

  private nextChannelFrame(): QueuedFrame | undefined {
    for (let channel = this.rotation.shift(); channel; channel = this.rotation.shift()) {
      channel.inRotation = false;
      const frame = channel.frames.shift();
      if (!frame) continue;
      if (channel.frames.length > 0) {
        channel.inRotation = true;
        this.rotation.push(channel);
      }
      return frame;
    }
    return undefined;
  }

  private dropFrames(channel: Channel, err: Error): void {
    for (const frame of channel.frames.splice(0)) frame.dropped?.(err);
  }

  /** The caller gives up: the handler's signal is aborted there, and the call rejects here at once. */
  private cancel(channel: Channel, reason: Error): void {
    if (channel.done) return;
    const announced = channel.announced;
    this.dropFrames(channel, reason);
    this.finishChannel(channel, reason);
    // A call still waiting for its turn is simply never sent.
    if (announced) {
      this.enqueue(channel, {
        bytes: encodeFrame(channel.id, FrameKind.message, jsonPayload({ type: "cancel" })),
      });
    }
  }

  /** The call is over: settles the caller's promise, or aborts the handler's signal, and frees the channel. */
  private finishChannel(channel: Channel, err?: Error, result?: unknown): void {
    if (channel.done) return;
    channel.done = true;
    this.channels.delete(channel.id);
    if (!channel.outgoing) this.incomingCalls--;
    channel.wakeSender?.();
    if (err) {
      channel.reject?.(err);
      channel.controller?.abort(err);
      if (!channel.endPushed) channel.readable.destroy(err);
      channel.writable.destroy(err);
    } else {
      channel.resolve?.(result);
      // Still writing to a call that has answered (or a request, which has no data): nothing more goes.
      if (!channel.writable.writableFinished) channel.writable.destroy();
      // Data that never ended (a request's, a caller's unfinished stream): none will come.
      if (!channel.incomingEnded) channel.readable.destroy();
    }
  }

  // ---- ending ----

  private onEnd(): void {
    if (this.failure) return;
    if (!this.peerHello) {
      this.fail(
        new WorkerConnectionError(
          `${this.peer} ended the connection before the handshake: is tbuild installed there, and does \`tbuild worker --stdio\` start? (its error output says why)`,
        ),
      );
      return;
    }
    this.fail(this.lost("the stream ended"), { clean: true });
  }

  private lost(why: string, cause?: unknown): WorkerConnectionError {
    const pending = [...this.channels.values()].filter((c) => c.outgoing).map((c) => `\`${c.method}\``);
    const during =
      pending.length > 0
        ? ` while ${pending.slice(0, 3).join(", ")}${pending.length > 3 ? ` and ${pending.length - 3} more` : ""} ${pending.length === 1 ? "was" : "were"} pending`
        : "";
    return new WorkerConnectionError(`lost the connection to ${this.peer}${during}: ${why}`, cause);
  }

  private violation(detail: string, firstBytes?: Buffer): void {
    const hint =
      this.side === "client"
        ? `its output begins ${printable(firstBytes ?? EMPTY)} (does a login script print to standard output, or is the command wrong?)`
        : `what it sent begins ${printable(firstBytes ?? EMPTY)} (\`tbuild worker --stdio\` serves tbuild's --worker only)`;
    const message = firstBytes
      ? `${this.peer} does not speak the tbuild worker protocol: ${hint}`
      : `${this.peer} broke the tbuild worker protocol: it ${detail}; the connection is closed`;
    this.fail(new WorkerProtocolError(message), { tell: true });
  }

  /**
   * Ends the connection once: every call open rejects (or has its handler aborted) with `err`,
   * queued frames are dropped, the far end is told why when `tell` (a protocol error, a version
   * mismatch), and the stream is ended, then let go. A `clean` end (the far end's end of stream,
   * close()) is no failure of the connection itself: `closed` settles undefined.
   */
  private fail(err: Error, how: { tell?: boolean; clean?: boolean } = {}): void {
    if (this.failure) return;
    this.failure = err;
    for (const channel of [...this.channels.values()]) {
      this.dropFrames(channel, err);
      this.finishChannel(channel, err);
    }
    this.rotation = [];
    if (how.tell) this.urgent.push({ bytes: encodeFrame(0, FrameKind.error, jsonPayload(errorToWire(err))) });
    this.pump();
    this.ended = true;
    const stream = this.stream;
    if (!stream.destroyed) {
      // Once what was written is out (a far end that stopped reading cannot hold this end up).
      stream.once("finish", () => stream.destroy());
      if (!stream.writableEnded) stream.end();
      else if (stream.writableFinished) stream.destroy();
    }
    this.settleClosed(how.clean ? undefined : err);
  }
}

const EMPTY = Buffer.alloc(0);
/** Stream errors that only say the far end is gone. */
const END_OF_STREAM_CODES = new Set(["ERR_STREAM_PREMATURE_CLOSE", "EPIPE", "ECONNRESET"]);

function encodeFrame(channel: number, kind: FrameKind, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.writeUInt32BE(channel, 4);
  frame[8] = kind;
  payload.copy(frame, HEADER_BYTES);
  return frame;
}

/** A message's bytes; refused when it would not fit in a frame (large things go as data). */
function jsonPayload(message: unknown): Buffer {
  const payload = Buffer.from(JSON.stringify(message), "utf8");
  if (payload.length > MAX_FRAME_BYTES) {
    throw new WorkerProtocolError(
      `a message of ${payload.length} bytes is over the worker protocol's frame limit of ${MAX_FRAME_BYTES}: send large values as a stream`,
    );
  }
  return payload;
}

function parseJson(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString("utf8"));
  } catch {
    return undefined;
  }
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) > 0 && (value as number) <= 0xffffffff;
}

function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error
    ? signal.reason
    : new TbuildError("E_CANCELED", "the call was canceled");
}

/** Bytes as a quoted, capped line: a banner shows as text, binary as escapes. */
function printable(bytes: Buffer): string {
  return capLine(JSON.stringify(bytes.subarray(0, 200).toString("latin1")), 240);
}

function finishedWriting(writable: Writable): Promise<void> {
  if (writable.writableFinished) return Promise.resolve();
  return new Promise((resolve, reject) => {
    writable.once("finish", resolve);
    writable.once("close", () =>
      writable.writableFinished ? resolve() : reject(writable.errored ?? new Error("closed")),
    );
  });
}

interface Frame {
  channel: number;
  kind: FrameKind;
  payload: Buffer;
}

/** A frame that breaks the rules; `firstBytes` when the stream never began as the protocol. */
class FrameError extends Error {
  readonly detail: string;
  readonly firstBytes: Buffer | undefined;

  constructor(detail: string, firstBytes?: Buffer) {
    super(detail);
    this.detail = detail;
    this.firstBytes = firstBytes;
  }
}

/**
 * Cuts the incoming bytes into frames. A header is checked before its payload is waited for, so an
 * announced 4 GiB frame is refused at once: nothing is ever buffered beyond one frame's limit.
 */
class FrameReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private magicSeen = false;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  next(): Frame | undefined {
    if (!this.magicSeen) {
      const head = this.peek(Math.min(this.length, MAGIC.length));
      if (!MAGIC.subarray(0, head.length).equals(head))
        throw new FrameError("bad magic", this.peek(this.length));
      if (this.length < MAGIC.length) return undefined;
      this.take(MAGIC.length);
      this.magicSeen = true;
    }
    if (this.length < HEADER_BYTES) return undefined;
    const header = this.peek(HEADER_BYTES);
    const length = header.readUInt32BE(0);
    const channel = header.readUInt32BE(4);
    const kind = header[8]!;
    if (!(kind in KIND_NAMES)) throw new FrameError(`sent a frame of unknown kind ${kind}`);
    if (length > MAX_FRAME_BYTES) {
      throw new FrameError(`announced a frame of ${length} bytes, over the limit of ${MAX_FRAME_BYTES}`);
    }
    if (this.length < HEADER_BYTES + length) return undefined;
    this.take(HEADER_BYTES);
    return { channel, kind: kind as FrameKind, payload: this.take(length) };
  }

  private peek(size: number): Buffer {
    const first = this.chunks[0];
    if (first && first.length >= size) return first.subarray(0, size);
    return Buffer.concat(this.chunks, this.length).subarray(0, size);
  }

  private take(size: number): Buffer {
    if (size === 0) return EMPTY;
    const first = this.chunks[0]!;
    if (first.length > size) {
      this.chunks[0] = first.subarray(size);
      this.length -= size;
      return first.subarray(0, size);
    }
    if (first.length === size) {
      this.chunks.shift();
      this.length -= size;
      return first;
    }
    const all = Buffer.concat(this.chunks, this.length);
    this.chunks = all.length > size ? [all.subarray(size)] : [];
    this.length -= size;
    return all.subarray(0, size);
  }
}
