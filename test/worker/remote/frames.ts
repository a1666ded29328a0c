/**
 * The worker protocol's bytes, written out here from docs/worker-protocol.md rather than taken
 * from the implementation: what the tests send as a raw (or hostile) far end, and read back.
 */

/** The first four bytes of each direction. */
export const MAGIC = Buffer.from("TBWP", "latin1");

/**
 * One frame: payload length (u32 BE), channel (u32 BE), kind (u8: 1 message, 2 data, 3 end,
 * 4 error, 5 window), then the payload; `announced` overrides the length field.
 */
export function frame(channel: number, kind: number, payload: Buffer, announced = payload.length): Buffer {
  const header = Buffer.alloc(9);
  header.writeUInt32BE(announced, 0);
  header.writeUInt32BE(channel, 4);
  header[8] = kind;
  return Buffer.concat([header, payload]);
}

export function messageFrame(channel: number, message: unknown): Buffer {
  return frame(channel, 1, Buffer.from(JSON.stringify(message)));
}

/** A hello of this protocol (3), on channel 0. */
export function hello(side: "client" | "worker", extra: Record<string, unknown> = {}): Buffer {
  return messageFrame(0, {
    type: "hello",
    protocol: 3,
    tbuild: "0.0.0-test",
    side,
    window: 1048576,
    ...extra,
  });
}

export interface DecodedFrame {
  channel: number;
  kind: number;
  payload: Buffer;
}

/** The frames of one direction's bytes (after its magic); a torn last frame is left out. */
export function decodeFrames(bytes: Buffer): DecodedFrame[] {
  if (!bytes.subarray(0, 4).equals(MAGIC))
    throw new Error(`no magic: ${JSON.stringify(bytes.subarray(0, 40).toString())}`);
  const frames: DecodedFrame[] = [];
  let offset = 4;
  while (offset + 9 <= bytes.length) {
    const length = bytes.readUInt32BE(offset);
    if (offset + 9 + length > bytes.length) break;
    frames.push({
      channel: bytes.readUInt32BE(offset + 4),
      kind: bytes[offset + 8]!,
      payload: bytes.subarray(offset + 9, offset + 9 + length),
    });
    offset += 9 + length;
  }
  return frames;
}
