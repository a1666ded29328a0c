import { execFile } from "node:child_process";
import { readdirSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import {
  BlobNotFoundError,
  ContentStore,
  DigestMismatchError,
  digestOf,
  InvalidDigestError,
} from "../../../oci/store/content.js";
import { projectRoot } from "../../helpers/cli.js";
import { tempDirs } from "../../helpers/temp.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

const run = promisify(execFile);

function tempStore(): ContentStore {
  return new ContentStore(tempDir("content"));
}

/** Every file under the store's blobs/ and ingest/, relative to its root. */
function filesIn(store: ContentStore): string[] {
  const out: string[] = [];
  for (const dir of ["blobs", "ingest"]) {
    try {
      for (const entry of readdirSync(path.join(store.root, dir), { recursive: true, withFileTypes: true })) {
        if (entry.isFile()) out.push(path.relative(store.root, path.join(entry.parentPath, entry.name)));
      }
    } catch {
      // A directory not created yet holds no files.
    }
  }
  return out.sort();
}

async function* chunksOf(data: Buffer, chunkSize: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += chunkSize) yield data.subarray(i, i + chunkSize);
}

/** The compiled store, for child processes (the tests run after `npm run build`). */
const distContent = path.join(projectRoot, "dist/oci/store/content.js");

describe("ContentStore", () => {
  it("streams a blob into blobs/<alg>/<hex> and reads it back", async () => {
    const store = tempStore();
    const data = Buffer.alloc(3 * 1024 * 1024 + 17, "layer bytes ");
    const digest = digestOf(data);
    const written = await store.write(chunksOf(data, 65536), { digest, size: data.length });
    expect(written).toEqual({ digest, size: data.length });
    expect(store.blobPath(digest)).toBe(path.join(store.root, "blobs", "sha256", digest.slice(7)));
    expect(await store.has(digest)).toBe(true);
    expect(await store.size(digest)).toBe(data.length);
    const read: Buffer[] = [];
    for await (const chunk of store.open(digest)) read.push(chunk as Buffer);
    expect(Buffer.concat(read).equals(data)).toBe(true);
    expect(filesIn(store)).toEqual([`blobs/sha256/${digest.slice(7)}`]);
  });

  it("computes the digest when none is expected, and writeBytes stores small blobs", async () => {
    const store = tempStore();
    const written = await store.write(chunksOf(Buffer.from("hello"), 2));
    expect(written).toEqual({ digest: digestOf("hello"), size: 5 });
    const config = Buffer.from('{"a":1}');
    const again = await store.writeBytes(config, { digest: digestOf(config), size: config.length });
    expect((await store.readBytes(again.digest)).toString()).toBe('{"a":1}');
    expect(await store.readJson(again.digest)).toEqual({ a: 1 });
  });

  it("refuses bytes that do not match the expected digest, naming both, and stores nothing", async () => {
    const store = tempStore();
    const expected = digestOf("the real thing");
    const actual = digestOf("a forgery");
    const error = await store
      .write(chunksOf(Buffer.from("a forgery"), 4), { digest: expected })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DigestMismatchError);
    expect((error as DigestMismatchError).code).toBe("E_DIGEST_MISMATCH");
    expect((error as Error).message).toContain(expected);
    expect((error as Error).message).toContain(actual);
    expect(await store.has(expected)).toBe(false);
    expect(await store.has(actual)).toBe(false);
    expect(filesIn(store)).toEqual([]);
    await expect(store.writeBytes(Buffer.from("a forgery"), { digest: expected })).rejects.toThrow(
      DigestMismatchError,
    );
    expect(filesIn(store)).toEqual([]);
  });

  it("refuses a blob shorter or longer than the expected size, and stores nothing", async () => {
    const store = tempStore();
    const data = Buffer.from("0123456789");
    await expect(store.write(chunksOf(data, 3), { digest: digestOf(data), size: 11 })).rejects.toThrow(
      /expected sha256:[0-9a-f]{64} \(11 bytes\), got sha256:[0-9a-f]{64} \(10 bytes\)/,
    );
    await expect(store.write(chunksOf(data, 3), { size: 4 })).rejects.toThrow(
      /expected 4 bytes, got more than 4 bytes/,
    );
    expect(filesIn(store)).toEqual([]);
  });

  it("stops on abort, leaving neither the blob nor a temp file", async () => {
    const store = tempStore();
    const controller = new AbortController();
    let sent = 0;
    async function* endless(): AsyncGenerator<Buffer> {
      for (;;) {
        yield Buffer.alloc(65536, 1);
        sent++;
        if (sent === 5) controller.abort(new Error("user interrupted"));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
    await expect(store.write(endless(), {}, controller.signal)).rejects.toThrow();
    expect(filesIn(store)).toEqual([]);
  });

  it("lets several processes write one blob at once: all succeed and one copy is stored", async () => {
    const store = tempStore();
    const data = Buffer.alloc(2 * 1024 * 1024, "concurrent ");
    const source = path.join(tempDir("content-source"), "source");
    writeFileSync(source, data);
    const script = `
      import { createReadStream } from "node:fs";
      import { ContentStore } from ${JSON.stringify(distContent)};
      const store = new ContentStore(process.argv[1]);
      // Small chunks keep every writer in flight at the same time.
      const written = await store.write(createReadStream(process.argv[2], { highWaterMark: 16384 }), { digest: process.argv[3] });
      process.stdout.write(JSON.stringify(written));
    `;
    const digest = digestOf(data);
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        run(process.execPath, ["--input-type=module", "-e", script, store.root, source, digest]),
      ),
    );
    for (const { stdout } of results) expect(JSON.parse(stdout)).toEqual({ digest, size: data.length });
    expect(filesIn(store)).toEqual([`blobs/sha256/${digest.slice(7)}`]);
    expect((await readFile(store.blobPath(digest))).equals(data)).toBe(true);
  });

  it("on a full disk says so and leaves nothing visible (a real 512 KiB tmpfs)", async () => {
    const root = tempDir("full");
    const script = `
      import { readdirSync } from "node:fs";
      import { ContentStore } from ${JSON.stringify(distContent)};
      const store = new ContentStore(process.argv[1]);
      async function* big() { for (let i = 0; i < 64; i++) yield Buffer.alloc(65536, i); }
      let error;
      try { await store.write(big()); } catch (e) { error = { code: e.code, message: e.message }; }
      const files = readdirSync(process.argv[1], { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile()).map((e) => e.name);
      process.stdout.write(JSON.stringify({ error, files }));
    `;
    // A private mount namespace: the tmpfs vanishes with the child, whatever happens.
    const { stdout } = await run("unshare", [
      "-m",
      "sh",
      "-c",
      'mount -t tmpfs -o size=512k tmpfs "$1" && exec "$2" --input-type=module -e "$3" "$1"',
      "sh",
      root,
      process.execPath,
      script,
    ]);
    const result = JSON.parse(stdout) as { error?: { code: string; message: string }; files: string[] };
    expect(result.error?.code).toBe("E_DISK_FULL");
    expect(result.error?.message).toContain("no space left");
    expect(result.files).toEqual([]);
  });

  it("rejects digests that are not <alg>:<hex>, so no path can escape the store", () => {
    const store = tempStore();
    for (const bad of ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC", "nope"]) {
      expect(() => store.blobPath(bad)).toThrow(InvalidDigestError);
    }
  });

  it("names a missing blob", async () => {
    const store = tempStore();
    const missing = digestOf("missing");
    await expect(store.readBytes(missing)).rejects.toThrow(BlobNotFoundError);
    expect(await store.size(missing)).toBeUndefined();
    const read = async () => {
      for await (const _ of store.open(missing)) {
        // draining
      }
    };
    await expect(read()).rejects.toThrow(`blob ${missing} is not in the store`);
  });

  it("cleans ingest files whose writer is gone", async () => {
    const store = tempStore();
    await store.writeBytes(Buffer.from("x"));
    const dead = (await run(process.execPath, ["-e", "process.stdout.write(String(process.pid))"])).stdout;
    writeFileSync(path.join(store.ingestDir, `${dead}-0123456789abcdef`), "partial");
    writeFileSync(path.join(store.ingestDir, `${process.pid}-0123456789abcdef`), "in flight");
    expect(await store.cleanIngest()).toBe(1);
    expect(readdirSync(store.ingestDir)).toEqual([`${process.pid}-0123456789abcdef`]);
  });
});
