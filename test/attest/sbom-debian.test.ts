/**
 * The SBOM of a Debian image with python3 installed by a RUN, an npm package unpacked from the npm
 * registry's tarball and a Python package installed by pip from a wheel made in the build: the
 * packages it lists are those dpkg-query, pip and the tarball say are there (asked inside a
 * container of the image, not of our parser), and the document is valid SPDX 2.3.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { listMergedSync } from "../../attest/sbom/filesystem.js";
import {
  type ImageFilesystem,
  sbomAttestation,
  scanFilesystem,
  spdxDocument,
} from "../../attest/sbom/index.js";
import { LowerView } from "../../worker/snapshot/lower-view.js";
import { tbuild } from "../helpers/cli.js";
import { makeDockerDebianSlim } from "../helpers/debian-image.js";
import { tempDirs } from "../helpers/temp.js";
import { imageFilesystemOf, imageLayersOf } from "./sbom-image.js";
import { spdxSchemaErrors } from "./spdx-schema.js";

const tempDir = tempDirs();

/** Writes a wheel of `tbuild-hello` 1.2.3 (MIT) into the directory it is given, with Python's zipfile. */
const MAKE_WHEEL = `import base64, hashlib, os, sys, zipfile
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
info = "tbuild_hello-1.2.3.dist-info"
files = {
    "tbuild_hello/__init__.py": "GREETING = 'hello'\\n",
    info + "/METADATA": "Metadata-Version: 2.1\\nName: tbuild-hello\\nVersion: 1.2.3\\nSummary: a test package\\nLicense: MIT\\n\\nA package made by a test.\\n",
    info + "/WHEEL": "Wheel-Version: 1.0\\nGenerator: tbuild-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
record = []
with zipfile.ZipFile(os.path.join(out, "tbuild_hello-1.2.3-py3-none-any.whl"), "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
    record.append(info + "/RECORD,,")
    z.writestr(info + "/RECORD", "\\n".join(record) + "\\n")
`;

const DOCKERFILE = `FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip
COPY make-wheel.py ms.tgz /tmp/
RUN python3 /tmp/make-wheel.py /tmp/wheels \\
 && python3 -m pip install --no-index --break-system-packages /tmp/wheels/tbuild_hello-1.2.3-py3-none-any.whl \\
 && mkdir -p /app/node_modules/ms && tar -xzf /tmp/ms.tgz -C /app/node_modules/ms --strip-components=1 \\
 && rm -rf /tmp/wheels /tmp/make-wheel.py /tmp/ms.tgz
`;

describe("the SBOM of a Debian image with python3, an npm and a pip package", () => {
  const store = tempDir("sbom-debian-store");
  const inStore = (args: string[]) => tbuild(args, { env: { TBUILD_ROOT: store } });
  let files: ImageFilesystem;
  let context = "";

  beforeAll(async () => {
    await makeDockerDebianSlim(store, "debian:bookworm-slim", tempDir("sbom-debian-base"));
    context = tempDir("sbom-debian-context");
    writeFileSync(path.join(context, "Dockerfile"), DOCKERFILE);
    writeFileSync(path.join(context, "make-wheel.py"), MAKE_WHEEL);
    // The npm registry's own tarball of ms 2.1.3, fetched now.
    execFileSync("npm", ["pack", "ms@2.1.3", "--pack-destination", context, "--silent"], { stdio: "ignore" });
    const packed = readdirSync(context).find((f) => f.endsWith(".tgz"));
    if (!packed) throw new Error("npm pack wrote no tarball");
    renameSync(path.join(context, packed), path.join(context, "ms.tgz"));
    const build = inStore(["build", "--progress=plain", "-t", "sbom-debian", context]);
    if (build.status !== 0) throw new Error(`the image did not build: ${build.stderr}`);
    files = await imageFilesystemOf(store, "sbom-debian");
  }, 1_200_000);

  function inImage(script: string): string {
    const result = inStore(["run", "--rm", "sbom-debian", "sh", "-c", script]);
    if (result.status !== 0) throw new Error(`${script} failed: ${result.stderr}`);
    return result.stdout;
  }

  it("lists exactly the Debian packages dpkg-query -W prints inside the image, with their architecture in the purl", async () => {
    const expected = inImage("dpkg-query -W -f '${Package} ${Version} ${Architecture}\\n'")
      .trim()
      .split("\n")
      .sort();
    const scan = await scanFilesystem(files);
    const listed = scan.packages
      .filter((p) => p.type === "deb")
      .map((p) => `${p.name} ${p.version} ${new URL(`x:?${p.purl.split("?")[1]}`).searchParams.get("arch")}`)
      .sort();
    expect(expected.filter((line) => line.startsWith("python3 "))).toHaveLength(1);
    expect(listed).toEqual(expected);
    const python3 = scan.packages.find((p) => p.type === "deb" && p.name === "python3");
    expect(python3?.purl).toMatch(/^pkg:deb\/debian\/python3@[^?]+\?arch=[a-z0-9]+&distro=debian-12$/);
    expect(python3?.foundIn).toBe("/var/lib/dpkg/status");
    expect(scan.warnings).toEqual([]);
  });

  it("gives a licence to each Debian package whose copyright file is machine-readable", async () => {
    const readable = inImage(
      'for f in /usr/share/doc/*/copyright; do head -n1 "$f" | grep -q \'^Format:.*copyright-format\' && basename "$(dirname "$f")"; done; true',
    )
      .trim()
      .split("\n");
    expect(readable.length).toBeGreaterThan(5);
    const scan = await scanFilesystem(files);
    const installed = new Set(scan.packages.filter((p) => p.type === "deb").map((p) => p.name));
    const unlicensed = scan.packages.filter(
      (p) => p.type === "deb" && readable.includes(p.name) && !p.license,
    );
    expect(readable.filter((name) => installed.has(name)).length).toBeGreaterThan(5);
    expect(unlicensed).toEqual([]);
  });

  it("lists the npm package unpacked into node_modules and every Python distribution pip lists", async () => {
    const scan = await scanFilesystem(files);
    expect(scan.packages.filter((p) => p.type === "npm")).toEqual([
      {
        type: "npm",
        name: "ms",
        version: "2.1.3",
        license: "MIT",
        purl: "pkg:npm/ms@2.1.3",
        foundIn: "/app/node_modules/ms/package.json",
      },
    ]);
    const pipList = JSON.parse(inImage("python3 -m pip list --format=json --disable-pip-version-check")) as {
      name: string;
      version: string;
    }[];
    const listed = scan.packages.filter((p) => p.type === "pypi").map((p) => `${p.name} ${p.version}`);
    expect(pipList.map((p) => `${p.name} ${p.version}`)).toContain("tbuild-hello 1.2.3");
    expect(listed.sort()).toEqual(pipList.map((p) => `${p.name} ${p.version}`).sort());
    const hello = scan.packages.find((p) => p.name === "tbuild-hello");
    expect(hello).toMatchObject({ license: "MIT", purl: "pkg:pypi/tbuild-hello@1.2.3" });
    expect(hello?.foundIn).toMatch(
      /^\/usr\/local\/lib\/python3[.0-9]*\/dist-packages\/tbuild_hello-1\.2\.3\.dist-info\/METADATA$/,
    );
  });

  it("is an SPDX 2.3 document that validates against the schema, in BuildKit's statement", async () => {
    const attestation = sbomAttestation(
      [{ name: "docker.io/library/sbom-debian:latest", kind: "image", files }],
      {
        name: "docker.io/library/sbom-debian:latest",
        toolVersion: "0.1.0",
        created: new Date(1_700_000_000_000),
      },
    );
    const subject = [{ name: "_", digest: { sha256: "0".repeat(64) } }];
    const statement = await attestation.statement(subject);
    expect(attestation.file).toBe("sbom.spdx.json");
    expect(statement).toMatchObject({
      _type: "https://in-toto.io/Statement/v0.1",
      subject,
      predicateType: "https://spdx.dev/Document",
    });
    const document = statement.predicate as ReturnType<typeof spdxDocument>;
    expect(spdxSchemaErrors(document)).toEqual([]);
    expect(document.creationInfo).toEqual({
      created: "2023-11-14T22:13:20Z",
      creators: ["Tool: tbuild-0.1.0"],
    });
    const ms = document.packages.find((p) => p.name === "ms");
    expect(ms).toMatchObject({
      versionInfo: "2.1.3",
      downloadLocation: "NOASSERTION",
      licenseDeclared: "MIT",
      externalRefs: [
        { referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: "pkg:npm/ms@2.1.3" },
      ],
    });
    const root = document.relationships.find((r) => r.relationshipType === "DESCRIBES");
    expect(root?.spdxElementId).toBe("SPDXRef-DOCUMENT");
    expect(document.relationships).toContainEqual({
      spdxElementId: root?.relatedSpdxElement,
      relatedSpdxElement: ms?.SPDXID,
      relationshipType: "CONTAINS",
    });
    const evidence = document.relationships.find(
      (r) => r.spdxElementId === ms?.SPDXID && r.relationshipType === "OTHER",
    );
    expect(document.files.find((f) => f.SPDXID === evidence?.relatedSpdxElement)?.fileName).toBe(
      "/app/node_modules/ms/package.json",
    );
  });

  it("gives the same bytes when the same image is scanned twice", async () => {
    const options = { name: "sbom-debian", toolVersion: "0.1.0", created: new Date(0) };
    const first = JSON.stringify(
      spdxDocument([{ name: "sbom-debian", kind: "image", scan: await scanFilesystem(files) }], options),
    );
    const again = await imageFilesystemOf(store, "sbom-debian");
    const second = JSON.stringify(
      spdxDocument([{ name: "sbom-debian", kind: "image", scan: await scanFilesystem(again) }], options),
    );
    expect(second).toBe(first);
  });

  it("tbuild build --sbom attaches it: the statement about the image lists exactly what dpkg-query -W, pip and the tarball say", () => {
    const built = inStore(["build", "-q", "--sbom", "-t", "sbom-debian-attested", context]);
    expect(built.status, built.stderr).toBe(0);
    const inspected = inStore(["inspect", "--sbom", "sbom-debian-attested"]);
    expect(inspected.status, inspected.stderr).toBe(0);
    const statement = (
      JSON.parse(inspected.stdout) as Record<string, { predicate: ReturnType<typeof spdxDocument> }>
    )["linux/amd64"]!;
    expect(spdxSchemaErrors(statement.predicate)).toEqual([]);
    const purls = (
      statement.predicate.packages as {
        externalRefs?: { referenceType: string; referenceLocator: string }[];
      }[]
    ).flatMap(
      (p) => p.externalRefs?.filter((r) => r.referenceType === "purl").map((r) => r.referenceLocator) ?? [],
    );
    const debs = purls
      .filter((purl) => purl.startsWith("pkg:deb/"))
      .map((purl) => {
        const [, name, version] = /^pkg:deb\/debian\/([^@]+)@([^?]+)/.exec(purl)!;
        return `${decodeURIComponent(name!)} ${decodeURIComponent(version!)}`;
      })
      .sort();
    expect(debs).toEqual(inImage("dpkg-query -W -f '${Package} ${Version}\\n'").trim().split("\n").sort());
    expect(purls).toContain("pkg:npm/ms@2.1.3");
    expect(purls).toContain("pkg:pypi/tbuild-hello@1.2.3");
  });

  it("lists each directory of the merged layers as LowerView.list does (the scanner's fast listing)", async () => {
    const layers = await imageLayersOf(store, "sbom-debian");
    const plain = new LowerView(layers);
    const fast = new LowerView(layers);
    const kindOf = (stat: import("node:fs").BigIntStats) =>
      stat.isFile() ? "file" : stat.isDirectory() ? "directory" : stat.isSymbolicLink() ? "symlink" : "other";
    let directories = 0;
    const visit = async (rel: string): Promise<void> => {
      directories++;
      const expected = [...(await plain.list(rel))]
        .map(([name, entry]) => ({
          name,
          kind: kindOf(entry.stat),
          size: entry.stat.isFile() ? Number(entry.stat.size) : 0,
          mode:
            entry.stat.isFile() || !(entry.stat.isDirectory() || entry.stat.isSymbolicLink())
              ? Number(entry.stat.mode & 0o7777n)
              : 0,
        }))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      expect(listMergedSync(fast, rel), rel).toEqual(expected);
      for (const entry of expected)
        if (entry.kind === "directory") await visit(rel === "" ? entry.name : `${rel}/${entry.name}`);
    };
    await visit("");
    expect(directories).toBeGreaterThan(500);
  });
});
