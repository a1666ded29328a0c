/**
 * Rebuilds after a change reuse what earlier builds unpacked and copied (source snapshots, kept
 * upper directories). None of that may show: a
 * rebuild gives the image a fresh store gives for the same sources, no two paths of a root
 * filesystem share an inode, and a later step changing a reused file changes nothing earlier.
 */
import { chmodSync, mkdirSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { busyboxStore, FIXED_EPOCH } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

let storeRoot: string;
beforeAll(async () => {
  storeRoot = tempDir("incremental-store");
  await busyboxStore(tempDir, storeRoot, "busybox");
});

function writeTree(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
}

/** A project of many files in a few directories, as the rebuild case of the benchmarks has. */
function project(): Record<string, string> {
  const files: Record<string, string> = {};
  for (let i = 0; i < 120; i++) files[`src/m${i % 6}/f${i}.txt`] = `file ${i}\n`;
  return files;
}

/** Builds `dir` as `tag`; gives the build's output and the manifest digest its summary names. */
function build(root: string, dir: string, tag: string) {
  const result = tbuild(["build", "--progress=plain", "-t", tag, dir], {
    env: { TBUILD_ROOT: root, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
  });
  expect(result.status, result.stderr).toBe(0);
  const digest = /image (sha256:[a-f0-9]{64})/.exec(result.stderr)?.[1];
  expect(digest, result.stderr).toBeDefined();
  return { ...result, digest };
}

/** The manifest digest of a tagged image, as `tbuild inspect` shows it. */
function digest(root: string, tag: string): string {
  const inspected = tbuild(["inspect", tag], { env: { TBUILD_ROOT: root } });
  expect(inspected.status, inspected.stderr).toBe(0);
  return (JSON.parse(inspected.stdout) as { descriptor: { digest: string } }).descriptor.digest;
}

function run(root: string, tag: string, script: string): string {
  const result = tbuild(["run", "--rm", tag, "sh", "-c", script], { env: { TBUILD_ROOT: root } });
  expect(result.status, result.stderr).toBe(0);
  return result.stdout;
}

describe("rebuilds after a change", () => {
  it("give the image a fresh store gives for the same sources", async () => {
    const dir = path.join(tempDir("incremental-ctx"), "ctx");
    writeTree(dir, {
      ...project(),
      Dockerfile:
        "FROM busybox\nWORKDIR /app\nCOPY . .\nRUN find /app -type f | sort | xargs cat | md5sum > /sum\n",
    });
    build(storeRoot, dir, "inc:1");
    for (const edit of ["one\n", "two\n", "three\n"]) {
      writeFileSync(path.join(dir, "src/m0/f0.txt"), edit);
      const rebuilt = build(storeRoot, dir, "inc:1");
      expect(rebuilt.stderr).toContain("2 step(s) ran");

      const fresh = tempDir("incremental-fresh");
      await busyboxStore(tempDir, fresh, "busybox");
      expect(rebuilt.digest).toBe(build(fresh, dir, "inc:1").digest);
      expect(run(storeRoot, "inc:1", "cat /app/src/m0/f0.txt")).toBe(edit);
    }
  });

  it("copy into directories that only lower layers hold, as the tutorials' dependency-first shape does", async () => {
    // WORKDIR makes /app in a layer below the COPY; /etc is the base image's. A rebuild that kept
    // an unchanged file of such a COPY used to fail with "upper/app: no such file or directory",
    // and every later build of the context with it.
    const dir = path.join(tempDir("incremental-ctx"), "ctx");
    writeTree(dir, {
      Dockerfile: [
        "FROM busybox",
        "WORKDIR /app",
        "COPY deps.txt ./",
        "RUN echo installed > /app/deps-stamp",
        "COPY src/ ./src/",
        "COPY a.txt /etc/",
        "COPY . /src/",
        "RUN find /app /etc/a.txt /src -type f | sort | xargs cat | md5sum > /sum",
        "",
      ].join("\n"),
      "deps.txt": "deps 1\n",
      "src/main.txt": "main 1\n",
      "src/util.txt": "util 1\n",
      "a.txt": "a 1\n",
      "b.txt": "b 1\n",
    });
    build(storeRoot, dir, "deps-first:1");
    for (const [file, text] of [
      ["src/main.txt", "main 2\n"],
      ["b.txt", "b 2\n"],
      ["a.txt", "a 2\n"],
      ["deps.txt", "deps 2\n"],
    ] as const) {
      writeFileSync(path.join(dir, file), text);
      const rebuilt = build(storeRoot, dir, "deps-first:1");
      const fresh = tempDir("incremental-fresh");
      await busyboxStore(tempDir, fresh, "busybox");
      expect(rebuilt.digest, `after editing ${file}`).toBe(build(fresh, dir, "deps-first:1").digest);
    }
  });

  it("take nothing from the previous build that a mode, an mtime or a same-size edit changed", async () => {
    // Unchanged files come from the previous context tar and the previous COPY's files: a file
    // whose mode or mtime alone changed, or whose bytes changed at the same size, must not.
    const dir = path.join(tempDir("incremental-ctx"), "ctx");
    writeTree(dir, {
      ...project(),
      "big.bin": "x".repeat(3 << 20),
      Dockerfile:
        "FROM busybox\nCOPY . /app\nRUN cd /app && find . -type f | sort | xargs stat -c '%n %a %Y %s' > /meta && find . -type f | sort | xargs md5sum > /sums\n",
    });
    build(storeRoot, dir, "same-size:1");
    const rounds: Array<() => void> = [
      () => chmodSync(path.join(dir, "src/m1/f1.txt"), 0o755),
      () =>
        utimesSync(path.join(dir, "src/m2/f2.txt"), new Date(1_500_000_000_000), new Date(1_500_000_000_000)),
      () => writeFileSync(path.join(dir, "src/m3/f3.txt"), "FILE 3\n"),
      () => writeFileSync(path.join(dir, "big.bin"), "y".repeat(3 << 20)),
    ];
    for (const change of rounds) {
      change();
      // Another file changes too, so that the context's checksum differs on every round.
      writeFileSync(path.join(dir, "src/m0/f0.txt"), `round ${rounds.indexOf(change)}\n`);
      const rebuilt = build(storeRoot, dir, "same-size:1");
      const fresh = tempDir("incremental-fresh");
      await busyboxStore(tempDir, fresh, "busybox");
      expect(rebuilt.digest).toBe(build(fresh, dir, "same-size:1").digest);
    }
    expect(run(storeRoot, "same-size:1", "cat /app/src/m3/f3.txt; stat -c %a /app/src/m1/f1.txt")).toBe(
      "FILE 3\n755\n",
    );
  });

  it("never give two paths of one filesystem one inode", () => {
    const dir = path.join(tempDir("incremental-ctx"), "ctx");
    writeTree(dir, {
      "same.txt": "the same bytes\n",
      "other.txt": "v1\n",
      Dockerfile: "FROM busybox\nCOPY same.txt /x\nCOPY same.txt /y\nCOPY other.txt /z\n",
    });
    build(storeRoot, dir, "inodes:1");
    writeFileSync(path.join(dir, "other.txt"), "v2\n");
    build(storeRoot, dir, "inodes:1");
    writeFileSync(path.join(dir, "other.txt"), "v3\n");
    build(storeRoot, dir, "inodes:1");
    const [x, y] = run(storeRoot, "inodes:1", "stat -c %i /x /y").trim().split("\n");
    expect(x).not.toBe(y);
    // A program that changes one sees the other unchanged.
    expect(run(storeRoot, "inodes:1", "echo changed >> /x; cat /y")).toBe("the same bytes\n");
  });

  it("let a later step change a reused file without changing the step it came from", () => {
    const dir = path.join(tempDir("incremental-ctx"), "ctx");
    writeTree(dir, {
      "keep.txt": "original\n",
      "edit.txt": "v1\n",
      Dockerfile:
        "FROM busybox\nCOPY . /app\nRUN echo appended >> /app/keep.txt && chmod 600 /app/keep.txt\n",
    });
    build(storeRoot, dir, "later:1");
    writeFileSync(path.join(dir, "edit.txt"), "v2\n");
    build(storeRoot, dir, "later:1");
    expect(run(storeRoot, "later:1", "cat /app/keep.txt; stat -c %a /app/keep.txt")).toBe(
      "original\nappended\n600\n",
    );
    writeFileSync(path.join(dir, "edit.txt"), "v3\n");
    build(storeRoot, dir, "later:1");
    // Appended once: the COPY's file (linked from its previous result) was not written through.
    expect(run(storeRoot, "later:1", "cat /app/keep.txt")).toBe("original\nappended\n");
  });

  it("replace a file of the base image with the copied one, as the first build did", () => {
    const dir = path.join(tempDir("incremental-ctx"), "ctx");
    writeTree(dir, {
      "x.txt": "from the context\n",
      "other.txt": "v1\n",
      Dockerfile: "FROM busybox AS base\nRUN echo from the base > /x.txt\n\nFROM base\nCOPY . /\n",
    });
    build(storeRoot, dir, "over:1");
    for (const edit of ["v2\n", "v3\n"]) {
      writeFileSync(path.join(dir, "other.txt"), edit);
      build(storeRoot, dir, "over:1");
      expect(run(storeRoot, "over:1", "cat /x.txt /other.txt")).toBe(`from the context\n${edit}`);
    }
  });

  it("that changed nothing give the very same image, without SOURCE_DATE_EPOCH too", () => {
    const dir = path.join(tempDir("incremental-ctx"), "ctx");
    writeTree(dir, {
      "a.txt": "a\n",
      Dockerfile: "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt\n",
    });
    const quietBuild = () => {
      const result = tbuild(["build", "-q", "-t", "same:1", dir], { env: { TBUILD_ROOT: storeRoot } });
      expect(result.status, result.stderr).toBe(0);
      return result.stdout.trim();
    };
    const first = quietBuild();
    // A second later: a `created` of "now" would differ (it has whole seconds).
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1100);
    expect(quietBuild()).toBe(first);
    expect(digest(storeRoot, "same:1")).toBe(first);
    writeFileSync(path.join(dir, "a.txt"), "changed\n");
    expect(quietBuild()).not.toBe(first);
  });
});
