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
import { type Built, type Difference, differences, mountTargets, rootfsOfTar } from "./compare.js";
import { KEPT } from "./kept.js";

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
    const chmod = rule("copy-chmod-created-dir").explains!;
    const dir = (mode: string) => ({ type: "Directory", mode, owner: "0:0" });
    const path = (ours: unknown, theirs: unknown): Difference => ({
      kind: "path",
      key: "/out",
      ours,
      theirs,
      text: "",
    });
    expect(chmod(path(dir("0644"), dir("0755")), "COPY --chmod=644 a /out")).toBe(true);
    expect(chmod(path(dir("0600"), dir("0755")), "COPY --chmod=644 a /out")).toBe(false);
    expect(chmod(path(dir("0600"), dir("0755")), "ADD --chmod=600 a /out/")).toBe(true);
    // The same directory as a later RUN step recorded it (stat's `%n %F %a %u:%g`).
    const seen = (listing: string) => ({
      type: "File",
      mode: "0644",
      owner: "0:0",
      sha256: listing,
      small: listing,
    });
    const ours = "/out directory 600 0:0\n/out/a regular file 600 0:0 2 1\n";
    const dockerfile = "COPY --chmod=0600 a /out/";
    expect(chmod(path(seen(ours), seen(ours.replace(" 600 0:0\n/", " 755 0:0\n/"))), dockerfile)).toBe(true);
    expect(chmod(path(seen(ours), seen(ours.replace(" 600 0:0\n/", " 700 0:0\n/"))), dockerfile)).toBe(false);
    expect(chmod(path(seen(ours), seen(ours.replace("file 600", "file 755"))), dockerfile)).toBe(false);
    expect(
      chmod(path(seen(ours), seen(ours.replace(" 600 0:0\n/", " 755 0:0\n/"))), "COPY --chmod=0644 a /out/"),
    ).toBe(false);
  });
});

describe("the kept difference of --chmod and special bits", () => {
  const rule = KEPT.find((k) => k.id === "copy-chmod-special-bits")!.explains!;
  const file = (mode: string) => ({ type: "File", mode, owner: "0:0", sha256: "x" });
  const path = (ours: unknown, theirs: unknown): Difference => ({
    kind: "path",
    key: "/b",
    ours,
    theirs,
    text: "",
  });

  it("explains BuildKit 0.8 keeping a file's setuid bit where tbuild gives the --chmod mode, and no other mode", () => {
    expect(rule(path(file("0600"), file("4600")), "COPY --chmod=0600 b /")).toBe(true);
    expect(rule(path(file("0600"), file("2600")), "ADD --chmod=600 b /")).toBe(true);
    expect(rule(path(file("0600"), file("4700")), "COPY --chmod=0600 b /")).toBe(false);
    expect(rule(path(file("0600"), file("0644")), "COPY --chmod=0600 b /")).toBe(false);
    expect(rule(path(file("0600"), file("4600")), "COPY --chmod=0644 b /")).toBe(false);
    expect(rule(path(file("0600"), file("4600")), "COPY b /")).toBe(false);
  });

  it("explains it in a RUN step's listing of the file, and no other line", () => {
    const seen = (listing: string) => ({
      type: "File",
      mode: "0644",
      owner: "0:0",
      sha256: listing,
      small: listing,
    });
    const ours = "/b regular file 600 0:0 2 1\nabc  /b\n";
    expect(rule(path(seen(ours), seen(ours.replace("600", "4600"))), "COPY --chmod=0600 b /")).toBe(true);
    expect(
      rule(path(seen(ours), seen(ours.replace("600 0:0 2", "4600 0:0 3"))), "COPY --chmod=0600 b /"),
    ).toBe(false);
    expect(rule(path(seen(ours), seen(ours.replace("abc", "abd"))), "COPY --chmod=0600 b /")).toBe(false);
  });
});

describe("docs/compat.md", () => {
  it("has a row for every kept difference, and none for one that is not kept", () => {
    const doc = readFileSync(path.join(projectRoot, "docs/compat.md"), "utf8");
    const rows = [...doc.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]);
    expect(rows.sort()).toEqual(KEPT.map((k) => k.id).sort());
  });
});
