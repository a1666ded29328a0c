/**
 * A hostile worker against the client's type=local cache directories (`--cache-from
 * type=local,src=DIR`, `--cache-to type=local,dest=DIR` with `--worker`): the worker reaches them
 * only through calls the client serves (build/remote-cache.ts), and a worker is whatever answers
 * at the other end of an SSH login or a `cmd://` command. Asking for a directory the build does
 * not name, a blob its caches do not name, a path dressed as a digest, or sending a blob that is
 * not what its digest says must each be refused with one line, with nothing read or written
 * outside what the user's flags name; the canary is untouched and the client's store usable.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../helpers/cli.js";
import { hostileWorld, MODES, type Mode } from "./harness.js";

const world = hostileWorld();

/** Every file under `dir` (directories left out), with its bytes' digest. */
function filesUnder(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    out[path.relative(dir, full)] = createHash("sha256").update(readFileSync(full)).digest("hex");
  }
  return out;
}

/**
 * A worker that speaks the protocol and, asked to build, tries each attack on the client's cache
 * calls in turn, writing down how the client answered each (`outcomes.json`), then fails the
 * build. Through `cmd://`, what any configured command can start.
 */
function attackingWorker(
  mode: Mode,
  targets: { canary: string; imported: string; layer: string },
): {
  url: string;
  outcomes: () => Record<string, { ok: boolean; message?: string }>;
} {
  const dir = world.dir("attacker", mode);
  const dist = (file: string) => JSON.stringify(pathToFileURL(path.join(projectRoot, "dist", file)).href);
  const script = path.join(dir, "attacker.mjs");
  writeFileSync(
    script,
    `import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { Duplex } from "node:stream";
import { connect } from ${dist("worker/remote/protocol.js")};
import { TbuildError } from ${dist("errors/index.js")};
const targets = ${JSON.stringify(targets)};
const prefix = (n) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(n)); return b; };
const outcomes = {};
async function attempt(name, run) {
  try {
    await run();
    outcomes[name] = { ok: true };
  } catch (err) {
    outcomes[name] = { ok: false, message: err.message };
  }
}
async function stream(connection, method, params, data = []) {
  const call = connection.openStream(method, params);
  for (const chunk of data) call.writable.write(chunk);
  call.writable.end();
  const chunks = [];
  const reading = (async () => { for await (const c of call.readable) chunks.push(c); })().catch(() => {});
  await call.result;
  await reading;
  return Buffer.concat(chunks);
}
/** A cache description of one layer, as it travels, and the bytes announced for it. */
function export_(connection, digest, size, sent) {
  const description = Buffer.from(JSON.stringify({
    stacks: [{ layer: { descriptor: { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest, size }, diffId: digest } }],
    records: [{ key: "k", name: "n", material: {}, stack: 0 }],
  }));
  return stream(connection, "cache-to-dir", { blobs: [{ digest, size }] }, [
    prefix(description.length), description, prefix(sent.length), sent,
  ]);
}
const stream0 = Duplex.from({ readable: process.stdin, writable: process.stdout });
const connection = await connect(stream0, {
  side: "worker",
  peer: "the client",
  handlers: {
    info: () => ({ tbuild: "0.1.0", protocol: 3, platforms: ["linux/amd64"], rootless: false, store: "", runningBuilds: 0, cacheSize: 0 }),
    claim: () => ({ before: 0 }),
    release: () => ({}),
    build: async (_params, call) => {
      const c = call.connection;
      await attempt("read the imported cache (named)", () => stream(c, "cache-dir-read", { src: targets.imported }));
      await attempt("read a directory the build does not name", () => stream(c, "cache-dir-read", { src: targets.canary }));
      await attempt("a blob the imported cache names", () => stream(c, "cache-dir-blob", { src: targets.imported, digest: targets.layer }));
      await attempt("a path as a digest", () => stream(c, "cache-dir-blob", { src: targets.imported, digest: "sha256:../../../../" + targets.canary }));
      await attempt("a blob of a directory the build does not name", () => stream(c, "cache-dir-blob", { src: targets.canary, digest: targets.layer }));
      await attempt("lacks, with a path as a digest", () => c.request("cache-dir-lacks", { digests: ["sha256:../../secret"] }));
      const good = Buffer.from("the real bytes");
      const digest = "sha256:" + createHash("sha256").update(good).digest("hex");
      await attempt("a blob whose bytes are not its digest's", () => export_(c, digest, good.length, Buffer.from("other bytes!!!")));
      await attempt("a path as a blob's digest", () => export_(c, "sha256:../../" + "a".repeat(60), 4, Buffer.from("evil")));
      await attempt("a blob the description does not name", () => stream(c, "cache-to-dir", { blobs: [{ digest: targets.layer, size: 1 }] }, [prefix(2), Buffer.from("{}"), prefix(1), Buffer.from("x")]));
      writeFileSync(${JSON.stringify(path.join(dir, "outcomes.json"))}, JSON.stringify(outcomes));
      throw new TbuildError("E_ATTACK_DONE", "the attacking worker is done");
    },
  },
});
await connection.closed;
`,
    { mode: 0o644 },
  );
  return {
    // The checkout's Node, which the rootless user can reach.
    url: `cmd://${path.join(projectRoot, "node_modules/node/bin/node")} ${script}`,
    outcomes: () => JSON.parse(readFileSync(path.join(dir, "outcomes.json"), "utf8")),
  };
}

describe.each(MODES)("a worker attacking the client's cache directories (%s)", (mode) => {
  it("reads and writes only what the user's flags name: every other ask is refused with one line, and a wrong blob is never written", () => {
    const store = world.store(mode);
    const canary = world.canary(mode);
    // A real cache of the user's, made by a local build, to import; and an empty directory to export to.
    const imported = world.dir("imported-cache", mode);
    const ctx = world.context({ Dockerfile: "FROM busybox\nRUN echo cached > /cached\n" });
    const made = world.tbuild(mode, store, ["build", "-q", "--cache-to", `type=local,dest=${imported}`, ctx]);
    expect(made.status, made.stderr).toBe(0);
    const index = JSON.parse(readFileSync(path.join(imported, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    const manifest = JSON.parse(
      readFileSync(path.join(imported, "blobs", ...index.manifests[0]!.digest.split(":")), "utf8"),
    ) as { layers: { digest: string }[] };
    const layer = manifest.layers.at(-1)!.digest;
    const importedBefore = filesUnder(imported);
    const exportDir = world.dir("export-cache", mode);

    const attacker = attackingWorker(mode, { canary: canary.dir, imported, layer });
    const built = world.tbuild(mode, store, [
      "build",
      "--progress=plain",
      "--worker",
      attacker.url,
      "--cache-from",
      `type=local,src=${imported}`,
      "--cache-to",
      `type=local,dest=${exportDir}`,
      ctx,
    ]);
    expect(built.status, built.stderr).toBe(1);
    expect(built.stderr).toContain("ERROR: the attacking worker is done\n");
    expect(built.stderr).not.toContain("    at ");

    const outcomes = attacker.outcomes();
    // What the flags name is served (so the refusals below are the client's choice, not a broken call).
    expect(outcomes["read the imported cache (named)"]).toEqual({ ok: true });
    expect(outcomes["a blob the imported cache names"]).toEqual({ ok: true });
    const refusals: Record<string, string> = {
      "read a directory the build does not name":
        "the worker asked for a cache directory this build does not name",
      "a path as a digest": "that no cache this build imports names",
      "a blob of a directory the build does not name": "that no cache this build imports names",
      "lacks, with a path as a digest": "is not valid",
      "a blob whose bytes are not its digest's": "does not match its digest and size",
      "a path as a blob's digest": "is not valid",
      "a blob the description does not name": "the worker sent a blob",
    };
    for (const [attack, words] of Object.entries(refusals)) {
      const outcome = outcomes[attack];
      expect(outcome?.ok, attack).toBe(false);
      expect(outcome?.message, attack).toContain(words);
      expect(outcome?.message?.split("\n"), attack).toHaveLength(1);
    }
    // Nothing was written for the export (no blob under any name), the import is as it was.
    expect(filesUnder(exportDir)).toEqual({});
    expect(filesUnder(imported)).toEqual(importedBefore);
    canary.expectUntouched(built.stderr, JSON.stringify(outcomes));
    world.expectStoreUsable(mode, store);
  });
});
