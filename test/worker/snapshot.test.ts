import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { chown, lstat, mkdir, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { readImage } from "../../oci/image.js";
import type { Store } from "../../oci/store/index.js";
import {
  LowerView,
  type SnapshotMode,
  Snapshotter,
  type WritableMount,
} from "../../worker/snapshot/index.js";
import { projectRoot } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import {
  dir,
  exists,
  file,
  hardlinkTo,
  LAYER_TIME,
  layerTar,
  listTar,
  mountsUnder,
  opaque,
  storeImage,
  symlinkTo,
  tempStore,
  whiteout,
} from "./layers.js";

const node = path.join(projectRoot, "node_modules/node/bin/node");
const prepareFixture = path.join(projectRoot, "test/worker/fixtures/prepare-image.mjs");

let root: string;
let store: Store;
let cleanup: () => Promise<void>;
const mounts: WritableMount[] = [];

beforeEach(async () => {
  ({ root, store, cleanup } = await tempStore());
});
afterEach(async () => {
  for (const mount of mounts.splice(0)) await mount.release();
  expect(await mountsUnder(root)).toEqual([]);
  await cleanup();
});

async function track(mount: Promise<WritableMount>): Promise<WritableMount> {
  const m = await mount;
  mounts.push(m);
  return m;
}

/** Three layers: a base, one deleting and replacing, one making /data opaque. */
async function threeLayerImage(compression: "gzip" | "zstd" | "uncompressed" = "gzip") {
  const base = await layerTar([
    dir("etc"),
    file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    file("etc/motd", "base motd\n"),
    file("etc/hosts", "127.0.0.1 localhost\n"),
    file("etc/old", "to be deleted\n"),
    dir("data"),
    file("data/a", "a"),
    dir("data/sub"),
    file("data/sub/deep", "deep"),
    dir("srv", { uid: 1234, gid: 1234 }),
    file("srv/owned", "owned", { uid: 1234, gid: 1234, mode: 0o600 }),
    file("bin-su", "su", { mode: 0o4755 }),
    dir("tmp", { mode: 0o1777 }),
    symlinkTo("motd-link", "etc/motd"),
    hardlinkTo("etc/passwd-", "etc/passwd"),
  ]);
  const second = await layerTar([dir("etc"), whiteout("etc/old"), file("etc/motd", "second motd\n")]);
  const third = await layerTar([dir("data"), opaque("data"), file("data/new", "new")]);
  return storeImage(store, [base, second, third], compression);
}

describe("Snapshotter.prepareImage", () => {
  it("unpacks each layer once, keyed by chain ID, and shares layers between images", async () => {
    const unpacked: string[] = [];
    const snapshotter = new Snapshotter(root, store.content, { onUnpack: (l) => unpacked.push(l.chainId) });
    const shared = await layerTar([dir("etc"), file("etc/base", "base")]);
    const one = await storeImage(store, [shared, await layerTar([file("one", "1")])]);
    const two = await storeImage(store, [shared, await layerTar([file("two", "2")])], "zstd");

    const dirsOne = await snapshotter.prepareImage(one);
    const dirsTwo = await snapshotter.prepareImage(two);
    expect(dirsOne[0]).toBe(dirsTwo[0]);
    expect(dirsOne[1]).not.toBe(dirsTwo[1]);
    expect(unpacked).toHaveLength(3);
    expect(await snapshotter.prepareImage(one)).toEqual(dirsOne);
    expect(unpacked).toHaveLength(3);
    const names = await readdir(path.join(root, "snapshots", "layers"));
    expect(names.filter((n) => !n.endsWith(".lock")).sort()).toEqual(
      dirsOne
        .concat(dirsTwo[1]!)
        .map((d) => path.basename(d))
        .sort(),
    );
  });

  it("unpacks a layer once when several snapshotters prepare the same image at the same time", async () => {
    const image = await threeLayerImage();
    const unpacked: string[] = [];
    const results = await Promise.all(
      Array.from({ length: 4 }, () =>
        new Snapshotter(root, store.content, { onUnpack: (l) => unpacked.push(l.chainId) }).prepareImage(
          image,
        ),
      ),
    );
    for (const dirs of results) expect(dirs).toEqual(results[0]);
    expect(unpacked.sort()).toEqual([...new Set(unpacked)].sort());
    expect(unpacked).toHaveLength(3);
    const names = await readdir(path.join(root, "snapshots", "layers"));
    expect(names.filter((n) => n.startsWith(".tmp-") || n.endsWith(".lock"))).toEqual([]);
  });

  it("gives a directory a layer implies the metadata of the same directory below", async () => {
    const base = await layerTar([dir("srv", { uid: 1234, gid: 1234, mode: 0o750 }), file("srv/a", "a")]);
    // No "srv/" entry: overlayfs would show this layer's srv, so it must look like the one below.
    const top = await layerTar([file("srv/b", "b")]);
    const snapshotter = new Snapshotter(root, store.content);
    const mount = await track(
      snapshotter.mountWritable(await snapshotter.prepareImage(await storeImage(store, [base, top]))),
    );
    const srv = await lstat(path.join(mount.rootfs, "srv"));
    expect([srv.uid, srv.gid, srv.mode & 0o7777, srv.mtimeMs]).toEqual([
      1234,
      1234,
      0o750,
      LAYER_TIME.getTime(),
    ]);
    expect((await readdir(path.join(mount.rootfs, "srv"))).sort()).toEqual(["a", "b"]);
  });

  it("applies entries of one layer in order: later ones replace earlier ones, a deleted directory made again is empty", async () => {
    const base = await layerTar([dir("keep"), file("keep/old", "old"), dir("x"), file("y", "y")]);
    const top = await layerTar([
      file("x", "x is a file now"),
      dir("y"),
      file("y/inside", "in"),
      dir("z"),
      file("z", "z replaced a directory"),
      whiteout("keep"),
      dir("keep"),
      file("keep/new", "new"),
    ]);
    const snapshotter = new Snapshotter(root, store.content);
    const mount = await track(
      snapshotter.mountWritable(await snapshotter.prepareImage(await storeImage(store, [base, top]))),
    );
    expect(await readFile(path.join(mount.rootfs, "x"), "utf8")).toBe("x is a file now");
    expect(await readFile(path.join(mount.rootfs, "y/inside"), "utf8")).toBe("in");
    expect(await readFile(path.join(mount.rootfs, "z"), "utf8")).toBe("z replaced a directory");
    expect(await readdir(path.join(mount.rootfs, "keep"))).toEqual(["new"]);
  });

  it("expresses an opaque directory as whiteouts of what is below it", async () => {
    const dirs = await new Snapshotter(root, store.content).prepareImage(await threeLayerImage());
    const top = dirs[2]!;
    for (const hidden of ["a", "sub"]) {
      const st = await lstat(path.join(top, "data", hidden));
      expect(st.isCharacterDevice() && st.rdev === 0).toBe(true);
    }
    expect(await readFile(path.join(top, "data/new"), "utf8")).toBe("new");
  });
});

for (const mode of ["overlay", "copy"] as SnapshotMode[]) {
  describe(`a writable root filesystem (${mode})`, () => {
    it("shows the layers merged: deletions and opaque directories applied, metadata kept", async () => {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const lowers = await snapshotter.prepareImage(await threeLayerImage("zstd"));
      const mount = await track(snapshotter.mountWritable(lowers));
      expect(mount.mode).toBe(mode);
      const rootfs = mount.rootfs;
      expect(await exists(path.join(rootfs, "etc/old"))).toBe(false);
      expect(await readFile(path.join(rootfs, "etc/motd"), "utf8")).toBe("second motd\n");
      expect((await readdir(path.join(rootfs, "data"))).sort()).toEqual(["new"]);
      const owned = await lstat(path.join(rootfs, "srv/owned"));
      expect([owned.uid, owned.gid, owned.mode & 0o7777]).toEqual([1234, 1234, 0o600]);
      expect((await lstat(path.join(rootfs, "bin-su"))).mode & 0o7777).toBe(0o4755);
      expect((await lstat(path.join(rootfs, "tmp"))).mode & 0o7777).toBe(0o1777);
      expect((await lstat(path.join(rootfs, "bin-su"))).mtimeMs).toBe(LAYER_TIME.getTime());
      expect(await readFile(path.join(rootfs, "motd-link"), "utf8")).toBe("second motd\n");
      const passwd = await lstat(path.join(rootfs, "etc/passwd"));
      expect((await lstat(path.join(rootfs, "etc/passwd-"))).ino).toBe(passwd.ino);
      if (mode === "overlay") expect(await mountsUnder(root)).toEqual([rootfs]);
      else expect(await mountsUnder(root)).toEqual([]);

      await writeFile(path.join(rootfs, "etc/new"), "written");
      await mount.release();
      await mount.release(); // idempotent
      expect(await mountsUnder(root)).toEqual([]);
      expect(await readdir(path.join(root, "snapshots", "mounts"))).toEqual([]);
      // The layers themselves are untouched by what the container wrote.
      for (const layer of lowers) expect(await exists(path.join(layer, "etc/new"))).toBe(false);
    });

    it("diffs its changes into a layer: owner changes, whiteouts, opaque directories, clamped times", async () => {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const lowers = await snapshotter.prepareImage(await threeLayerImage());
      const mount = await track(snapshotter.mountWritable(lowers));
      const rootfs = mount.rootfs;
      await chown(path.join(rootfs, "etc/hosts"), 1234, 1234);
      await unlink(path.join(rootfs, "etc/motd"));
      await rm(path.join(rootfs, "data"), { recursive: true });
      await mkdir(path.join(rootfs, "data"));
      await writeFile(path.join(rootfs, "data/fresh"), "fresh");
      await mkdir(path.join(rootfs, "var/lib"), { recursive: true });
      await writeFile(path.join(rootfs, "var/lib/state"), "state");
      await chown(path.join(rootfs, "var/lib/state"), 1234, 1234);

      const epoch = 1_500_000_000; // after LAYER_TIME, before now
      const entries = await listTar(mount.diff({ sourceDateEpoch: epoch }));
      const byPath = new Map(entries.map((e) => [e.path, e]));
      expect(entries.map((e) => e.path)).toEqual([
        "data/",
        "data/.wh..wh..opq",
        "data/fresh",
        "etc/",
        "etc/.wh.motd",
        "etc/hosts",
        "var/",
        "var/lib/",
        "var/lib/state",
      ]);
      expect(byPath.get("etc/hosts")).toMatchObject({
        uid: 1234,
        gid: 1234,
        type: "File",
        mode: 0o644,
        mtime: LAYER_TIME.getTime() / 1000,
        content: "127.0.0.1 localhost\n",
      });
      expect(byPath.get("var/lib/state")).toMatchObject({ uid: 1234, content: "state", mtime: epoch });
      expect(byPath.get("data/fresh")?.mtime).toBe(epoch);
      for (const e of entries) expect(e.mtime).toBeLessThanOrEqual(epoch);
    });

    it("says how many entries' extended attributes the layer leaves out, and not overlayfs's own", async () => {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const lowers = await snapshotter.prepareImage(await threeLayerImage());
      const mount = await track(snapshotter.mountWritable(lowers));
      const capable = path.join(mount.rootfs, "etc/capable");
      await writeFile(capable, "x");
      execFileSync("setfattr", ["-n", "user.origin", "-v", "step", capable]);
      // Copied up: overlayfs may mark the upper copy with attributes of its own.
      await chown(path.join(mount.rootfs, "etc/hosts"), 1234, 1234);
      await rm(path.join(mount.rootfs, "data"), { recursive: true });
      await mkdir(path.join(mount.rootfs, "data"));
      const warnings: string[] = [];
      const entries = await listTar(mount.diff({ warn: (message) => warnings.push(message) }));
      expect(entries.map((e) => e.path)).toContain("etc/capable");
      expect(warnings).toEqual([
        "extended attributes left out of the layer: 1 entry carried them (user.origin on etc/capable); tbuild does not keep extended attributes yet",
      ]);
    });

    it("diffs a deletion in a directory as a whiteout, not an opaque directory", async () => {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const lowers = await snapshotter.prepareImage(await threeLayerImage());
      const mount = await track(snapshotter.mountWritable(lowers));
      await unlink(path.join(mount.rootfs, "motd-link"));
      await rm(path.join(mount.rootfs, "srv/owned"));
      const entries = await listTar(mount.diff());
      expect(entries.map((e) => e.path)).toEqual([".wh.motd-link", "srv/", "srv/.wh.owned"]);
      expect(entries.find((e) => e.path === "srv/")).toMatchObject({ uid: 1234, gid: 1234 });
    });

    it("keeps a persistent one for reopening, and removes it on request", async () => {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const lowers = await snapshotter.prepareImage(await threeLayerImage());
      const mount = await snapshotter.mountWritable(lowers, { id: "kept", persistent: true });
      await writeFile(path.join(mount.rootfs, "etc/kept"), "kept");
      await mount.release();
      expect(await mountsUnder(root)).toEqual([]);
      await expect(snapshotter.mountWritable(lowers, { id: "kept" })).rejects.toThrow(/exists already/);

      const reopened = await track(snapshotter.openWritable("kept", lowers));
      expect(await readFile(path.join(reopened.rootfs, "etc/kept"), "utf8")).toBe("kept");
      await reopened.release();
      // A released overlay is mounted again for its diff, and unmounted after.
      expect((await listTar(reopened.diff())).map((e) => e.path)).toEqual(["etc/", "etc/kept"]);
      expect(await mountsUnder(root)).toEqual([]);
      await snapshotter.removeWritable("kept");
      expect(await readdir(path.join(root, "snapshots", "mounts"))).toEqual([]);
      await expect(snapshotter.openWritable("kept", lowers)).rejects.toThrow(
        /no writable root filesystem named kept/,
      );
    });
  });
}

describe("a build step's overlay", () => {
  it("syncs nothing of a build step's root, yet mounts it again for a diff; a kept container's it syncs", async () => {
    const snapshotter = new Snapshotter(root, store.content, { mode: "overlay" });
    const lowers = await snapshotter.prepareImage(await threeLayerImage());
    // `volatile`, shown as such or (newer kernels) as `fsync=volatile`.
    const volatile = (rootfs: string) =>
      readFileSync("/proc/self/mounts", "utf8")
        .split("\n")
        .find((line) => line.split(" ")[1] === rootfs)
        ?.split(" ")[3]
        ?.split(",")
        .some((option) => option === "volatile" || option === "fsync=volatile");
    const step = await track(snapshotter.mountWritable(lowers));
    expect(volatile(step.rootfs)).toBe(true);
    await writeFile(path.join(step.rootfs, "etc/new"), "new");
    await step.unmount();
    // Mounted again over the same work directory, which a volatile mount marks.
    expect((await listTar(step.diff())).map((e) => e.path)).toEqual(["etc/", "etc/new"]);
    await step.release();

    const kept = await track(snapshotter.mountWritable(lowers, { id: "synced", persistent: true }));
    expect(volatile(kept.rootfs)).toBe(false);
    await kept.release();
    await snapshotter.removeWritable("synced");
  });
});

describe("a stack of many layers", () => {
  /**
   * 120 layers: a base, then one file per layer; every 10th layer deletes the file of the layer
   * before it, every 7th rewrites the base's file, layer 50 makes /data opaque, layer 90 changes
   * /srv's owner. What the merged root filesystem must then hold is worked out beside it.
   */
  async function deepImage() {
    deepLayers ??= deepLayerTars();
    const { tars, expected } = await deepLayers;
    return { image: await storeImage(store, tars), expected };
  }

  /** deepImage's layers and expected files, made once: each test stores them in its own store. */
  let deepLayers: ReturnType<typeof deepLayerTars> | undefined;
  async function deepLayerTars() {
    const tars = [
      await layerTar([dir("data"), file("data/base", "base"), dir("srv"), file("motd", "motd 0")]),
    ];
    const expected = new Map<string, string>([
      ["data/base", "base"],
      ["motd", "motd 0"],
    ]);
    for (let i = 1; i < 120; i++) {
      const specs = [file(`f${i}`, `file ${i}`)];
      expected.set(`f${i}`, `file ${i}`);
      if (i % 10 === 0) {
        specs.push(whiteout(`f${i - 1}`));
        expected.delete(`f${i - 1}`);
      }
      if (i % 7 === 0) {
        specs.push(file("motd", `motd ${i}`));
        expected.set("motd", `motd ${i}`);
      }
      if (i === 50) {
        specs.push(dir("data"), opaque("data"), file("data/fresh", "fresh"));
        expected.delete("data/base");
        expected.set("data/fresh", "fresh");
      }
      if (i === 90) specs.push(dir("srv", { uid: 1234, gid: 1234, mode: 0o750 }));
      tars.push(await layerTar(specs));
    }
    return { tars, expected };
  }

  async function contents(rootfs: string): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    for (const name of await readdir(rootfs)) {
      if (name === "data") {
        for (const inner of await readdir(path.join(rootfs, "data"))) {
          found.set(`data/${inner}`, await readFile(path.join(rootfs, "data", inner), "utf8"));
        }
      } else if (name !== "srv") {
        found.set(name, await readFile(path.join(rootfs, name), "utf8"));
      }
    }
    return found;
  }

  // One test, not two: preparing the 120 layers is most of its time, and both halves need it.
  it("mounts as an overlay of a short stack, showing every layer's changes, and no write to it reaches the layers", async () => {
    const { image, expected } = await deepImage();
    const warnings: string[] = [];
    const snapshotter = new Snapshotter(root, store.content, { warn: (m) => warnings.push(m) });
    const lowers = await snapshotter.prepareImage(image);
    const mount = await track(snapshotter.mountWritable(lowers));
    expect(mount.mode, warnings.join("; ")).toBe("overlay");
    expect(await contents(mount.rootfs)).toEqual(expected);
    const srv = await lstat(path.join(mount.rootfs, "srv"));
    expect([srv.uid, srv.gid, srv.mode & 0o7777]).toEqual([1234, 1234, 0o750]);
    // The same again: what was flattened once is found, not made again.
    expect(await snapshotter.prepareImage(image)).toEqual(lowers);

    // Writes to the root filesystem stay in its own upper directory.
    await writeFile(path.join(mount.rootfs, "f1"), "overwritten");
    await chown(path.join(mount.rootfs, "f3"), 4321, 4321);
    await mount.release();
    const again = await track(snapshotter.mountWritable(await snapshotter.prepareImage(image)));
    expect(await readFile(path.join(again.rootfs, "f1"), "utf8")).toBe("file 1");
    expect((await lstat(path.join(again.rootfs, "f3"))).uid).toBe(0);
  });

  it("leaves its flattened layers to be pruned with the image's", async () => {
    const { image } = await deepImage();
    const snapshotter = new Snapshotter(root, store.content);
    await snapshotter.prepareImage(image);
    expect(await snapshotter.unneededLayers([image.config.rootfs.diff_ids])).toEqual([]);
    const unneeded = await snapshotter.unneededLayers([]);
    expect(unneeded.filter((d) => d.startsWith(`${snapshotter.flatDir}/`)).length).toBeGreaterThan(0);
    await snapshotter.removeLayers(unneeded);
    expect(await readdir(snapshotter.flatDir)).toEqual([]);
  });
});

describe("LowerView", () => {
  it("looks paths up synchronously as overlayfs shows them: whiteouts hide, the top file wins", async () => {
    const snapshotter = new Snapshotter(root, store.content);
    const lowers = await snapshotter.prepareImage(await threeLayerImage());
    const paths = [
      "",
      "etc",
      "etc/old",
      "etc/motd",
      "etc/passwd",
      "data",
      "data/a",
      "data/new",
      "srv/owned",
      "nope/x",
    ];
    const view = new LowerView(lowers);
    const shown = (entry: { source: string } | undefined) =>
      entry === undefined ? "absent" : path.relative(root, entry.source);
    const synchronous = paths.map((p) => shown(view.lookupSync(p)));
    expect(synchronous).toEqual(await Promise.all(paths.map(async (p) => shown(await view.lookup(p)))));
    expect(synchronous[2]).toBe("absent");
    expect(synchronous[3]).toBe(path.relative(root, path.join(lowers[1]!, "etc/motd")));
    expect(synchronous[6]).toBe("absent");
  });
});

describe("a deferred writable root filesystem", () => {
  it("is left for the runtime to mount: nothing mounted, its overlay's options name the layers", async () => {
    const snapshotter = new Snapshotter(root, store.content);
    const lowers = await snapshotter.prepareImage(await threeLayerImage());
    const mount = await track(snapshotter.mountWritable(lowers, { deferMount: true, persistent: true }));
    const overlay = mount.deferredOverlay;
    expect(overlay?.layers).toEqual([...lowers, mount.upper]);
    expect(await mountsUnder(root)).toEqual([]);
    expect(await readdir(mount.rootfs)).toEqual([]);
    // Mounted as runc mounts it, in a mount namespace of its own that ends with the command.
    const script = 'mount -t overlay overlay -o "$1" "$2" && cat "$2/etc/motd" && echo made > "$2/etc/new"';
    const out = execFileSync(
      "unshare",
      [
        "--mount",
        "--propagation=private",
        "sh",
        "-c",
        script,
        "sh",
        overlay!.options.join(","),
        mount.rootfs,
      ],
      { encoding: "utf8" },
    );
    expect(out).toBe("second motd\n");
    expect(await mountsUnder(root)).toEqual([]);
    // What the process wrote is the mount's diff, as if tbuild had mounted it.
    expect((await listTar(mount.diff())).map((e) => e.path)).toEqual(["etc/", "etc/new"]);
    expect(await mountsUnder(root)).toEqual([]);
  });

  it("is mounted on the host after all by mountOnHost", async () => {
    const snapshotter = new Snapshotter(root, store.content);
    const mount = await track(
      snapshotter.mountWritable(await snapshotter.prepareImage(await threeLayerImage()), {
        deferMount: true,
      }),
    );
    await mount.mountOnHost();
    expect(mount.deferredOverlay).toBeUndefined();
    expect(await mountsUnder(root)).toEqual([mount.rootfs]);
    expect(await readFile(path.join(mount.rootfs, "etc/motd"), "utf8")).toBe("second motd\n");
  });

  it("is not deferred by a copying snapshotter", async () => {
    const snapshotter = new Snapshotter(root, store.content, { mode: "copy" });
    const mount = await track(
      snapshotter.mountWritable(await snapshotter.prepareImage(await threeLayerImage()), {
        deferMount: true,
      }),
    );
    expect(mount.deferredOverlay).toBeUndefined();
    expect(await readFile(path.join(mount.rootfs, "etc/motd"), "utf8")).toBe("second motd\n");
  });
});

describe("an imported image", () => {
  it("runs a program from its mounted root filesystem", async () => {
    await importBusybox(root, "busybox:test");
    const record = await store.images.get("busybox:test");
    const image = await readImage(store.content, record!.descriptor);
    for (const mode of ["overlay", "copy"] as SnapshotMode[]) {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const mount = await track(snapshotter.mountWritable(await snapshotter.prepareImage(image)));
      const out = execFileSync(
        "chroot",
        [mount.rootfs, "/bin/sh", "-c", "echo hi > /tmp/hi && cat /tmp/hi && ls -ld /tmp"],
        {
          encoding: "utf8",
        },
      );
      expect(out).toMatch(/^hi\ndrwxrwxrwt/);
      expect((await listTar(mount.diff())).map((e) => e.path)).toEqual(["tmp/", "tmp/hi"]);
    }
  });
});

describe("overlay and copy", () => {
  it("give the same diff for the same changes", async () => {
    const image = await threeLayerImage();
    const diffs: Buffer[] = [];
    for (const mode of ["overlay", "copy"] as SnapshotMode[]) {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const mount = await track(snapshotter.mountWritable(await snapshotter.prepareImage(image)));
      const rootfs = mount.rootfs;
      await chown(path.join(rootfs, "srv/owned"), 4321, 4321);
      await unlink(path.join(rootfs, "etc/motd"));
      await rm(path.join(rootfs, "data"), { recursive: true });
      await mkdir(path.join(rootfs, "data/sub"), { recursive: true });
      await writeFile(path.join(rootfs, "data/sub/n"), "n");
      await writeFile(path.join(rootfs, "etc/hosts"), "changed\n");
      await mkdir(path.join(rootfs, "new/dir"), { recursive: true, mode: 0o750 });
      execFileSync("ln", ["-s", "../etc/passwd", path.join(rootfs, "new/link")]);
      const chunks: Buffer[] = [];
      for await (const chunk of mount.diff({ sourceDateEpoch: 1_500_000_000 }))
        chunks.push(Buffer.from(chunk));
      diffs.push(Buffer.concat(chunks));
    }
    const [overlayDiff, copyDiff] = diffs as [Buffer, Buffer];
    expect((await listTar(copyDiff)).map((e) => e.path)).toEqual(
      (await listTar(overlayDiff)).map((e) => e.path),
    );
    expect(copyDiff.equals(overlayDiff)).toBe(true);
  });

  it("gives no changes for an untouched root filesystem", async () => {
    for (const mode of ["overlay", "copy"] as SnapshotMode[]) {
      const snapshotter = new Snapshotter(root, store.content, { mode });
      const mount = await track(
        snapshotter.mountWritable(await snapshotter.prepareImage(await threeLayerImage())),
      );
      const chunks: Buffer[] = [];
      for await (const chunk of mount.diff()) chunks.push(Buffer.from(chunk));
      // An empty tar: the two zero blocks that end an archive, and nothing before them.
      expect(Buffer.concat(chunks).equals(Buffer.alloc(1024))).toBe(true);
    }
  });
});

describe("what a killed process left", () => {
  it("is no half-unpacked layer: the next process unpacks it whole", async () => {
    // Enough content that the unpack is still running when the temp directory appears.
    const chunk = "x".repeat(64 * 1024);
    const specs = Array.from({ length: 1500 }, (_, i) => file(`f${String(i).padStart(4, "0")}`, chunk));
    const image = await storeImage(store, [await layerTar(specs)], "uncompressed");
    const child = spawn(
      node,
      [prepareFixture, root, image.descriptor.digest, String(image.descriptor.size)],
      {
        stdio: "ignore",
      },
    );
    const layers = path.join(root, "snapshots", "layers");
    const exited = new Promise((resolve) => child.once("exit", resolve));
    for (let started = false; !started; ) {
      const names = await readdir(layers).catch(() => [] as string[]);
      started = names.some((n) => n.startsWith(".tmp-"));
      if (!started) await new Promise((r) => setTimeout(r, 2));
    }
    child.kill("SIGKILL");
    await exited;
    const left = await readdir(layers);
    // Its temp directory and its lock remain, under names no reader takes for a layer.
    expect(left.every((n) => n.startsWith(".tmp-") || n.endsWith(".lock"))).toBe(true);

    const unpacked: string[] = [];
    const snapshotter = new Snapshotter(root, store.content, { onUnpack: (l) => unpacked.push(l.chainId) });
    const started = Date.now();
    const [layer] = await snapshotter.prepareImage(image);
    expect(Date.now() - started).toBeLessThan(20_000); // the dead holder's lock is taken over at once
    expect(unpacked).toHaveLength(1);
    expect(await readdir(layer!)).toHaveLength(1500);
    expect(await readdir(layers)).toEqual([path.basename(layer!)]);
  });

  it("is unmounted and removed by the next mount", async () => {
    const snapshotter = new Snapshotter(root, store.content);
    const lowers = await snapshotter.prepareImage(await threeLayerImage());
    const mount = await snapshotter.mountWritable(lowers, { id: "orphan" });
    // Pretend its maker died: a pid that is not running.
    const stateFile = path.join(root, "snapshots", "mounts", "orphan", "state.json");
    const state = JSON.parse(await readFile(stateFile, "utf8"));
    await writeFile(stateFile, JSON.stringify({ ...state, pid: 999999999 }));
    expect(await mountsUnder(root)).toEqual([mount.rootfs]);
    await track(snapshotter.mountWritable(lowers, { id: "next" }));
    expect(await mountsUnder(root)).toEqual([path.join(root, "snapshots", "mounts", "next", "rootfs")]);
    expect(await readdir(path.join(root, "snapshots", "mounts"))).toEqual(["next"]);
  });
});
