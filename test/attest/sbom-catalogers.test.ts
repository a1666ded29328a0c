/**
 * The scanner's catalogers on trees made by hand, each in its ecosystem's own format: apk's
 * installed database, an rpm sqlite database written with RPM's header format, dpkg stanzas in
 * every state and distroless's status.d, node_modules manifests, Python metadata, a real Go
 * binary's build info (node_modules' TypeScript native compiler, a Go module build), and the
 * document's determinism.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { describe, expect, it } from "vitest";
import { layersFilesystem, scanFilesystem, spdxDocument } from "../../attest/sbom/index.js";
import { projectRoot } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";
import { spdxSchemaErrors } from "./spdx-schema.js";

const tempDir = tempDirs();

function tree(files: Record<string, string>): string {
  const root = tempDir("sbom-tree");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    writeFileSync(path.join(root, name), text);
  }
  return root;
}

const scan = (root: string) => scanFilesystem(layersFilesystem([root]));

describe("the apk cataloger", () => {
  it("lists the packages of lib/apk/db/installed with their licence and an alpine purl", async () => {
    const root = tree({
      "etc/os-release": 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\n',
      "lib/apk/db/installed": [
        "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nS:411000\nL:MIT\no:musl\nF:lib\nR:libc.musl-x86_64.so.1\n",
        "C:Q1def=\nP:libcrypto3\nV:3.3.2-r0\nA:x86_64\nL:Apache-2.0\no:openssl\n",
        "",
      ].join("\n"),
    });
    const result = await scan(root);
    expect(result.packages).toEqual([
      {
        type: "apk",
        name: "libcrypto3",
        version: "3.3.2-r0",
        license: "Apache-2.0",
        purl: "pkg:apk/alpine/libcrypto3@3.3.2-r0?arch=x86_64&distro=alpine-3.20.3&upstream=openssl",
        foundIn: "/lib/apk/db/installed",
      },
      {
        type: "apk",
        name: "musl",
        version: "1.2.5-r0",
        license: "MIT",
        purl: "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.3",
        foundIn: "/lib/apk/db/installed",
      },
    ]);
    expect(result.warnings).toEqual([]);
  });
});

/** One header blob in RPM's format: entry count, data length, 16-byte entries, then the data. */
function rpmHeader(tags: [tag: number, value: string | number][]): Uint8Array {
  const entries: Buffer[] = [];
  const data: Buffer[] = [];
  let offset = 0;
  for (const [tag, value] of tags) {
    let bytes: Buffer;
    let type: number;
    if (typeof value === "number") {
      while (offset % 4 !== 0) {
        data.push(Buffer.alloc(1));
        offset++;
      }
      bytes = Buffer.alloc(4);
      bytes.writeUInt32BE(value);
      type = 4; // RPM_INT32_TYPE
    } else {
      bytes = Buffer.from(`${value}\0`);
      type = 6; // RPM_STRING_TYPE
    }
    const entry = Buffer.alloc(16);
    entry.writeUInt32BE(tag, 0);
    entry.writeUInt32BE(type, 4);
    entry.writeUInt32BE(offset, 8);
    entry.writeUInt32BE(1, 12);
    entries.push(entry);
    data.push(bytes);
    offset += bytes.length;
  }
  const head = Buffer.alloc(8);
  head.writeUInt32BE(tags.length, 0);
  head.writeUInt32BE(offset, 4);
  return Buffer.concat([head, ...entries, ...data]);
}

describe("the rpm cataloger", () => {
  it("lists the packages of an rpmdb.sqlite, with epoch, release and licence, and skips signing keys", async () => {
    const root = tree({ "etc/os-release": 'ID=fedora\nVERSION_ID=40\nNAME="Fedora Linux"\n' });
    mkdirSync(path.join(root, "var/lib/rpm"), { recursive: true });
    const db = new DatabaseSync(path.join(root, "var/lib/rpm/rpmdb.sqlite"));
    db.exec("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)");
    const insert = db.prepare("INSERT INTO Packages (blob) VALUES (?)");
    insert.run(
      rpmHeader([
        [1000, "bash"],
        [1001, "5.2.26"],
        [1002, "3.fc40"],
        [1014, "GPL-3.0-or-later"],
        [1022, "x86_64"],
      ]),
    );
    insert.run(
      rpmHeader([
        [1000, "shadow-utils"],
        [1003, 2],
        [1001, "4.15.1"],
        [1002, "1.fc40"],
        [1014, "BSD-3-Clause AND GPL-2.0-or-later"],
        [1022, "x86_64"],
      ]),
    );
    insert.run(
      rpmHeader([
        [1000, "gpg-pubkey"],
        [1001, "a15b79cc"],
        [1002, "63d04c2c"],
      ]),
    );
    db.close();
    const result = await scan(root);
    expect(result.packages).toEqual([
      {
        type: "rpm",
        name: "bash",
        version: "5.2.26-3.fc40",
        license: "GPL-3.0-or-later",
        purl: "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40",
        foundIn: "/var/lib/rpm/rpmdb.sqlite",
      },
      {
        type: "rpm",
        name: "shadow-utils",
        version: "2:4.15.1-1.fc40",
        license: "BSD-3-Clause AND GPL-2.0-or-later",
        purl: "pkg:rpm/fedora/shadow-utils@4.15.1-1.fc40?arch=x86_64&distro=fedora-40&epoch=2",
        foundIn: "/var/lib/rpm/rpmdb.sqlite",
      },
    ]);
    expect(result.warnings).toEqual([]);
    // Read-only and immutable: nothing was written beside the image's database.
    expect(readdirSync(path.join(root, "var/lib/rpm"))).toEqual(["rpmdb.sqlite"]);
  });
});

describe("the dpkg cataloger", () => {
  it("lists installed packages only, reads distroless's status.d, and takes licences from DEP-5 copyright files", async () => {
    const root = tree({
      "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
      "var/lib/dpkg/status": [
        "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\nDescription: Debian base system\n miscellaneous files\n",
        "Package: removed-one\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n",
        "Package: half\nStatus: install ok half-installed\nArchitecture: amd64\nVersion: 2.0\n",
        "",
      ].join("\n"),
      "var/lib/dpkg/status.d/tzdata": "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
      "var/lib/dpkg/status.d/tzdata.md5sums": "0123  usr/share/zoneinfo/UTC\n",
      "usr/share/doc/base-files/copyright":
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: Debian\nLicense: GPL-2+\n This is free software.\n\nFiles: debian/*\nLicense: public-domain\n",
      "usr/share/doc/tzdata/copyright": "This is not machine-readable.\nLicense: MIT\n",
    });
    const result = await scan(root);
    expect(result.packages).toEqual([
      {
        type: "deb",
        name: "base-files",
        version: "12.4+deb12u5",
        license: "GPL-2+ AND public-domain",
        purl: "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12",
        foundIn: "/var/lib/dpkg/status",
      },
      {
        type: "deb",
        name: "tzdata",
        version: "2024a-0+deb12u1",
        purl: "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
        foundIn: "/var/lib/dpkg/status.d/tzdata",
      },
    ]);
    expect(result.warnings).toEqual([]);
    const document = spdxDocument([{ name: "distroless", kind: "image", scan: result }], {
      name: "distroless",
      toolVersion: "0.1.0",
    });
    expect(spdxSchemaErrors(document)).toEqual([]);
    // `public-domain` is no SPDX identifier, but reads as one; a free-text licence becomes a LicenseRef.
    expect(document.packages.find((p) => p.name === "base-files")?.licenseDeclared).toBe(
      "GPL-2+ AND public-domain",
    );
  });
});

describe("the npm and Python catalogers", () => {
  it("lists node_modules packages (scoped, nested, older licence forms) but not a package's own fixtures", async () => {
    const root = tree({
      "app/node_modules/@scope/lib/package.json":
        '{"name":"@scope/lib","version":"1.0.0","license":"(MIT OR Apache-2.0)"}',
      "app/node_modules/old/package.json":
        '{"name":"old","version":"0.1.0","licenses":[{"type":"BSD-2-Clause"}]}',
      "app/node_modules/old/node_modules/inner/package.json":
        '{"name":"inner","version":"2.0.0","license":{"type":"ISC"}}',
      "app/node_modules/old/test/fixture/package.json": '{"name":"fixture","version":"9.9.9"}',
      "app/package.json": '{"name":"the-app","version":"1.0.0"}',
    });
    const result = await scan(root);
    expect(result.packages.map((p) => [p.name, p.version, p.license, p.purl, p.foundIn])).toEqual([
      [
        "@scope/lib",
        "1.0.0",
        "(MIT OR Apache-2.0)",
        "pkg:npm/%40scope/lib@1.0.0",
        "/app/node_modules/@scope/lib/package.json",
      ],
      [
        "inner",
        "2.0.0",
        "ISC",
        "pkg:npm/inner@2.0.0",
        "/app/node_modules/old/node_modules/inner/package.json",
      ],
      ["old", "0.1.0", "BSD-2-Clause", "pkg:npm/old@0.1.0", "/app/node_modules/old/package.json"],
    ]);
  });

  it("lists dist-info and egg-info distributions with a PEP 503 purl and the licence they declare", async () => {
    const root = tree({
      "usr/lib/python3/dist-packages/Foo_Bar-2.0.dist-info/METADATA":
        "Metadata-Version: 2.4\nName: Foo_Bar\nVersion: 2.0\nLicense-Expression: Apache-2.0\n\nLong text.\nName: not-a-header\n",
      "usr/lib/python3/dist-packages/old.egg-info/PKG-INFO":
        "Metadata-Version: 1.1\nName: old\nVersion: 0.5\nLicense: UNKNOWN\nClassifier: License :: OSI Approved :: MIT License\n",
      "usr/lib/python3/dist-packages/single-1.0.egg-info":
        "Metadata-Version: 1.0\nName: single\nVersion: 1.0\n",
    });
    const result = await scan(root);
    expect(result.packages.map((p) => [p.name, p.version, p.license, p.purl])).toEqual([
      ["Foo_Bar", "2.0", "Apache-2.0", "pkg:pypi/foo-bar@2.0"],
      ["old", "0.5", "MIT License", "pkg:pypi/old@0.5"],
      ["single", "1.0", undefined, "pkg:pypi/single@1.0"],
    ]);
  });
});

describe("the Go binary cataloger", () => {
  it("lists the main module, its dependencies and the Go version embedded in a Go binary, as the binary's own strings say", async () => {
    const platformDir = path.join(projectRoot, "node_modules/@typescript");
    const native = readdirSync(platformDir).find((d) => d.startsWith("typescript-linux-"));
    if (!native) throw new Error(`no native TypeScript compiler (a Go binary) under ${platformDir}`);
    const binary = path.join(platformDir, native, "lib/tsc");
    const root = tree({});
    mkdirSync(path.join(root, "usr/local/bin"), { recursive: true });
    copyFileSync(binary, path.join(root, "usr/local/bin/tsgo"));
    chmodSync(path.join(root, "usr/local/bin/tsgo"), 0o755);
    // The module lines as binutils' strings finds them in the file, not as our ELF reader does.
    const expected = execFileSync("strings", ["-a", binary], { encoding: "utf8", maxBuffer: 256 << 20 })
      .split("\n")
      .filter((line) => /^(mod|dep)\t/.test(line))
      .map((line) => line.split("\t").slice(1, 3).join(" "));
    expect(expected.length).toBeGreaterThan(2);
    const result = await scan(root);
    const modules = result.packages.filter((p) => p.type === "golang" && p.name !== "stdlib");
    expect(modules.map((p) => `${p.name} ${p.version}`).sort()).toEqual([...new Set(expected)].sort());
    expect(result.packages.find((p) => p.name === "stdlib")?.version).toMatch(/^go1\.\d+/);
    expect(new Set(result.packages.map((p) => p.foundIn))).toEqual(new Set(["/usr/local/bin/tsgo"]));
    expect(Object.keys(result.files)).toEqual(["/usr/local/bin/tsgo"]);
  });
});

describe("the Go binary cataloger on binaries made here", () => {
  const nativeTsc = () => {
    const platformDir = path.join(projectRoot, "node_modules/@typescript");
    const native = readdirSync(platformDir).find((d) => d.startsWith("typescript-linux-"));
    if (!native) throw new Error(`no native TypeScript compiler (a Go binary) under ${platformDir}`);
    return path.join(platformDir, native, "lib/tsc");
  };

  it("finds the build info at the start of the writable segment when no section is named .go.buildinfo", async () => {
    const root = tree({});
    mkdirSync(path.join(root, "bin"));
    const renamed = path.join(root, "bin/renamed");
    execFileSync("objcopy", ["--rename-section", ".go.buildinfo=.renamed", nativeTsc(), renamed]);
    expect(execFileSync("readelf", ["-S", "-W", renamed], { encoding: "utf8" })).not.toContain(
      ".go.buildinfo",
    );
    const result = await scan(root);
    expect(result.packages.find((p) => p.name === "github.com/microsoft/typescript-go")?.foundIn).toBe(
      "/bin/renamed",
    );
    expect(result.packages.filter((p) => p.type === "golang").length).toBeGreaterThan(3);
  });

  it("reads the build info of Go before 1.18: pointers to the version and module strings", async () => {
    // The layout Go 1.13 to 1.17 linked: the section holds the magic, the pointer size, flags 0 and
    // two pointers to Go string headers (data pointer, length) elsewhere in the binary.
    const root = tree({
      "src/old.c": `struct gostr { const char *p; long n; };
static const char ver[] = "go1.16.15";
static const char mod[] = "0123456789abcdef"
  "path\\texample.com/old/cmd\\nmod\\texample.com/old\\tv1.0.0\\t\\ndep\\tgolang.org/x/text\\tv0.3.7\\th1:x=\\n"
  "fedcba9876543210";
static struct gostr vs = { ver, sizeof ver - 1 }, ms = { mod, sizeof mod - 1 };
__attribute__((section(".go.buildinfo"), used, aligned(16)))
static struct { char magic[14]; unsigned char ptrsize, flags; struct gostr *v, *m; } buildinfo =
  { "\\xff Go buildinf:", 8, 0, &vs, &ms };
int main(void) { return 0; }
`,
    });
    mkdirSync(path.join(root, "bin"));
    // Static and not position-independent: the pointers are addresses fixed at link time, as Go's were.
    execFileSync("gcc", [
      "-O0",
      "-no-pie",
      "-static",
      "-o",
      path.join(root, "bin/old"),
      path.join(root, "src/old.c"),
    ]);
    const result = await scan(root);
    expect(result.packages.map((p) => [p.name, p.version, p.purl, p.foundIn])).toEqual([
      ["example.com/old", "v1.0.0", "pkg:golang/example.com/old@v1.0.0", "/bin/old"],
      ["golang.org/x/text", "v0.3.7", "pkg:golang/golang.org/x/text@v0.3.7", "/bin/old"],
      ["stdlib", "go1.16.15", "pkg:golang/stdlib@go1.16.15", "/bin/old"],
    ]);
  });
});

describe("the SPDX document", () => {
  const root = () =>
    tree({
      "app/node_modules/a/package.json":
        '{"name":"a","version":"1.0.0","license":"GPL-2+ or Artistic, see below"}',
    });

  it("is the same bytes for the same tree, with SOURCE_DATE_EPOCH's time and a namespace derived from the content", async () => {
    const options = { name: "app", toolVersion: "0.1.0", created: new Date(1_700_000_000_000) };
    const first = spdxDocument([{ name: "app", kind: "image", scan: await scan(root()) }], options);
    const second = spdxDocument([{ name: "app", kind: "image", scan: await scan(root()) }], options);
    expect(JSON.stringify(second)).toBe(JSON.stringify(first));
    expect(first.creationInfo.created).toBe("2023-11-14T22:13:20Z");
    const other = tree({ "app/node_modules/a/package.json": '{"name":"a","version":"1.0.1"}' });
    const third = spdxDocument([{ name: "app", kind: "image", scan: await scan(other) }], options);
    expect(third.documentNamespace).not.toBe(first.documentNamespace);
    expect(spdxSchemaErrors(first)).toEqual([]);
    // A licence that is no SPDX expression is named by a LicenseRef, its text kept.
    const a = first.packages.find((p) => p.name === "a");
    expect(a?.licenseDeclared).toMatch(/^LicenseRef-/);
    expect(first.hasExtractedLicensingInfos).toEqual([
      {
        licenseId: a?.licenseDeclared,
        extractedText: "GPL-2+ or Artistic, see below",
        name: "GPL-2+ or Artistic, see below",
      },
    ]);
  });

  it("describes several sources in one document: the image and the extra stages or context", async () => {
    const image = await scan(root());
    const context = await scan(tree({ "node_modules/b/package.json": '{"name":"b","version":"3.0.0"}' }));
    const document = spdxDocument(
      [
        { name: "app", kind: "image", scan: image },
        { name: "context", kind: "context", scan: context },
      ],
      { name: "app", toolVersion: "0.1.0", created: new Date(0) },
    );
    expect(spdxSchemaErrors(document)).toEqual([]);
    const described = document.relationships.filter((r) => r.relationshipType === "DESCRIBES");
    expect(
      described.map((r) => document.packages.find((p) => p.SPDXID === r.relatedSpdxElement)?.name),
    ).toEqual(["app", "context"]);
    const contextRoot = described[1]?.relatedSpdxElement;
    const b = document.packages.find((p) => p.name === "b");
    expect(document.relationships).toContainEqual({
      spdxElementId: contextRoot,
      relatedSpdxElement: b?.SPDXID,
      relationshipType: "CONTAINS",
    });
  });
});

describe("a scan of a broken tree", () => {
  it("names each entry it cannot read in a warning and finishes: symlink loops, a path too long, a database that is not one, a mangled ELF file", async () => {
    const root = tree({
      "var/lib/rpm/rpmdb.sqlite": "not a database at all\n".repeat(100),
      "app/node_modules/ok/package.json": '{"name":"ok","version":"1.0.0"}',
    });
    mkdirSync(path.join(root, "etc"));
    execFileSync("ln", ["-s", "os-release", path.join(root, "etc/os-release")]);
    mkdirSync(path.join(root, "var/lib/dpkg"), { recursive: true });
    execFileSync("ln", ["-s", "status.d", path.join(root, "var/lib/dpkg/status.d")]);
    // ELF's magic, then nothing that makes sense: section and program headers point anywhere.
    const elf = Buffer.alloc(70_000, 0xff);
    Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1]).copy(elf);
    mkdirSync(path.join(root, "usr/bin"), { recursive: true });
    writeFileSync(path.join(root, "usr/bin/mangled"), elf, { mode: 0o755 });
    // A directory deeper than PATH_MAX (4096) allows a path to name, made one step at a time.
    const segment = "d".repeat(200);
    // (A child process: a test's worker may not change its directory.)
    execFileSync(process.execPath, [
      "-e",
      `const fs = require("node:fs");
       process.chdir(process.argv[1]);
       for (let i = 0; i < 25; i++) { fs.mkdirSync("${segment}"); process.chdir("${segment}"); }
       fs.mkdirSync("node_modules/deep", { recursive: true });
       fs.writeFileSync("node_modules/deep/package.json", '{"name":"deep","version":"1.0.0"}');`,
      path.join(root, "app"),
    ]);
    const result = await scan(root);
    expect(result.packages.map((p) => p.name)).toEqual(["ok"]);
    expect(result.warnings).toHaveLength(4);
    expect(result.warnings[0]).toMatch(/^\/app\/d{200}\/[d/]+: cannot be listed \(ENAMETOOLONG\)$/);
    expect(result.warnings.slice(1)).toEqual([
      "/etc/os-release: too many levels of symbolic links resolving etc/os-release",
      "/var/lib/dpkg: cannot be read (E_SYMLINK_LOOP)",
      expect.stringMatching(/^\/var\/lib\/rpm\/rpmdb\.sqlite: not a readable RPM database: /),
    ]);
  });
});
