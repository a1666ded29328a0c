/**
 * Reading a call's data stream piece by piece: a length-prefixed part, a stream of frames, or the
 * rest as a stream (the worker protocol carries one byte stream each way per call; a remote build
 * puts its contexts' listings and files on it one way, and its outputs the other).
 */
import { TbuildError } from "../../errors/index.js";

export class ByteTaker {
  private buffered: Buffer = Buffer.alloc(0);
  private readonly chunks: AsyncIterator<Uint8Array>;
  private done = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.chunks = source[Symbol.asyncIterator]();
  }

  /** Exactly `n` bytes; fewer only when the stream ends first (`what` names it in the error). */
  async take(n: number, what: string): Promise<Buffer> {
    while (this.buffered.length < n && !this.done) {
      const next = await this.chunks.next();
      if (next.done) this.done = true;
      else this.buffered = Buffer.concat([this.buffered, Buffer.from(next.value)]);
    }
    if (this.buffered.length < n) {
      throw new TbuildError("E_WORKER_PROTOCOL", `${what} ended after ${this.buffered.length} of ${n} bytes`);
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  /** A part written by `lengthPrefixed`: its length, then its bytes. */
  async part(what: string, limit: number): Promise<Buffer> {
    const length = Number((await this.take(8, what)).readBigUInt64BE());
    if (length > limit)
      throw new TbuildError("E_WORKER_PROTOCOL", `${what} is ${length} bytes, more than ${limit}`);
    return this.take(length, what);
  }

  /** The next `length` bytes as a stream of chunks (a large part, read as it comes). */
  async *stream(length: number, what: string): AsyncGenerator<Buffer> {
    let left = length;
    while (left > 0) {
      if (this.buffered.length === 0) {
        const next = await this.chunks.next();
        if (next.done) throw new TbuildError("E_WORKER_PROTOCOL", `${what} ended ${left} bytes short`);
        this.buffered = Buffer.from(next.value);
      }
      const piece = this.buffered.subarray(0, left);
      this.buffered = this.buffered.subarray(piece.length);
      left -= piece.length;
      yield piece;
    }
  }

  /**
   * A part written by `framed`, as it comes: each frame's bytes, up to the empty frame that ends
   * it. A frame over `limit` bytes is refused.
   */
  async *frames(what: string, limit: number): AsyncGenerator<Buffer> {
    for (;;) {
      const length = (await this.take(4, what)).readUInt32BE();
      if (length === 0) return;
      if (length > limit)
        throw new TbuildError(
          "E_WORKER_PROTOCOL",
          `a frame of ${what} is ${length} bytes, more than ${limit}`,
        );
      yield* this.stream(length, what);
    }
  }

  /** Whatever is left, to the stream's end. */
  async *rest(): AsyncGenerator<Buffer> {
    if (this.buffered.length > 0) yield this.buffered;
    this.buffered = Buffer.alloc(0);
    for (;;) {
      const next = await this.chunks.next();
      if (next.done) return;
      yield Buffer.from(next.value);
    }
  }
}

/** The 8-byte length that starts a part. */
export function lengthPrefix(length: number): Buffer {
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64BE(BigInt(length));
  return prefix;
}

/**
 * A stream of unknown length as a part of a call's data: frames of a 4-byte length and that many
 * bytes (at most 4 GiB - 1 each, split as needed), then an empty frame. `ByteTaker.frames` reads it.
 */
export async function* framed(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  const MAX_FRAME = 0xffff_ffff;
  for await (const chunk of source) {
    for (let at = 0; at < chunk.length; at += MAX_FRAME) {
      const piece = Buffer.from(chunk.buffer, chunk.byteOffset + at, Math.min(MAX_FRAME, chunk.length - at));
      const header = Buffer.alloc(4);
      header.writeUInt32BE(piece.length);
      yield header;
      yield piece;
    }
  }
  yield Buffer.alloc(4);
}
