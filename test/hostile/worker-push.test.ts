/**
 * A build call's `pushByDigest` (one platform's image of a build of several, pushed by the worker)
 * comes from whoever reaches `tbuild worker --stdio`. An export there is the worker's to run on its
 * host, so only image outputs that name where they go are taken: anything else (a `type=local`
 * pointed at a directory of the host, no list, no names) is refused with one line before the
 * context is even read, nothing is written there, and the store stays usable.
 */
import { describe, expect, it } from "vitest";
import { connect } from "../../worker/remote/protocol.js";
import { spawnWorker } from "../worker/remote/worker-process.js";
import { hostileWorld, MODES, tbuildCommandLine } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("a hostile client asking a worker to push by digest (%s)", (mode) => {
  it("an output that is no named image is refused with one line; nothing is written, the store stays usable", async () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    const worker = spawnWorker(tbuildCommandLine(mode, store, ["worker", "--stdio"]));
    const client = await connect(worker.stream, { side: "client", peer: "worker w" });
    const refused = async (pushByDigest: unknown) => {
      const call = client.openStream("build", {
        contextKey: "ab".repeat(16),
        dockerfile: { name: "Dockerfile", source: Buffer.from("FROM scratch\n").toString("base64") },
        ignore: [],
        request: {},
        fileOutputs: [],
        imageNames: [],
        pushByDigest,
        secretIds: [],
        sshIds: [],
      });
      call.writable.end();
      return ((await call.result.catch((err: Error) => err)) as Error).message;
    };
    const noNames = "a build call asks to push by digest an image output without names";
    expect(await refused([{ type: "local", names: ["x"], dest: canary.dir }])).toContain(noNames);
    expect(await refused([{ type: "image", names: [] }])).toContain(noNames);
    expect(await refused([{ type: "image", names: [7] }])).toContain(noNames);
    expect(await refused({ type: "image", names: ["x"] })).toContain(
      "a build call's pushByDigest is no list",
    );
    client.close();
    expect(await worker.ended).toEqual({ code: 0, signal: null });
    expect(worker.stderr()).toBe("");
    canary.expectUntouched(worker.stderr());
    world.expectStoreUsable(mode, store);
  });
});
