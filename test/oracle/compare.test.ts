/**
 * The oracle's judge (compare.ts) without BuildKit: two root filesystem tars that differ in one
 * way each must show that one difference, and equal ones none; the kept rules (kept.ts) explain
 * only the shape they describe.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Header } from "tar";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";
import {
  type Built,
  type Difference,
  differences,
  failedOnMountStub,
  mountTargets,
  rootfsOfTar,
} from "./compare.js";
import { explainedBy, explainingTbuildFailure, KEPT } from "./kept.js";

const tempDir = tempDirs();

interface Item {
  name: string;
  type?: "File" | "Directory" | "SymbolicLink" | "Link";
  content?: string;
  mode?: number;
  uid?: number;
  linkpath?: string;
  xattrs?: Record<string, string>;
}

function block(header: ConstructorParameters<typeof Header>[0]): Buffer {
  const out = Buffer.alloc(512);
  new Header(header).encode(out, 0);
  return out;
}

function padded(data: Buffer): Buffer[] {
  return [data, Buffer.alloc((512 - (data.length % 512)) % 512)];
}

/** A tar of `items`, with PAX `SCHILY.xattr` records where an item has xattrs. */
function tarOf(items: Item[]): string {
  const blocks: Buffer[] = [];
  for (const item of items) {
    const type = item.type ?? "File";
    const body = Buffer.from(item.content ?? "");
    if (item.xattrs) {
      const records = Object.entries(item.xattrs).map(([k, v]) => {
        const text = ` SCHILY.xattr.${k}=${v}\n`;
        // A record's length counts its own digits.
        let length = text.length + 1;
        while (String(length).length + text.length !== length) length++;
        return Buffer.from(`${length}${text}`);
      });
      const pax = Buffer.concat(records);
      blocks.push(
        block({ path: "PaxHeader", type: "ExtendedHeader", size: pax.length, mode: 0o644 }),
        ...padded(pax),
      );
    }
    blocks.push(
      block({
        path: item.name,
        type,
        mode: item.mode ?? (type === "Directory" ? 0o755 : 0o644),
        uid: item.uid ?? 0,
        gid: 0,
        size: type === "File" ? body.length : 0,
        mtime: new Date(0),
        linkpath: item.linkpath,
      }),
    );
    if (type === "File" && body.length > 0) blocks.push(...padded(body));
  }
  blocks.push(Buffer.alloc(1024));
  const file = path.join(tempDir("oracle-compare"), "rootfs.tar");
  writeFileSync(file, Buffer.concat(blocks));
  return file;
}

const BASE: Item[] = [
  { name: "etc/", type: "Directory" },
  { name: "etc/a", content: "a" },
  { name: "etc/link", type: "SymbolicLink", linkpath: "a" },
  { name: "etc/b", content: "b", xattrs: { "user.x": "1" } },
  { name: "etc/b2", type: "Link", linkpath: "etc/b" },
];

async function built(items: Item[], history: string[] = ["RUN x"]): Promise<Built> {
  return { rootfs: await rootfsOfTar(tarOf(items)), config: { Env: ["A=1"], history }, mountPoints: [] };
}

const changed = (name: string, change: Partial<Item>) =>
  BASE.map((item) => (item.name === name ? { ...item, ...change } : item));

describe("the oracle's comparison", () => {
  it("finds nothing between equal results, and keeps hard links, symlinks and xattrs", async () => {
    const ours = await built(BASE);
    expect(differences(ours, await built(BASE))).toEqual([]);
    expect(ours.rootfs.get("etc/b2")).toMatchObject({ type: "File", links: ["etc/b", "etc/b2"] });
    expect(ours.rootfs.get("etc/link")).toMatchObject({ target: "a" });
    expect(ours.rootfs.get("etc/b")?.xattrs).toEqual([`user.x=${Buffer.from("1").toString("hex")}`]);
  });

  it.each([
    ["a mode", changed("etc/a", { mode: 0o600 }), /^\/etc\/a: tbuild File 0600/],
    ["an owner", changed("etc/a", { uid: 7 }), /^\/etc\/a: tbuild File 0644 7:0/],
    ["content", changed("etc/a", { content: "A" }), /^\/etc\/a: .*tbuild's content "A", BuildKit's "a"/],
    [
      "a symlink target",
      changed("etc/link", { linkpath: "b" }),
      /^\/etc\/link: tbuild .* -> b; BuildKit .* -> a/,
    ],
    ["an xattr", changed("etc/b", { xattrs: { "user.x": "2" } }), /^\/etc\/b: tbuild .*xattrs user\.x=32/],
    [
      "a hard link made a copy",
      changed("etc/b2", { type: "File", content: "b", linkpath: undefined }),
      /^\/etc\/b2: /,
    ],
    ["a missing path", BASE.filter((i) => i.name !== "etc/a"), /^\/etc\/a: only BuildKit's result has it/],
    ["an extra path", [...BASE, { name: "etc/c", content: "c" }], /^\/etc\/c: only tbuild's result has it/],
  ])("shows %s", async (_what, items, shown) => {
    const found = differences(await built(items), await built(BASE)).map((d) => d.text);
    expect(found.length).toBeGreaterThan(0);
    expect(
      found.some((text) => shown.test(text)),
      found.join("\n"),
    ).toBe(true);
  });

  it("shows config fields and history entries one by one", async () => {
    const ours = await built(BASE, ["RUN x", "ENV A=1"]);
    ours.config.Env = ["A=2"];
    const found = differences(ours, await built(BASE, ["RUN x", "ENV A=2"])).map((d) => d.key);
    expect(found).toEqual(["config Env", "history[1]"]);
  });

  it("sets aside BuildKit 0.8's empty mount points, and nothing that holds a file", async () => {
    const theirs = await built([
      ...BASE,
      { name: "proc/", type: "Directory" },
      { name: "cache/", type: "Directory" },
      { name: "cache/sub/", type: "Directory" },
      { name: "sys/", type: "Directory" },
      { name: "sys/kept", content: "x" },
    ]);
    theirs.mountPoints = ["proc", "sys", ...mountTargets("RUN --mount=type=cache,target=/cache/sub true")];
    const found = differences(await built(BASE), theirs).map((d) => d.key);
    expect(found).toEqual(["/sys", "/sys/kept"]);
  });

  it("sets aside the lines of a RUN step's listing that name those mount points, and no other line", async () => {
    const listing = "/dst directory 755 0:0\n/dst/a regular file 644 0:0 2 1\n";
    const withStub = (extra: string) => built([...BASE, { name: "tmp/obs", content: `${listing}${extra}` }]);
    const ours = await built([...BASE, { name: "tmp/obs", content: listing }]);
    const theirs = await withStub("/m directory 755 0:0\n");
    theirs.mountPoints = ["dev", "m"];
    expect(differences(ours, theirs)).toEqual([]);
    for (const extra of ["/other directory 755 0:0\n", "/m/x regular file 644 0:0 2 1\n"]) {
      const other = await withStub(extra);
      other.mountPoints = ["dev", "m"];
      expect(differences(ours, other).map((d) => d.key)).toEqual(["/tmp/obs"]);
    }
  });
});

describe("BuildKit 0.8's failures on its mount stubs", () => {
  const error =
    'runc run failed: unable to start container process: error during container init: error mounting "/tmp/x/a.txt" to rootfs at "/m": mount /tmp/x/a.txt:/m (via /proc/self/fd/6), flags: 0x5001: not a directory';
  const twice =
    "RUN --mount=type=bind,source=.,target=/m ls\nRUN --mount=type=bind,source=a.txt,target=/m ls";

  it("are told by runc's error at a target an earlier RUN mounted on too, and nothing else", () => {
    expect(failedOnMountStub(error, twice)).toBe(true);
    expect(failedOnMountStub(error, "RUN --mount=type=bind,source=a.txt,target=/m ls")).toBe(false);
    expect(failedOnMountStub(error.replace("not a directory", "permission denied"), twice)).toBe(false);
    expect(failedOnMountStub(error, twice.replaceAll("/m", "/n"))).toBe(false);
  });
});

describe("the kept differences", () => {
  const rule = (id: string) => KEPT.find((k) => k.id === id)!;
  const history = (ours: string, theirs: string): Difference => ({
    kind: "history",
    key: "history[0]",
    ours,
    theirs,
    text: "",
  });

  it("explain only the shape they describe", () => {
    const copyFlags = rule("history-copy-flags").explains!;
    expect(copyFlags(history("COPY --chown=1:2 a /b # buildkit", "COPY a /b # buildkit"), "")).toBe(true);
    expect(copyFlags(history("COPY --chown=1:2 a /c # buildkit", "COPY a /b # buildkit"), "")).toBe(false);
    const args = rule("history-arg-values").explains!;
    expect(args(history("ARG a=1 b=2 (empty layer)", "ARG a b=2 (empty layer)"), "")).toBe(true);
    expect(args(history("ARG a=1 b=3 (empty layer)", "ARG a b=2 (empty layer)"), "")).toBe(false);
    const expose = rule("history-expose-format").explains!;
    expect(
      expose(
        history("EXPOSE [80/tcp 53/udp] (empty layer)", "EXPOSE map[53/udp:{} 80/tcp:{}] (empty layer)"),
        "",
      ),
    ).toBe(true);
    expect(
      expose(history("EXPOSE [80/tcp] (empty layer)", "EXPOSE map[53/udp:{} 80/tcp:{}] (empty layer)"), ""),
    ).toBe(false);
    const once = rule("history-run-args-once").explains!;
    expect(once(history("RUN |2 a=2 b=1 /bin/sh -c ls", "RUN |3 a=2 b=1 a=2 /bin/sh -c ls"), "")).toBe(true);
    expect(once(history("RUN |2 a=2 b=1 /bin/sh -c ls", "RUN |2 a=2 b=1 /bin/sh -c ls -l"), "")).toBe(false);
  });
});

describe("the kept differences of modes, in the root filesystem and in a RUN step's listing", () => {
  const path = (ours: unknown, theirs: unknown): Difference => ({
    kind: "path",
    key: "/x",
    ours,
    theirs,
    text: "",
  });
  const entry = (type: string, mode: string) => ({ type, mode, owner: "0:0", sha256: "x" });
  /** The ids of the rules explaining a mode difference of a path of `type`. */
  const byMode = (type: string, ours: string, theirs: string, dockerfile: string) =>
    explainedBy(path(entry(type, ours), entry(type, theirs)), dockerfile).map((k) => k.id);
  /** A file holding a listing (stat's `%n %F %a %u:%g[ %s %h]`, then md5sums). */
  const seen = (listing: string) => ({
    type: "File",
    mode: "0644",
    owner: "0:0",
    sha256: listing,
    small: listing,
  });
  const byListing = (ours: string, theirs: string, dockerfile: string) =>
    explainedBy(path(seen(ours), seen(theirs)), dockerfile)
      .map((k) => k.id)
      .sort();

  it("explain a directory a --chmod copy made, 0755 in BuildKit 0.8's result, and no other mode", () => {
    expect(byMode("Directory", "0644", "0755", "COPY --chmod=644 a /out")).toEqual([
      "copy-chmod-created-dir",
    ]);
    expect(byMode("Directory", "0600", "0755", "ADD --chmod=600 a /out/")).toEqual([
      "copy-chmod-created-dir",
    ]);
    expect(byMode("Directory", "0600", "0755", "COPY --chmod=644 a /out")).toEqual([]);
    expect(byMode("Directory", "0600", "0700", "COPY --chmod=600 a /out")).toEqual([]);
  });

  it("explain BuildKit 0.8 keeping a file's special bits under --chmod, and no other mode", () => {
    expect(byMode("File", "0600", "4600", "COPY --chmod=0600 b /")).toEqual(["copy-chmod-special-bits"]);
    expect(byMode("File", "0600", "2600", "ADD --chmod=600 b /")).toEqual(["copy-chmod-special-bits"]);
    expect(byMode("File", "0600", "4700", "COPY --chmod=0600 b /")).toEqual([]);
    expect(byMode("File", "0600", "0644", "COPY --chmod=0600 b /")).toEqual([]);
    expect(byMode("File", "0600", "4600", "COPY --chmod=0644 b /")).toEqual([]);
    expect(byMode("File", "0600", "4600", "COPY b /")).toEqual([]);
  });

  it("explain a listing whose lines differ only so, each line by a rule, and no other line", () => {
    const ours = "/out directory 600 0:0\n/out/b regular file 600 0:0 2 1\nabc  /out/b\n";
    const dockerfile = "COPY --chmod=0600 b /out/";
    const both = ours.replace("directory 600", "directory 755").replace("file 600", "file 4600");
    expect(byListing(ours, both, dockerfile)).toEqual(["copy-chmod-created-dir", "copy-chmod-special-bits"]);
    expect(byListing(ours, ours.replace("directory 600", "directory 755"), dockerfile)).toEqual([
      "copy-chmod-created-dir",
    ]);
    expect(byListing(ours, both, "COPY --chmod=0644 b /out/")).toEqual([]);
    expect(byListing(ours, ours.replace("directory 600", "directory 700"), dockerfile)).toEqual([]);
    expect(byListing(ours, ours.replace("file 600 0:0 2 1", "file 4600 0:0 2 2"), dockerfile)).toEqual([]);
    expect(byListing(ours, both.replace("abc", "abd"), dockerfile)).toEqual([]);
  });

  it("explain what BuildKit's step listed below such a directory that tbuild's closed to the step's user", () => {
    const ours = "/out directory 600 1000:1000\n/m regular file 644 0:0 2 1\n";
    const below = "/out/b regular file 600 1000:1000 2 1\nmd5sum: can't open '/out/b': Permission denied\n";
    const theirs = ours.replace("directory 600", `directory 755`).replace("/m ", `${below}/m `);
    const dockerfile = "COPY --chown=1000:1000 --chmod=0600 b /out/\nUSER nobody";
    expect(byListing(ours, theirs, dockerfile)).toEqual(["copy-chmod-created-dir"]);
    expect(byListing(ours, theirs.replace("/m regular file 644", "/m regular file 600"), dockerfile)).toEqual(
      [],
    );
    const open = ours.replace("directory 600", "directory 755");
    expect(byListing(open, theirs, "COPY --chown=1000:1000 --chmod=0755 b /out/")).toEqual([]);
  });
});

describe("the kept difference of link counts in bind mounts of the context", () => {
  const listing = (links: number) => ({
    type: "File",
    mode: "0644",
    owner: "0:0",
    sha256: String(links),
    small: `/m regular file 644 0:0 2 ${links}\nabc  /m\n`,
  });
  const byListing = (ours: number, theirs: number, dockerfile: string) =>
    explainedBy(
      { kind: "path", key: "/tmp/obs", ours: listing(ours), theirs: listing(theirs), text: "" },
      dockerfile,
    ).map((k) => k.id);

  it("explains fewer links in tbuild's listing of a file under a context bind mount, and nothing else", () => {
    const mount = "RUN --mount=type=bind,source=a.txt,target=/m ls";
    expect(byListing(1, 2, mount)).toEqual(["bind-context-link-count"]);
    expect(byListing(2, 1, mount)).toEqual([]);
    expect(byListing(1, 2, "RUN --mount=type=bind,from=s0,source=a.txt,target=/m ls")).toEqual([]);
    expect(byListing(1, 2, "RUN --mount=type=bind,source=a.txt,target=/n ls")).toEqual([]);
  });
});

describe("the kept difference of directories .dockerignore excludes", () => {
  const dir = { type: "Directory", mode: "0755", owner: "0:0" };
  const onlyTheirs = (key: string): Difference => ({ kind: "path", key, theirs: dir, text: "" });
  const ignore = "logs\n!logs/keep.log\n";

  it("explains a directory with an exception below it only in BuildKit's result, and no other", () => {
    const ids = (d: Difference, dockerignore: string) =>
      explainedBy(d, "COPY . /app/", dockerignore).map((k) => k.id);
    expect(ids(onlyTheirs("/app/logs"), ignore)).toEqual(["dockerignore-excluded-dir-sent"]);
    expect(ids(onlyTheirs("/logs"), ignore)).toEqual(["dockerignore-excluded-dir-sent"]);
    expect(ids(onlyTheirs("/app/logs"), "logs\n")).toEqual([]);
    expect(ids(onlyTheirs("/app/src"), ignore)).toEqual([]);
    expect(ids({ ...onlyTheirs("/app/logs"), theirs: { ...dir, type: "File" } }, ignore)).toEqual([]);
  });

  it("explains tbuild failing to copy such a directory by name, and no other failure", () => {
    const error = "ERROR: /logs: not found (no file or directory of the source matches it)";
    expect(explainingTbuildFailure(error, ignore)?.id).toBe("dockerignore-excluded-dir-sent");
    expect(explainingTbuildFailure(error, "logs\n")).toBeUndefined();
    expect(explainingTbuildFailure(error.replace("logs", "src"), ignore)).toBeUndefined();
  });

  it("explains it in a RUN step's listing, as a line only BuildKit's has", () => {
    const listed = (listing: string) => ({
      type: "File",
      mode: "0644",
      owner: "0:0",
      sha256: listing,
      small: listing,
    });
    const ours = "/app directory 755 0:0\n/app/a regular file 644 0:0 2 1\n";
    const theirs = "/app directory 755 0:0\n/app/a regular file 644 0:0 2 1\n/app/logs directory 755 0:0\n";
    const d = (b: string): Difference => ({
      kind: "path",
      key: "/tmp/obs",
      ours: listed(ours),
      theirs: listed(b),
      text: "",
    });
    expect(explainedBy(d(theirs), "COPY . /app/", ignore).map((k) => k.id)).toEqual([
      "dockerignore-excluded-dir-sent",
    ]);
    expect(explainedBy(d(theirs), "COPY . /app/", "logs\n")).toEqual([]);
    expect(explainedBy(d(theirs.replace("logs", "src")), "COPY . /app/", ignore)).toEqual([]);
  });
});

describe("the kept differences of owners and build args", () => {
  it("explain the owner ADD --chown gives an unpacked archive's files, in the root filesystem and listed", () => {
    const entry = (owner: string) => ({ type: "File", mode: "0644", owner, sha256: "x" });
    const path = (ours: string, theirs: string): Difference => ({
      kind: "path",
      key: "/app/pkg/x.txt",
      ours: entry(ours),
      theirs: entry(theirs),
      text: "",
    });
    const ids = (d: Difference, dockerfile: string) => explainedBy(d, dockerfile).map((k) => k.id);
    expect(ids(path("65534:65534", "0:0"), "ADD --chown=nobody data.tar /app/")).toEqual([
      "add-chown-archive",
    ]);
    expect(ids(path("65534:65534", "0:0"), "ADD --chown=65534 data.tar /app/")).toEqual([
      "add-chown-archive",
    ]);
    expect(ids(path("1000:1000", "0:0"), "ADD --chown=65534 data.tar /app/")).toEqual([]);
    expect(ids(path("65534:65534", "0:0"), "COPY --chown=65534 data.tar /app/")).toEqual([]);
    const listed = (owner: string) => {
      const small = `/app/pkg/x.txt regular file 644 ${owner} 3 1\nabc  /app/pkg/x.txt\n`;
      return { type: "File", mode: "0644", owner: "0:0", sha256: small, small };
    };
    const listing: Difference = {
      kind: "path",
      key: "/tmp/obs",
      ours: listed("65534:65534"),
      theirs: listed("0:0"),
      text: "",
    };
    expect(ids(listing, "ADD --chown=65534 data.tar /app/")).toEqual(["add-chown-archive"]);
    expect(ids(listing, "ADD --chown=1000 data.tar /app/")).toEqual([]);
  });

  it("explain a RUN recorded with the build args of the stage its stage is built from, and no others", () => {
    const rule = KEPT.find((k) => k.id === "build-args-from-base-stage")!.explains!;
    const history = (ours: string, theirs: string): Difference => ({
      kind: "history",
      key: "history[2]",
      ours,
      theirs,
      text: "",
    });
    const dockerfile = "FROM busybox AS s0\nARG A=y\nFROM s0 AS s1\nRUN ls";
    expect(rule(history("RUN |1 A=y /bin/sh -c ls", "RUN /bin/sh -c ls"), dockerfile)).toBe(true);
    expect(
      rule(history("RUN |2 A=y V=x /bin/sh -c ls", "RUN |1 V=x /bin/sh -c ls"), `${dockerfile}\nARG V=x`),
    ).toBe(true);
    expect(rule(history("RUN |1 A=y /bin/sh -c ls", "RUN /bin/sh -c ls -l"), dockerfile)).toBe(false);
    expect(rule(history("RUN |1 B=y /bin/sh -c ls", "RUN /bin/sh -c ls"), dockerfile)).toBe(false);
    expect(rule(history("RUN /bin/sh -c ls", "RUN |1 A=y /bin/sh -c ls"), dockerfile)).toBe(false);
  });
});

describe("docs/compat.md", () => {
  it("has a row for every kept difference, and none for one that is not kept", () => {
    const doc = readFileSync(path.join(projectRoot, "docs/compat.md"), "utf8");
    const rows = [...doc.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]);
    expect(rows.sort()).toEqual(KEPT.map((k) => k.id).sort());
  });
});
