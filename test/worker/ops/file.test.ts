/**
 * The file op (COPY, ADD, WORKDIR, heredoc files) on real snapshots: each case copies from a real
 * context directory onto a real base filesystem, and the result is judged by the layer the op
 * added and by the whole filesystem mounted, as a RUN step would see it.
 */
import { execFileSync } from "node:child_process";
import { chmod, link, lstat, mkdir, readFile, readlink, symlink, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { FileAction, FileOp } from "../../../solver/graph.js";
import type { FsResult } from "../../../solver/worker.js";
import { runFile } from "../../../worker/ops/file.js";
import { runMerge } from "../../../worker/ops/merge.js";
import { tempDirs } from "../../helpers/temp.js";
import { file, layerTar, mountsUnder, symlinkTo } from "../layers.js";
import { addedEntries, fsOfDirectory, type OpsFixture, opsFixture, withMounted } from "./helpers.js";

const tempDir = tempDirs();
const platform = { os: "linux", architecture: "amd64" };
let fixture: OpsFixture;
let base: FsResult;
let context: FsResult;
let contextDir: string;

type Copy = Extract<FileAction, { action: "copy" }>;

/** A COPY as the Dockerfile frontend lowers it (from the context, input 1). */
function copyAction(src: string, dest: string, extra: Partial<Copy> = {}): Copy {
  return {
    action: "copy",
    input: 1,
    src,
    dest,
    followSymlinks: true,
    copyDirContentsOnly: true,
    attemptUnpack: false,
    createDestPath: true,
    allowWildcard: true,
    allowEmptyWildcard: true,
    includePatterns: [],
    excludePatterns: [],
    ...extra,
  };
}

function onBase(...actions: FileAction[]): Promise<FsResult> {
  const op: FileOp = { kind: "file", base: 0, actions, platform };
  return runFile(op, [base, context], fixture.ctx);
}

async function readIn(fs: FsResult, inside: string): Promise<string> {
  return withMounted(fixture.ctx, fs, (root) => readFile(path.join(root, inside), "utf8"));
}

async function statIn(fs: FsResult, inside: string) {
  return withMounted(fixture.ctx, fs, (root) => lstat(path.join(root, inside)));
}

async function listIn(fs: FsResult, inside: string): Promise<string[]> {
  return withMounted(fixture.ctx, fs, async (root) =>
    execFileSync("find", ["."], { cwd: path.join(root, inside), encoding: "utf8" })
      .split("\n")
      .filter((l) => l !== "" && l !== ".")
      .sort(),
  );
}

beforeAll(async () => {
  fixture = await opsFixture();
  const baseDir = tempDir("base");
  await mkdir(path.join(baseDir, "etc"));
  await writeFile(
    path.join(baseDir, "etc", "passwd"),
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
  );
  await writeFile(path.join(baseDir, "etc", "group"), "root:x:0:\nstaff:x:50:\napp:x:1001:\n");
  await mkdir(path.join(baseDir, "existing"));
  await writeFile(path.join(baseDir, "existing", "kept.txt"), "kept\n");
  await symlink("/", path.join(baseDir, "escape"));
  await symlink("/etc/passwd", path.join(baseDir, "existing", "passwd-link"));
  base = await fsOfDirectory(fixture.ctx, baseDir, "base");

  contextDir = tempDir("context");
  await mkdir(path.join(contextDir, "src", "lib"), { recursive: true });
  await writeFile(path.join(contextDir, "a.txt"), "a\n");
  await mkdir(path.join(contextDir, "tree"));
  await writeFile(path.join(contextDir, "tree", "passwd-link"), "plain\n");
  await writeFile(path.join(contextDir, "b.txt"), "b\n");
  await writeFile(path.join(contextDir, "home.txt"), "home\n");
  await writeFile(path.join(contextDir, "homework.md"), "homework\n");
  await writeFile(path.join(contextDir, "src", "main.go"), "package main\n");
  await writeFile(path.join(contextDir, "src", "lib", "util.go"), "package lib\n");
  await writeFile(path.join(contextDir, "src", "lib", "notes.txt"), "notes\n");
  await chmod(path.join(contextDir, "src", "main.go"), 0o750);
  await utimes(
    path.join(contextDir, "src", "main.go"),
    new Date(1_600_000_000_000),
    new Date(1_600_000_000_000),
  );
  await symlink("src/main.go", path.join(contextDir, "main-link"));
  await link(path.join(contextDir, "a.txt"), path.join(contextDir, "a-hardlink.txt"));
  const archiveSrc = tempDir("archive");
  await mkdir(path.join(archiveSrc, "pkg", "bin"), { recursive: true });
  await writeFile(path.join(archiveSrc, "pkg", "bin", "tool"), "#!/bin/sh\necho tool\n");
  await chmod(path.join(archiveSrc, "pkg", "bin", "tool"), 0o755);
  execFileSync("tar", [
    "-czf",
    path.join(contextDir, "pkg.tar.gz"),
    "--owner=7",
    "--group=8",
    "-C",
    archiveSrc,
    "pkg",
  ]);
  execFileSync("tar", ["-cJf", path.join(contextDir, "pkg.tar.xz"), "-C", archiveSrc, "pkg"]);
  // Named like an archive, but not one: ADD copies it as it is.
  await writeFile(path.join(contextDir, "fake.tar.gz"), "not really gzip\n");
  // Not an archive either, though its first block has a numeric field the tar package cannot
  // decode (a byte with the high bit set, as in random data): the header Go's tar reads is invalid.
  const binary = Buffer.alloc(1024, "x");
  binary[100] = 0x90;
  await writeFile(path.join(contextDir, "random.bin"), binary);
  context = await fsOfDirectory(fixture.ctx, contextDir, "context");
});

afterEach(async () => {
  expect(await mountsUnder(fixture.root)).toEqual([]);
});

afterAll(async () => {
  await fixture.cleanup();
});

describe("COPY semantics", () => {
  it("copies a single file to a file path, keeping its mode and mtime", async () => {
    const fs = await onBase(copyAction("/src/main.go", "/app/main.go"));
    expect(fs.layers.slice(0, -1)).toEqual(base.layers);
    const added = await addedEntries(fixture.ctx, fs);
    expect(added.get("app/main.go")).toMatchObject({
      type: "File",
      mode: 0o750,
      uid: 0,
      gid: 0,
      mtime: 1_600_000_000,
      content: "package main\n",
    });
    expect(await readIn(fs, "existing/kept.txt")).toBe("kept\n");
  });

  it("copies into a directory when the destination ends with / or is an existing directory", async () => {
    const slash = await onBase(copyAction("/a.txt", "/new/"));
    expect(await readIn(slash, "new/a.txt")).toBe("a\n");
    const existing = await onBase(copyAction("/a.txt", "/existing"));
    expect(await readIn(existing, "existing/a.txt")).toBe("a\n");
    expect(await readIn(existing, "existing/kept.txt")).toBe("kept\n");
  });

  it("copies a directory's contents, not the directory itself", async () => {
    const fs = await onBase(copyAction("/src", "/app"));
    expect(await listIn(fs, "app")).toEqual(["./lib", "./lib/notes.txt", "./lib/util.go", "./main.go"]);
  });

  it("copies what a glob matches, * not crossing /", async () => {
    const fs = await onBase(copyAction("/src/*.go", "/app/"));
    expect(await listIn(fs, "app")).toEqual(["./main.go"]);
    const several = await onBase(copyAction("/*.txt", "/texts/"));
    expect(await listIn(several, "texts")).toEqual(["./a-hardlink.txt", "./a.txt", "./b.txt", "./home.txt"]);
  });

  it("names a source that does not exist", async () => {
    await expect(onBase(copyAction("/missing.txt", "/app/"))).rejects.toThrow("/missing.txt: not found");
    await expect(
      onBase(copyAction("/nothing-*.txt", "/app/", { allowEmptyWildcard: false })),
    ).rejects.toThrow("/nothing-*.txt: not found");
  });

  it("copies nothing, without error, for a wildcard that matches nothing when that is allowed", async () => {
    const fs = await onBase(copyAction("/nothing-*.txt", "/app/"));
    // As BuildKit: an empty match returns before the destination is made.
    await expect(statIn(fs, "app")).rejects.toThrow(/ENOENT/);
  });

  it("refuses a wildcard whose directory is not in the source, as BuildKit does (its walk starts there)", async () => {
    await expect(onBase(copyAction("/missing/*.txt", "/app/"))).rejects.toThrow(
      /\/missing\/\*\.txt: not found \(the source has no \/missing/,
    );
    // A directory that is there but holds no match still copies nothing.
    const fs = await onBase(copyAction("/src/nothing-*.txt", "/app/"));
    await expect(statIn(fs, "app")).rejects.toThrow(/ENOENT/);
  });

  it("gives --chown names from the destination's passwd and group", async () => {
    const byName = await onBase(copyAction("/a.txt", "/owned/", { chown: { user: "app" } }));
    const entries = await addedEntries(fixture.ctx, byName);
    expect(entries.get("owned/a.txt")).toMatchObject({ uid: 1000, gid: 1001 });
    // The directory the copy made for the destination is the user's too, as BuildKit makes it.
    expect(entries.get("owned/")).toMatchObject({ uid: 1000, gid: 1001 });
    const withGroup = await onBase(
      copyAction("/a.txt", "/owned/", { chown: { user: "app", group: "staff" } }),
    );
    expect((await addedEntries(fixture.ctx, withGroup)).get("owned/a.txt")).toMatchObject({
      uid: 1000,
      gid: 50,
    });
    const numeric = await onBase(copyAction("/a.txt", "/owned/", { chown: { user: "4242" } }));
    expect((await addedEntries(fixture.ctx, numeric)).get("owned/a.txt")).toMatchObject({
      uid: 4242,
      gid: 4242,
    });
  });

  it("owns by root a --chown user the destination does not know, and keeps the gid for an unknown group, as BuildKit does, saying so", async () => {
    fixture.warnings.length = 0;
    const unknownUser = await onBase(copyAction("/a.txt", "/x/", { chown: { user: "nobody-here" } }));
    expect((await addedEntries(fixture.ctx, unknownUser)).get("x/a.txt")).toMatchObject({ uid: 0, gid: 0 });
    expect(fixture.warnings).toEqual([
      "user nobody-here: not in the destination's /etc/passwd; owned by uid 0 and gid 0, as BuildKit does",
    ]);
    fixture.warnings.length = 0;
    const unknownGroup = await onBase(
      copyAction("/a.txt", "/x/", { chown: { user: "app", group: "wheel" } }),
    );
    expect((await addedEntries(fixture.ctx, unknownGroup)).get("x/a.txt")).toMatchObject({
      uid: 1000,
      gid: 1001,
    });
    expect(fixture.warnings).toEqual([
      "group wheel: not in the destination's /etc/group; gid 1001 kept, as BuildKit does",
    ]);
  });

  it("sets --chmod on files and directories, octal or symbolic", async () => {
    const octal = await onBase(copyAction("/src", "/app/", { chmod: "640" }));
    const entries = await addedEntries(fixture.ctx, octal);
    expect(entries.get("app/main.go")?.mode).toBe(0o640);
    expect(entries.get("app/lib/")?.mode).toBe(0o640);
    const symbolic = await onBase(copyAction("/src", "/app/", { chmod: "go-rwx,u+x" }));
    const symbolicEntries = await addedEntries(fixture.ctx, symbolic);
    expect(symbolicEntries.get("app/lib/util.go")?.mode).toBe(0o700);
    expect(symbolicEntries.get("app/main.go")?.mode).toBe(0o750 & ~0o077);
  });

  it("gives the directories it creates for the destination an octal --chmod's mode, as BuildKit does", async () => {
    const octal = await onBase(copyAction("/a.txt", "/new/sub/a.txt", { chmod: "770" }));
    const entries = await addedEntries(fixture.ctx, octal);
    expect(entries.get("new/")?.mode).toBe(0o770);
    expect(entries.get("new/sub/")?.mode).toBe(0o770);
    expect(entries.get("new/sub/a.txt")?.mode).toBe(0o770);
    const none = await onBase(copyAction("/a.txt", "/new/sub/", { chmod: "0" }));
    expect(await readIn(none, "new/sub/a.txt")).toBe("a\n");
    expect((await addedEntries(fixture.ctx, none)).get("new/sub/")?.mode).toBe(0);
    const symbolic = await onBase(copyAction("/a.txt", "/new/sub/a.txt", { chmod: "u+x" }));
    expect((await addedEntries(fixture.ctx, symbolic)).get("new/")?.mode).toBe(0o755);
    const existing = await onBase(copyAction("/a.txt", "/existing/sub/a.txt", { chmod: "700" }));
    expect((await statIn(existing, "existing")).mode & 0o7777).toBe(0o755);
  });

  it("refuses a --parents copy whose required path is missing, and copies one that exists", async () => {
    await expect(
      onBase(copyAction("/", "/out/", { includePatterns: ["src/nope.go"], requiredPaths: ["/src/nope.go"] })),
    ).rejects.toThrow('"/src/nope.go": not found');
    const fs = await onBase(
      copyAction("/", "/out/", { includePatterns: ["src/main.go"], requiredPaths: ["/src/main.go"] }),
    );
    expect(await listIn(fs, "out")).toEqual(["./src", "./src/main.go"]);
  });

  it("keeps the directories below the /./ pivot with --parents", async () => {
    const fs = await onBase(copyAction("/", "/out/", { includePatterns: ["src/lib/*.go"] }));
    expect(await listIn(fs, "out")).toEqual(["./src", "./src/lib", "./src/lib/util.go"]);
  });

  it("leaves out what --exclude matches, below a directory and among glob matches", async () => {
    const fs = await onBase(copyAction("/src", "/app/", { excludePatterns: ["**/*.txt"] }));
    expect(await listIn(fs, "app")).toEqual(["./lib", "./lib/util.go", "./main.go"]);
    const globbed = await onBase(copyAction("/hom*", "/home/", { excludePatterns: ["*.txt"] }));
    expect(await listIn(globbed, "home")).toEqual(["./homework.md"]);
  });

  it("follows a symlink named as the source, and copies symlinks inside a directory as symlinks", async () => {
    const followed = await onBase(copyAction("/main-link", "/app/main.go"));
    expect((await statIn(followed, "app/main.go")).isFile()).toBe(true);
    const kept = await onBase(copyAction("/main-link", "/app/link", { followSymlinks: false }));
    expect(await withMounted(fixture.ctx, kept, (root) => readlink(path.join(root, "app/link")))).toBe(
      "src/main.go",
    );
  });

  it("keeps hard links between copied files", async () => {
    const fs = await onBase(copyAction("/", "/ctx/"));
    const entries = await addedEntries(fixture.ctx, fs);
    const pair = [entries.get("ctx/a-hardlink.txt"), entries.get("ctx/a.txt")];
    expect(pair.map((e) => e?.type).sort()).toEqual(["File", "Link"]);
  });

  it("resolves the destination inside the filesystem: a symlink to / does not lead to the host", async () => {
    const fs = await onBase(copyAction("/a.txt", "/escape/tmp/"));
    expect(await readIn(fs, "tmp/a.txt")).toBe("a\n");
    expect(await lstat("/tmp/a.txt").catch(() => undefined)).toBeUndefined();
  });

  it("replaces an existing file, and follows a destination symlink inside the filesystem, as BuildKit does", async () => {
    const hostPasswd = await readFile("/etc/passwd", "utf8");
    const fs = await onBase(
      copyAction("/a.txt", "/existing/kept.txt"),
      copyAction("/b.txt", "/existing/passwd-link"),
    );
    expect(await readIn(fs, "existing/kept.txt")).toBe("a\n");
    // The link (to /etc/passwd) led to the image's /etc/passwd, never the host's.
    expect((await statIn(fs, "existing/passwd-link")).isSymbolicLink()).toBe(true);
    expect(await readIn(fs, "etc/passwd")).toBe("b\n");
    expect(await readFile("/etc/passwd", "utf8")).toBe(hostPasswd);
  });

  it("replaces a symlink met inside a copied directory rather than writing through it", async () => {
    const fs = await onBase(copyAction("/tree", "/existing"));
    expect((await statIn(fs, "existing/passwd-link")).isFile()).toBe(true);
    expect(await readIn(fs, "existing/passwd-link")).toBe("plain\n");
    expect(await readIn(fs, "etc/passwd")).toContain("app:x:1000");
  });

  it("refuses to replace a directory with a file", async () => {
    await expect(onBase(copyAction("/a.txt", "/existing/kept.txt/"))).rejects.toThrow(
      /a file is in the way|not a directory/,
    );
  });
});

describe("COPY --from a stage", () => {
  it("reads a source of several layers through one view of them, owners kept", async () => {
    const stage = await onBase(copyAction("/a.txt", "/out/a.txt", { chown: { user: "app" } }), {
      action: "rm",
      path: "/existing/kept.txt",
      allowNotFound: false,
      allowWildcard: false,
    });
    expect(stage.layers.length).toBe(2);
    const op: FileOp = {
      kind: "file",
      base: 0,
      actions: [
        copyAction("/out/a.txt", "/from-stage/", { input: 1 }),
        copyAction("/existing/*", "/from-stage/", { input: 1 }),
      ],
      platform,
    };
    const fs = await runFile(op, [base, stage], fixture.ctx);
    const entries = await addedEntries(fixture.ctx, fs);
    expect(entries.get("from-stage/a.txt")).toMatchObject({ uid: 1000, gid: 1001, content: "a\n" });
    // The stage deleted kept.txt: its view has only the link left.
    expect([...entries.keys()].filter((p) => p.startsWith("from-stage/"))).toEqual([
      "from-stage/",
      "from-stage/a.txt",
      "from-stage/passwd-link",
    ]);
  });
});

describe("ADD of local archives", () => {
  it("extracts a tar.gz into the destination, owners and modes from the archive", async () => {
    const fs = await onBase(copyAction("/pkg.tar.gz", "/opt/", { attemptUnpack: true }));
    expect(await readIn(fs, "opt/pkg/bin/tool")).toBe("#!/bin/sh\necho tool\n");
    const tool = (await addedEntries(fixture.ctx, fs)).get("opt/pkg/bin/tool");
    expect(tool).toMatchObject({ mode: 0o755, uid: 7, gid: 8 });
  });

  it("gives every extracted entry the owner ADD --chown names", async () => {
    const fs = await onBase(
      copyAction("/pkg.tar.gz", "/opt/", { attemptUnpack: true, chown: { user: "100", group: "200" } }),
    );
    const entries = await addedEntries(fixture.ctx, fs);
    expect(entries.get("opt/pkg/bin/tool")).toMatchObject({ mode: 0o755, uid: 100, gid: 200 });
    expect(entries.get("opt/pkg/")).toMatchObject({ uid: 100, gid: 200 });
    expect(entries.get("opt/")).toMatchObject({ uid: 100, gid: 200 });
  });

  it("extracts a tar.xz, recognized by content", async () => {
    const fs = await onBase(copyAction("/pkg.tar.xz", "/opt", { attemptUnpack: true }));
    expect(await readIn(fs, "opt/pkg/bin/tool")).toBe("#!/bin/sh\necho tool\n");
  });

  it("keeps an archive's entries inside the destination: links resolve there, .. that climbs out is refused", async () => {
    const dir = tempDir("hostile");
    await writeFile(
      path.join(dir, "links.tar"),
      await layerTar([symlinkTo("conf", "/etc"), file("conf/planted", "planted\n")]),
    );
    await writeFile(path.join(dir, "climb.tar"), await layerTar([file("../../climbed", "x\n")]));
    const hostile = await fsOfDirectory(fixture.ctx, dir, "hostile");
    const op = (src: string): FileOp => ({
      kind: "file",
      base: 0,
      actions: [copyAction(src, "/unpacked/", { attemptUnpack: true })],
      platform,
    });
    const fs = await runFile(op("/links.tar"), [base, hostile], fixture.ctx);
    // The link to /etc led to the destination's own etc (as under Docker's chroot for ADD), not the host's.
    expect(await readIn(fs, "unpacked/etc/planted")).toBe("planted\n");
    expect(await lstat("/etc/planted").catch(() => undefined)).toBeUndefined();
    await expect(runFile(op("/climb.tar"), [base, hostile], fixture.ctx)).rejects.toThrow(
      /climb.tar: its entry "..\/..\/climbed" points outside the destination/,
    );
  });

  it("copies a file that only looks like an archive by name or has no valid tar header, and any archive when unpacking is off", async () => {
    const fake = await onBase(copyAction("/fake.tar.gz", "/opt/", { attemptUnpack: true }));
    expect(await readIn(fake, "opt/fake.tar.gz")).toBe("not really gzip\n");
    const binary = await onBase(copyAction("/random.bin", "/opt/", { attemptUnpack: true }));
    const copied = await statIn(binary, "opt/random.bin");
    expect([copied.isFile(), copied.size]).toEqual([true, 1024]);
    const kept = await onBase(copyAction("/pkg.tar.gz", "/opt/", { attemptUnpack: false }));
    expect((await statIn(kept, "opt/pkg.tar.gz")).isFile()).toBe(true);
  });
});

describe("mkfile, mkdir, rm", () => {
  it("copies a heredoc file made by mkfile on an empty filesystem", async () => {
    const heredoc = await runFile(
      {
        kind: "file",
        actions: [{ action: "mkfile", path: "/run.sh", data: "#!/bin/sh\necho hi\n", mode: 0o755 }],
        platform,
      },
      [],
      fixture.ctx,
    );
    expect(heredoc.layers).toHaveLength(1);
    const op: FileOp = {
      kind: "file",
      base: 0,
      actions: [
        copyAction("/run.sh", "/usr/local/bin/run.sh", { followSymlinks: false, copyDirContentsOnly: false }),
      ],
      platform,
    };
    const fs = await runFile(op, [base, heredoc], fixture.ctx);
    expect((await addedEntries(fixture.ctx, fs)).get("usr/local/bin/run.sh")).toMatchObject({
      mode: 0o755,
      content: "#!/bin/sh\necho hi\n",
    });
  });

  it("makes a WORKDIR with its parents, owned by a user named in the destination", async () => {
    const fs = await onBase({
      action: "mkdir",
      path: "/srv/app",
      mode: 0o755,
      makeParents: true,
      chown: { user: "app" },
    });
    const entries = await addedEntries(fixture.ctx, fs);
    expect(entries.get("srv/app/")).toMatchObject({ mode: 0o755, uid: 1000, gid: 1001 });
    // `USER docker:root` before docker exists, then WORKDIR: BuildKit makes it root's.
    const unknown = await onBase({
      action: "mkdir",
      path: "/srv/app",
      mode: 0o755,
      makeParents: true,
      chown: { user: "docker", group: "root" },
    });
    expect((await addedEntries(fixture.ctx, unknown)).get("srv/app/")).toMatchObject({ uid: 0, gid: 0 });
  });

  it("removes files, and says so when one is missing unless that is allowed", async () => {
    const fs = await onBase({
      action: "rm",
      path: "/existing/kept.txt",
      allowNotFound: false,
      allowWildcard: false,
    });
    expect(await listIn(fs, "existing")).toEqual(["./passwd-link"]);
    expect([...(await addedEntries(fixture.ctx, fs)).keys()]).toContain("existing/.wh.kept.txt");
    await expect(
      onBase({ action: "rm", path: "/nope", allowNotFound: false, allowWildcard: false }),
    ).rejects.toThrow("cannot remove /nope: it does not exist");
    await onBase({ action: "rm", path: "/nope", allowNotFound: true, allowWildcard: false });
  });
});

describe("merge (COPY --link)", () => {
  it("stacks a layer made on an empty filesystem onto the base, copying nothing", async () => {
    const linked = await runFile(
      { kind: "file", actions: [copyAction("/a.txt", "/linked/")], platform },
      [context, context],
      fixture.ctx,
    );
    expect(linked.layers).toHaveLength(1);
    const merged = await runMerge({ kind: "merge" }, [base, linked]);
    expect(merged.layers).toEqual([...base.layers, ...linked.layers]);
    expect(await readIn(merged, "linked/a.txt")).toBe("a\n");
    expect(await readIn(merged, "existing/kept.txt")).toBe("kept\n");
  });
});
