import { execFile, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { InvalidReferenceError } from "../../../oci/reference.js";
import { type Descriptor, type ImageConfig, type Manifest, MediaType } from "../../../oci/spec.js";
import {
  defaultStoreRoot,
  digestOf,
  ImageNotFoundError,
  MissingContentError,
  openStore,
  type Store,
} from "../../../oci/store/index.js";
import { projectRoot } from "../../helpers/cli.js";
import { schemaErrors } from "../../helpers/oci-schema.js";
import { tempDirs } from "../../helpers/temp.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

const run = promisify(execFile);

async function tempStore(): Promise<Store> {
  return openStore(tempDir("images"));
}

/** A small but complete image: one layer (any bytes do for the store), a config, a manifest. */
async function storeImage(store: Store, seed: string): Promise<Descriptor> {
  const layer = await store.content.writeBytes(Buffer.from(`layer ${seed}`));
  const config: ImageConfig = {
    architecture: "amd64",
    os: "linux",
    config: { Env: [`SEED=${seed}`] },
    rootfs: { type: "layers", diff_ids: [layer.digest] },
  };
  const configBlob = await store.content.writeBytes(Buffer.from(JSON.stringify(config)));
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, ...configBlob },
    layers: [{ mediaType: MediaType.ociLayer, ...layer }],
  };
  const manifestBlob = await store.content.writeBytes(Buffer.from(JSON.stringify(manifest)));
  return { mediaType: MediaType.ociManifest, ...manifestBlob };
}

describe("openStore", () => {
  it("makes an OCI image layout on first use, valid against the image-spec schemas", async () => {
    const store = await tempStore();
    const layout = readFileSync(path.join(store.root, "oci-layout"));
    const index = readFileSync(path.join(store.root, "index.json"));
    expect(schemaErrors("layout", layout)).toEqual([]);
    expect(schemaErrors("index", index)).toEqual([]);
    expect(existsSync(path.join(store.root, "blobs/sha256"))).toBe(true);
    // Opening again keeps what is there.
    await store.images.put("busybox", await storeImage(store, "a"));
    const again = await openStore(store.root);
    expect((await again.images.list()).map((r) => r.name)).toEqual(["docker.io/library/busybox:latest"]);
  });

  it("finds its root from TBUILD_ROOT, then XDG_DATA_HOME, then HOME", () => {
    expect(defaultStoreRoot({ TBUILD_ROOT: "/r", XDG_DATA_HOME: "/x", HOME: "/h" })).toBe("/r");
    expect(defaultStoreRoot({ XDG_DATA_HOME: "/x", HOME: "/h" })).toBe("/x/tbuild");
    expect(defaultStoreRoot({ HOME: "/h" })).toBe("/h/.local/share/tbuild");
  });

  it("says what to do when the root cannot be used", async () => {
    const file = path.join(tempDir("bad"), "a-file");
    await (await import("node:fs/promises")).writeFile(file, "x");
    await expect(openStore(path.join(file, "store"))).rejects.toThrow(
      /set TBUILD_ROOT to a directory you can write/,
    );
  });
});

describe("ImageStore", () => {
  it("names images by their full normalized reference, in index.json", async () => {
    const store = await tempStore();
    const a = await storeImage(store, "a");
    await store.images.put("busybox", a);
    await store.images.put("localhost:5000/team/app:1.0", a);
    expect(await store.images.list()).toEqual([
      { name: "docker.io/library/busybox:latest", descriptor: a },
      { name: "localhost:5000/team/app:1.0", descriptor: a },
    ]);
    expect(await store.images.get("docker.io/library/busybox:latest")).toEqual({
      name: "docker.io/library/busybox:latest",
      descriptor: a,
    });
    expect(await store.images.get("busybox:1")).toBeUndefined();
    expect(await store.images.get(`busybox@${a.digest}`)).toEqual({
      name: `docker.io/library/busybox@${a.digest}`,
      descriptor: a,
    });
    const index = JSON.parse(readFileSync(store.images.indexPath, "utf8"));
    expect(schemaErrors("index", index)).toEqual([]);
    expect(index.manifests[0].annotations["org.opencontainers.image.ref.name"]).toBe(
      "docker.io/library/busybox:latest",
    );
  });

  it("moves a name to the new image and removes names", async () => {
    const store = await tempStore();
    const a = await storeImage(store, "a");
    const b = await storeImage(store, "b");
    await store.images.put("app", a);
    await store.images.put("app", b);
    expect(await store.images.list()).toEqual([{ name: "docker.io/library/app:latest", descriptor: b }]);
    expect(await store.images.remove("app")).toBe(true);
    expect(await store.images.remove("app")).toBe(false);
    expect(await store.images.list()).toEqual([]);
  });

  it("refuses invalid names and names for content it does not hold", async () => {
    const store = await tempStore();
    const a = await storeImage(store, "a");
    await expect(store.images.put("Not/Valid", a)).rejects.toThrow(InvalidReferenceError);
    await expect(store.images.get("UPPER")).rejects.toThrow(InvalidReferenceError);
    const missing = { mediaType: MediaType.ociManifest, digest: digestOf("nothing"), size: 7 };
    await expect(store.images.put("x", missing)).rejects.toThrow(MissingContentError);
    expect(await store.images.list()).toEqual([]);
    expect(new ImageNotFoundError("docker.io/library/x:latest").message).toBe(
      "image docker.io/library/x:latest is not in the local store: run 'tbuild images' to list the images there, or 'tbuild pull docker.io/library/x:latest' to fetch it",
    );
  });

  it("collects the blobs no name reaches, and only those", async () => {
    const store = await tempStore();
    const a = await storeImage(store, "a");
    const b = await storeImage(store, "b");
    await store.images.put("a", a);
    await store.images.put("b", b);
    const stray = await store.content.writeBytes(Buffer.from("stray"));
    expect(await store.images.collectGarbage()).toEqual({ removed: 1, bytes: stray.size });
    await store.images.remove("b");
    const freed = await store.images.collectGarbage();
    expect(freed.removed).toBe(3);
    expect(await store.content.has(a.digest)).toBe(true);
    expect(await store.content.has(b.digest)).toBe(false);
    const left: string[] = [];
    for await (const blob of store.content.list()) left.push(blob.digest);
    expect(left).toHaveLength(3);
  });

  it("leaves alone the blobs another live process has written but not yet named", async () => {
    const store = await tempStore();
    const script = `
      import { ContentStore } from ${JSON.stringify(path.join(projectRoot, "dist/oci/store/content.js"))};
      const store = new ContentStore(process.argv[1]);
      await store.writeBytes(Buffer.from("a pull in progress"));
      process.stdout.write("written\\n");
      process.stdin.resume();
      process.stdin.on("end", () => process.exit(0));
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script, store.root], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    const digest = digestOf("a pull in progress");
    expect(await store.images.collectGarbage()).toEqual({ removed: 0, bytes: 0 });
    expect(await store.content.has(digest)).toBe(true);
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.stdin.end();
    await exited;
    expect(await store.images.collectGarbage()).toEqual({ removed: 1, bytes: 18 });
  });

  it("takes over at once a lock whose recorded holder is gone, however fresh the lock looks", async () => {
    const store = await tempStore();
    // A tbuild killed while holding the lock: its directory (refreshed a moment ago, as far as its
    // mtime tells; an hour ahead here, so that only the owner record can free it) and that record.
    const lock = `${store.images.indexPath}.lock`;
    mkdirSync(lock);
    const ahead = new Date(Date.now() + 3_600_000);
    utimesSync(lock, ahead, ahead);
    const gone = spawnSync("sh", ["-c", "cat /proc/self/stat"], { encoding: "utf8" }).stdout;
    const pid = gone.split(" ")[0];
    const start = gone.slice(gone.lastIndexOf(")") + 2).split(" ")[19];
    const st = statSync(lock, { bigint: true });
    writeFileSync(`${lock}-owner`, `${pid} ${start} ${st.ino} ${st.birthtimeNs}\n`);
    await store.images.put("taken:1", await storeImage(store, "t"));
    expect((await store.images.list()).map((r) => r.name)).toContain("docker.io/library/taken:1");
    expect(existsSync(lock)).toBe(false);
    expect(existsSync(`${lock}-owner`)).toBe(false);
  });

  it("takes over the lock of a killed process and keeps every concurrent name", async () => {
    const store = await tempStore();
    // What a tbuild killed while holding the lock leaves: a lock directory nobody refreshes.
    const lock = `${store.images.indexPath}.lock`;
    mkdirSync(lock);
    const old = new Date(Date.now() - 60_000);
    utimesSync(lock, old, old);
    const a = await storeImage(store, "a");
    const script = `
      import { openStore } from ${JSON.stringify(path.join(projectRoot, "dist/oci/store/index.js"))};
      const store = await openStore(process.argv[1]);
      await store.images.put(process.argv[2], JSON.parse(process.argv[3]));
    `;
    const names = Array.from({ length: 8 }, (_, i) => `app${i}`);
    await Promise.all(
      names.map((n) =>
        run(process.execPath, ["--input-type=module", "-e", script, store.root, n, JSON.stringify(a)]),
      ),
    );
    expect((await store.images.list()).map((r) => r.name)).toEqual(
      names.map((n) => `docker.io/library/${n}:latest`),
    );
    expect(existsSync(lock)).toBe(false);
  });
});
