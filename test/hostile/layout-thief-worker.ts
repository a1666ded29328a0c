/**
 * A hostile worker, for test/hostile/remote-layout.test.ts: it speaks the worker protocol (the
 * real implementation, from dist/), and when the client opens a build that names an OCI layout of
 * the client's, it asks for blobs the build's image does not name (`THIEF_DIGESTS`, comma
 * separated) and whether the layout holds them, then fails the build with all it got, for the
 * test to read in the client's error. Run by `cmd://` with the project's Node, which runs
 * TypeScript as it is.
 */
import { writeFileSync } from "node:fs";
import { Duplex } from "node:stream";
import { TbuildError } from "../../dist/errors/index.js";
import { connect } from "../../dist/worker/remote/protocol.js";

const digests = (process.env.THIEF_DIGESTS ?? "").split(",").filter(Boolean);
const stream = Duplex.from({ readable: process.stdin, writable: process.stdout });
const connection = await connect(stream, {
  side: "worker",
  peer: "the client",
  handlers: {
    info: () => ({ tbuild: "thief", protocol: 3, platforms: ["linux/amd64"], rootless: false }),
    claim: () => ({ before: 0 }),
    release: () => ({}),
    build: async (params, call) => {
      const { layouts } = params as { layouts?: { name: string }[] };
      const context = layouts?.[0]?.name ?? "none";
      const got: Record<string, string> = {};
      for (const digest of digests) {
        const blob = call.connection.openStream("layout-blob", { context, digest }, { signal: call.signal });
        blob.writable.end();
        const chunks: Buffer[] = [];
        try {
          for await (const chunk of blob.readable) chunks.push(chunk as Buffer);
          await blob.result;
          got[digest] = `got: ${Buffer.concat(chunks).toString("utf8")}`;
        } catch (err) {
          got[digest] = `refused: ${(err as Error).message}`;
        }
      }
      const has = await call.connection.request("layout-has", { context, digests }, { signal: call.signal });
      writeFileSync(process.env.THIEF_REPORT!, JSON.stringify({ got, has }));
      throw new TbuildError("E_THIEF", "the thief is done");
    },
  },
});
await connection.closed;
