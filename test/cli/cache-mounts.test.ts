/**
 * `tbuild cache mounts|export|import`: cache mounts listed, written out as a directory or an
 * archive (plain, zstd, gzip, or a tar on stdout) and seeded into another store, where a build's
 * RUN finds them with their owners (a `uid=1000` mount), modes (setuid and setgid bits too),
 * symbolic and hard links and content. As root and rootless.
 */
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tempDirs } from "../helpers/temp.js";
import { type ModeEnv, modes, setUpMode } from "../runtime/harness.js";

const tempDir = tempDirs();

/** The mount `pkgs` as the writer leaves it: owners, modes, links. */
const WRITE = [
  "FROM busybox",
  "RUN --mount=type=cache,id=pkgs,target=/cache,uid=1000,gid=1000,mode=0750 sh -c '" +
    "echo hello > /cache/a && chmod 640 /cache/a && ln -s a /cache/link && ln /cache/a /cache/hard && " +
    "mkdir /cache/sub && chown 1000:1000 /cache/sub && chmod 2775 /cache/sub && " +
    "echo x > /cache/sub/s && chown 1001:1002 /cache/sub/s && chmod 4755 /cache/sub/s'",
  "RUN --mount=type=cache,id=numbers,target=/numbers,sharing=locked sh -c 'seq 1 100000 > /numbers/list'",
  "",
].join("\n");

/**
 * What a build in another store finds in the mounts, written into its image's /report: one step
 * with both mounts (a container less per store than a step each).
 */
const READ = [
  "FROM busybox",
  "RUN --mount=type=cache,id=pkgs,target=/cache,uid=1000,gid=1000,mode=0750 " +
    "--mount=type=cache,id=numbers,target=/numbers,sharing=locked sh -c '" +
    'cd /cache && stat -c "%n %u:%g %a" . a hard link sub sub/s > /report && readlink link >> /report && ' +
    'cat a >> /report && [ "$(stat -c %i a)" = "$(stat -c %i hard)" ] && echo one-inode >> /report && ' +
    "(wc -l < /numbers/list || echo none) >> /report'",
  "",
].join("\n");

const REPORT = [
  ". 1000:1000 750",
  "a 0:0 640",
  "hard 0:0 640",
  "link 0:0 777",
  "sub 1000:1000 2775",
  "sub/s 1001:1002 4755",
  "a",
  "hello",
  "one-inode",
  "100000",
  "",
].join("\n");

describe.each(modes())("cache mounts as $name", (mode) => {
  let writer: ModeEnv;
  let readContext: string;
  let out: string;
  /** Every store a test imported into. */
  const readers: ModeEnv[] = [];
  beforeAll(async () => {
    writer = await setUpMode(mode, tempDir);
    const context = writer.ownedDir("write");
    writeFileSync(path.join(context, "Dockerfile"), WRITE);
    writer.ok(["build", "-q", context]);
    readContext = writer.ownedDir("read");
    writeFileSync(path.join(readContext, "Dockerfile"), READ);
    out = writer.ownedDir("out");
  }, 300_000);

  async function newReader(): Promise<ModeEnv> {
    const reader = await setUpMode(mode, tempDir);
    readers.push(reader);
    return reader;
  }

  /** A new store with busybox, which builds READ and prints its report. */
  async function reportIn(seed: (reader: ModeEnv) => void): Promise<string> {
    const reader = await newReader();
    seed(reader);
    reader.ok(["build", "-q", "-t", "report", readContext]);
    return reader.ok(["run", "--rm", "report", "cat", "/report"]);
  }

  it("lists each mount with its id, size, last use and sharing", () => {
    const table = writer.ok(["cache", "mounts"]).split("\n");
    expect(table[0]).toMatch(/^ID\s+KEY\s+SIZE\s+LAST USED\s+SHARING$/);
    const numbers = table.find((line) => line.startsWith("numbers "));
    // seq 1 100000 writes 588,895 bytes.
    expect(numbers).toMatch(/^numbers\s+[0-9a-f]{12}\s+589kB\s+Less than a minute ago\s+locked$/);
    expect(table.find((line) => line.startsWith("pkgs "))).toMatch(/\sshared$/);
    const json = JSON.parse(writer.ok(["cache", "mounts", "--format", "json"])) as {
      id: string;
      size: number;
      target: string;
      base?: { uid: number };
    }[];
    expect(json.map((m) => m.id).sort()).toEqual(["numbers", "pkgs"]);
    expect(json.find((m) => m.id === "numbers")?.size).toBe(588_895);
    expect(json.find((m) => m.id === "pkgs")).toMatchObject({ target: "/cache", base: { uid: 1000 } });
    expect(writer.ok(["cache", "mounts", "-q"]).trim().split("\n")).toHaveLength(2);
  });

  it.each(["mounts.tar.zst", "mounts.tar.gz", "mounts.tar", "mounts-dir"])(
    "moves every mount to another store through %s, owners, modes and links kept",
    async (name) => {
      const file = path.join(out, name);
      const exported = writer.run(["cache", "export", "--all", "-o", file]);
      expect(exported.status, exported.stderr).toBe(0);
      expect(exported.stderr).toMatch(/^exported 2 cache mount\(s\), .* to .*: /);
      expect(await reportIn((reader) => reader.ok(["cache", "import", "-i", file]))).toBe(REPORT);
    },
    300_000,
  );

  it("moves mounts through a pipe (-o - and -i -)", async () => {
    const archive = writer.run(["cache", "export", "--id", "pkgs", "--id", "numbers", "-o", "-"]);
    expect(archive.status, archive.stderr).toBe(0);
    const report = await reportIn((reader) => {
      const imported = reader.run(["cache", "import", "-i", "-"], { input: archive.stdout });
      expect(imported.status, imported.stderr).toBe(0);
      expect(imported.stderr).toMatch(/^imported 2 cache mount\(s\)/);
    });
    expect(report).toBe(REPORT);
  }, 300_000);

  it("exports only the mounts named by --id", async () => {
    const file = path.join(out, "pkgs-only.tar.zst");
    writer.ok(["cache", "export", "--id", "pkgs", "-o", file]);
    const reader = await newReader();
    reader.ok(["cache", "import", "-i", file]);
    const ids = JSON.parse(reader.ok(["cache", "mounts", "--format", "json"])).map(
      (m: { id: string }) => m.id,
    );
    expect(ids).toEqual(["pkgs"]);
  }, 300_000);

  it("keeps the content of a mount the store already has", async () => {
    const file = path.join(out, "keep.tar.zst");
    writer.ok(["cache", "export", "--all", "-o", file]);
    const reader = await newReader();
    const own = reader.ownedDir("own");
    writeFileSync(
      path.join(own, "Dockerfile"),
      "FROM busybox\nRUN --mount=type=cache,id=numbers,target=/numbers,sharing=locked sh -c 'echo own > /numbers/list'\n",
    );
    reader.ok(["build", "-q", own]);
    const imported = reader.run(["cache", "import", "-i", file]);
    expect(imported.status, imported.stderr).toBe(0);
    expect(imported.stderr).toContain("imported 1 cache mount(s)");
    expect(imported.stderr).toContain("kept 1 the store already had (its own content): numbers");
    reader.ok(["build", "-q", "-t", "report", readContext]);
    expect(reader.ok(["run", "--rm", "report", "tail", "-n", "1", "/report"])).toBe("1\n");
  }, 300_000);

  it("says what is wrong with a command line, and writes nothing", () => {
    const cases: [string[], RegExp][] = [
      [["cache", "export", "--all"], /needs -o DIR/],
      [["cache", "export", "-o", path.join(out, "x.tar")], /takes --all or --id ID/],
      [["cache", "export", "--all", "--id", "pkgs", "-o", path.join(out, "x.tar")], /not both/],
      [["cache", "export", "--id", "nope", "-o", path.join(out, "x.tar")], /no cache mount with id "nope"/],
      [["cache", "import"], /needs -i DIR, -i FILE or -i -/],
      [["cache", "import", "-i", path.join(out, "missing.tar")], /cannot read .*missing\.tar \(ENOENT\)/],
    ];
    for (const [args, message] of cases) {
      const result = writer.run(args);
      expect(result.status, args.join(" ")).not.toBe(0);
      expect(result.stderr).toMatch(message);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    }
    expect(existsSync(path.join(out, "x.tar"))).toBe(false);
  });

  it("leaves no temp directory in the stores it imported into", () => {
    expect(readers.length).toBeGreaterThan(4);
    for (const reader of readers) {
      const names = spawnSync("ls", ["-A", path.join(reader.store, "cache-mounts")], { encoding: "utf8" });
      expect(names.stdout.split("\n").filter((n) => n.startsWith(".") && !n.endsWith(".lock"))).toEqual([]);
    }
  });
});
