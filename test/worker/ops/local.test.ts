/**
 * The build context (`local` op): its cache key covers what the build reads (paths, content,
 * mode, symlink targets) and nothing else (mtimes, files .dockerignore excludes or no COPY
 * selects), and its layer holds exactly the selected files.
 */
import { execFileSync } from "node:child_process";
import { chmod, chown, link, mkdir, symlink, utimes, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalOp } from "../../../solver/graph.js";
import { localContentKey, runLocal } from "../../../worker/ops/local.js";
import { tempDirs } from "../../helpers/temp.js";
import { layerEntries, type OpsFixture, opsFixture } from "./helpers.js";

const tempDir = tempDirs();
let fixture: OpsFixture;

beforeAll(async () => {
  fixture = await opsFixture();
});
afterAll(async () => {
  await fixture.cleanup();
});

function localOp(selection: Partial<LocalOp> = {}): LocalOp {
  return { kind: "local", name: "context", excludePatterns: [], followPaths: [], ...selection };
}

async function keyOf(dir: string, selection: Partial<LocalOp> = {}): Promise<string> {
  return localContentKey(localOp(selection), { ...fixture.ctx, localSources: { context: dir } });
}

async function makeContext(): Promise<string> {
  const dir = tempDir("context");
  await mkdir(path.join(dir, "src", "lib"), { recursive: true });
  await mkdir(path.join(dir, "docs"));
  await mkdir(path.join(dir, "node_modules", "dep"), { recursive: true });
  await writeFile(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY src /src\n");
  await writeFile(path.join(dir, "src", "main.go"), "package main\n");
  await writeFile(path.join(dir, "src", "lib", "util.go"), "package lib\n");
  await writeFile(path.join(dir, "docs", "readme.md"), "# docs\n");
  await writeFile(path.join(dir, "node_modules", "dep", "index.js"), "module.exports = 1\n");
  await writeFile(path.join(dir, "secret.env"), "TOKEN=1\n");
  await symlink("src/main.go", path.join(dir, "main-link"));
  return dir;
}

describe("the context's cache key", () => {
  it("keeps the key when only mtimes change (touch)", async () => {
    const dir = await makeContext();
    const before = await keyOf(dir);
    await utimes(path.join(dir, "src", "main.go"), new Date(2_000_000_000_000), new Date(2_000_000_000_000));
    await utimes(path.join(dir, "src"), new Date(1_000), new Date(1_000));
    expect(await keyOf(dir)).toBe(before);
  });

  it("changes the key when a byte of a file changes, even with the same size and mtime", async () => {
    const dir = await makeContext();
    const file = path.join(dir, "src", "main.go");
    await utimes(file, new Date(1_500_000_000_000), new Date(1_500_000_000_000));
    const before = await keyOf(dir);
    await writeFile(file, "package maim\n");
    await utimes(file, new Date(1_500_000_000_000), new Date(1_500_000_000_000));
    expect(await keyOf(dir)).not.toBe(before);
  });

  it("changes the key when a mode changes", async () => {
    const dir = await makeContext();
    const before = await keyOf(dir);
    await chmod(path.join(dir, "src", "main.go"), 0o755);
    expect(await keyOf(dir)).not.toBe(before);
  });

  it("changes the key when a symlink's target changes, or a file is added or removed", async () => {
    const dir = await makeContext();
    const before = await keyOf(dir);
    execFileSync("ln", ["-sfn", "src/lib/util.go", path.join(dir, "main-link")]);
    const relinked = await keyOf(dir);
    expect(relinked).not.toBe(before);
    await writeFile(path.join(dir, "src", "new.go"), "");
    expect(await keyOf(dir)).not.toBe(relinked);
  });

  it("keeps the key when an owner changes: the context is sent as root's, as Docker's client sends it", async () => {
    const dir = await makeContext();
    const before = await keyOf(dir);
    await chown(path.join(dir, "src", "main.go"), 1234, 5678);
    expect(await keyOf(dir)).toBe(before);
    const entries = await layerEntries(
      fixture.ctx,
      (await runLocal(localOp(), [], { ...fixture.ctx, localSources: { context: dir } })).layers[0]!,
    );
    expect(entries.find((e) => e.path === "src/main.go")).toMatchObject({ uid: 0, gid: 0 });
  });

  it("ignores a file .dockerignore excludes, and everything in an excluded directory", async () => {
    const dir = await makeContext();
    const excludePatterns = ["node_modules", "*.env"];
    const before = await keyOf(dir, { excludePatterns });
    await writeFile(path.join(dir, "secret.env"), "TOKEN=2\n");
    await writeFile(path.join(dir, "node_modules", "dep", "index.js"), "changed");
    expect(await keyOf(dir, { excludePatterns })).toBe(before);
    await writeFile(path.join(dir, "Dockerfile"), "changed");
    expect(await keyOf(dir, { excludePatterns })).not.toBe(before);
  });

  it("takes back a file an exception (!) re-includes", async () => {
    const dir = await makeContext();
    const excludePatterns = ["docs", "!docs/readme.md"];
    const before = await keyOf(dir, { excludePatterns });
    await writeFile(path.join(dir, "docs", "readme.md"), "changed");
    expect(await keyOf(dir, { excludePatterns })).not.toBe(before);
  });

  it("ignores files no COPY selects (followPaths), globs included", async () => {
    const dir = await makeContext();
    const followPaths = ["/src/*.go", "/Dockerfile"];
    const before = await keyOf(dir, { followPaths });
    await writeFile(path.join(dir, "docs", "readme.md"), "changed");
    await writeFile(path.join(dir, "src", "lib", "util.go"), "changed: not matched by /src/*.go");
    expect(await keyOf(dir, { followPaths })).toBe(before);
    await writeFile(path.join(dir, "src", "main.go"), "changed");
    expect(await keyOf(dir, { followPaths })).not.toBe(before);
  });

  it("gives a fresh copy of the context (cp -a into a new directory) the same key", async () => {
    const dir = await makeContext();
    const before = await keyOf(dir);
    const copy = path.join(tempDir("clone"), "context");
    execFileSync("cp", ["-a", dir, copy]);
    // New inodes, a different path and (for a clone) new mtimes: none of them count.
    execFileSync("find", [copy, "-exec", "touch", "-h", "-d", "2030-01-01", "{}", "+"]);
    expect(await keyOf(copy)).toBe(before);
  });

  it("reads a context given as a symlink to a directory as that directory", async () => {
    const dir = await makeContext();
    const link = path.join(tempDir("link"), "context");
    await symlink(dir, link);
    expect(await keyOf(link)).toBe(await keyOf(dir));
  });

  it("hashes a 2,000-file context quickly, and faster again when files are unchanged", async () => {
    const dir = tempDir("big");
    for (let d = 0; d < 40; d++) {
      const sub = path.join(dir, "pkg", `module${d}`);
      await mkdir(sub, { recursive: true });
      for (let f = 0; f < 50; f++) {
        await writeFile(
          path.join(sub, `file${f}.ts`),
          `export const value${f} = ${d * 1000 + f};\n`.repeat(40),
        );
      }
    }
    execFileSync("find", [dir, "-exec", "touch", "-d", "2020-01-01", "{}", "+"]);
    // A file whose mtime or ctime is under 2 s old is never remembered (it could still change
    // within its timestamp's tick): wait as long as a fresh checkout would have by its next build.
    await sleep(2100);
    const cold = performance.now();
    const first = await keyOf(dir);
    const coldMs = performance.now() - cold;
    const warm = performance.now();
    const second = await keyOf(dir);
    const warmMs = performance.now() - warm;
    console.log(
      `context key of 2,000 files (~1.6 MB): ${coldMs.toFixed(1)} ms reading every file, ${warmMs.toFixed(1)} ms with the per-file hash cache`,
    );
    expect(second).toBe(first);
    expect(coldMs).toBeLessThan(2000);
    expect(warmMs).toBeLessThan(500);
  });

  it("does not trust a remembered hash for a file changed without changing its size or mtime", async () => {
    const dir = await makeContext();
    const file = path.join(dir, "src", "main.go");
    await utimes(file, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    const before = await keyOf(dir);
    // Same size, same mtime: only the ctime (and the inode's content) tells.
    await writeFile(file, "package mai!\n");
    await utimes(file, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    expect(await keyOf(dir)).not.toBe(before);
  });
});

describe("the context's layer", () => {
  it("holds the selected files with their modes and mtimes, owned by root, parents included", async () => {
    const dir = await makeContext();
    await chmod(path.join(dir, "src", "main.go"), 0o750);
    await utimes(path.join(dir, "src", "main.go"), new Date(1_600_000_000_000), new Date(1_600_000_000_000));
    const fs = await runLocal(
      localOp({ followPaths: ["/src/main.go", "/main-link"], excludePatterns: ["docs"] }),
      [],
      {
        ...fixture.ctx,
        localSources: { context: dir },
      },
    );
    expect(fs.layers).toHaveLength(1);
    const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
    expect(entries.map((e) => e.path)).toEqual(["main-link", "src/", "src/main.go"]);
    expect(entries[0]).toMatchObject({ type: "SymbolicLink", linkpath: "src/main.go" });
    expect(entries[2]).toMatchObject({
      mode: 0o750,
      uid: 0,
      gid: 0,
      mtime: 1_600_000_000,
      content: "package main\n",
    });
  });

  it("includes what a followed symlink leads to", async () => {
    const dir = await makeContext();
    await symlink("src/lib", path.join(dir, "current"));
    const fs = await runLocal(localOp({ followPaths: ["/current"] }), [], {
      ...fixture.ctx,
      localSources: { context: dir },
    });
    const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
    expect(entries.map((e) => e.path)).toEqual(["current", "src/", "src/lib/", "src/lib/util.go"]);
  });

  it("includes what a symlink matched by a glob leads to, and keys on its content", async () => {
    const dir = await makeContext();
    await symlink("main.go", path.join(dir, "src", "l0"));
    const selection = { followPaths: ["/src/l*"] };
    const fs = await runLocal(localOp(selection), [], { ...fixture.ctx, localSources: { context: dir } });
    const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
    expect(entries.map((e) => e.path)).toEqual([
      "src/",
      "src/l0",
      "src/lib/",
      "src/lib/util.go",
      "src/main.go",
    ]);
    const before = await keyOf(dir, selection);
    await writeFile(path.join(dir, "src", "main.go"), "package main2\n");
    expect(await keyOf(dir, selection)).not.toBe(before);
  });

  it("sends a unix socket as an empty file of its mode, keyed as such a file, as BuildKit does", async () => {
    const dir = tempDir("context");
    const bound = path.join(dir, "bound.sock");
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(bound, resolve));
    await link(bound, path.join(dir, "app.sock"));
    await new Promise<void>((resolve) => server.close(() => resolve())); // unlinks bound.sock
    await chmod(path.join(dir, "app.sock"), 0o640);
    const fs = await runLocal(localOp(), [], { ...fixture.ctx, localSources: { context: dir } });
    const entries = await layerEntries(fixture.ctx, fs.layers[0]!);
    expect(entries).toEqual([
      expect.objectContaining({ path: "app.sock", type: "File", mode: 0o640, content: "" }),
    ]);
    const asFile = tempDir("context");
    await writeFile(path.join(asFile, "app.sock"), "", { mode: 0o640 });
    await chmod(path.join(asFile, "app.sock"), 0o640);
    expect(await keyOf(dir)).toBe(await keyOf(asFile));
  });

  it("names a local source the build was not given", async () => {
    await expect(keyOf("/nonexistent")).rejects.toThrow(/cannot read \/nonexistent/);
    await expect(
      localContentKey(localOp({ name: "assets" }), { ...fixture.ctx, localSources: { context: "/tmp" } }),
    ).rejects.toThrow(/--build-context assets=DIR/);
  });
});
