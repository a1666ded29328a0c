/**
 * `tbuild build --sbom`: the SBOM attestation as a build makes and stores it, as root and rootless:
 * its statement is about the image's manifest, it lists what the image holds, BuildKit's
 * BUILDKIT_SBOM_SCAN_STAGE / BUILDKIT_SBOM_SCAN_CONTEXT add stages and the context by BuildKit's
 * rules, filesystem outputs get `sbom.spdx.json`, and a two-platform push carries an SBOM beside
 * each provenance, the same bytes twice with SOURCE_DATE_EPOCH.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH, importArm64Busybox, importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { type ModeEnv, modes, setUpMode } from "../runtime/harness.js";
import { spdxSchemaErrors } from "./spdx-schema.js";

const tempDir = tempDirs();

interface Statement {
  _type: string;
  subject: { name: string; digest: { sha256: string } }[];
  predicateType: string;
  predicate: {
    spdxVersion: string;
    packages: { name: string; versionInfo?: string; licenseDeclared?: string }[];
    [key: string]: unknown;
  };
}

/** Files of a context directory, readable by the mode's user. */
function writeContext(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  execFileSync("chmod", ["-R", "a+rX", dir]);
}

/** The names of the SBOM's packages, `name@version` (a scanned source's own package has no version). */
function packageNames(statement: Statement): string[] {
  return statement.predicate.packages
    .map((p) => (p.versionInfo ? `${p.name}@${p.versionInfo}` : p.name))
    .sort();
}

const NPM_PACKAGE = (name: string, version: string) =>
  JSON.stringify({ name, version, license: "MIT", description: "made by a test" });

describe.each(modes())("tbuild build --sbom as $name", (mode) => {
  let env: ModeEnv;
  beforeAll(async () => {
    env = await setUpMode(mode, tempDir);
  }, 180_000);

  /** `inspect --sbom NAME`: the statements by platform. */
  function sbomOf(name: string): Record<string, Statement> {
    return JSON.parse(env.ok(["inspect", "--sbom", name])) as Record<string, Statement>;
  }

  it("stores an SPDX 2.3 statement about the image's manifest, listing the packages in the image", () => {
    const ctx = env.ownedDir("sbom-ctx");
    writeContext(ctx, {
      Dockerfile: `FROM busybox
RUN mkdir -p /app/node_modules/ms /usr/lib/python3/dist-packages/hello-1.0.dist-info \\
 && echo '${NPM_PACKAGE("ms", "2.1.3")}' > /app/node_modules/ms/package.json \\
 && printf 'Metadata-Version: 2.1\\nName: hello\\nVersion: 1.0\\nLicense: MIT\\n' > /usr/lib/python3/dist-packages/hello-1.0.dist-info/METADATA
`,
      // The context is not scanned unless asked.
      "node_modules/chalk/package.json": NPM_PACKAGE("chalk", "5.0.0"),
    });
    env.ok(["build", "-q", "--sbom", "-t", "sbom-one", ctx]);
    const byPlatform = sbomOf("sbom-one");
    expect(Object.keys(byPlatform)).toEqual(["linux/amd64"]);
    const statement = byPlatform["linux/amd64"]!;
    expect(statement.predicateType).toBe("https://spdx.dev/Document");
    expect(statement._type).toBe("https://in-toto.io/Statement/v0.1");
    const inspected = JSON.parse(env.ok(["inspect", "sbom-one"])) as {
      platformDescriptor: { digest: string };
    };
    expect(statement.subject.map((s) => s.digest.sha256)).toEqual([
      inspected.platformDescriptor.digest.slice(7),
    ]);
    expect(spdxSchemaErrors(statement.predicate)).toEqual([]);
    expect(packageNames(statement)).toEqual(["docker.io/library/sbom-one:latest", "hello@1.0", "ms@2.1.3"]);
    // Without --sbom there is none.
    env.ok(["build", "-q", "-t", "sbom-none", ctx]);
    const none = env.run(["inspect", "--sbom", "sbom-none"]);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/has no SBOM attestation: build it with --sbom/);
  });

  it("scans the stages and the context that BUILDKIT_SBOM_SCAN_STAGE / _CONTEXT enable, by BuildKit's rules", () => {
    const ctx = env.ownedDir("sbom-stages");
    writeContext(ctx, {
      Dockerfile: `ARG BUILDKIT_SBOM_SCAN_CONTEXT=true
FROM busybox AS deps
ARG BUILDKIT_SBOM_SCAN_STAGE=true
RUN mkdir -p /n/node_modules/left-pad && echo '${NPM_PACKAGE("left-pad", "1.3.0")}' > /n/node_modules/left-pad/package.json
FROM busybox AS tools
RUN mkdir -p /n/node_modules/tape && echo '${NPM_PACKAGE("tape", "5.0.0")}' > /n/node_modules/tape/package.json
FROM busybox AS unused
ARG BUILDKIT_SBOM_SCAN_STAGE=true
FROM busybox
COPY --from=deps /n /deps
COPY --from=tools /n /tools
`,
      "node_modules/chalk/package.json": NPM_PACKAGE("chalk", "5.0.0"),
    });
    const sbomWith = (args: string[]) => {
      env.ok(["build", "-q", "--sbom", ...args, "-t", "sbom-stages", ctx]);
      return packageNames(sbomOf("sbom-stages")["linux/amd64"]!);
    };
    // deps asks to be scanned; tools does not declare the ARG; unused is not built; the context is.
    // The image itself holds the copied node_modules: deps' and tools' packages are in it.
    expect(sbomWith([])).toEqual([
      "chalk@5.0.0",
      "context",
      "deps",
      "docker.io/library/sbom-stages:latest",
      "left-pad@1.3.0",
      "left-pad@1.3.0",
      "tape@5.0.0",
    ]);
    // A build arg overrides the ARGs that declare it, and enables no stage that does not.
    expect(
      sbomWith([
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_STAGE=false",
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_CONTEXT=0",
      ]),
    ).toEqual(["docker.io/library/sbom-stages:latest", "left-pad@1.3.0", "tape@5.0.0"]);
    expect(
      sbomWith([
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_STAGE=tools",
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_CONTEXT=false",
      ]),
    ).not.toContain("deps");
    expect(
      sbomWith([
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_STAGE=tools,deps",
        "--build-arg",
        "BUILDKIT_SBOM_SCAN_CONTEXT=false",
      ]),
    ).toContain("deps");
  });

  it("writes sbom.spdx.json (and provenance.json) at a filesystem output's root", () => {
    const ctx = env.ownedDir("sbom-local");
    writeContext(ctx, { Dockerfile: "FROM busybox\nRUN echo built > /built\n" });
    const out = path.join(env.ownedDir("sbom-out"), "dest");
    env.ok(["build", "-q", "--sbom", "--provenance=true", "-o", `type=local,dest=${out}`, ctx]);
    const sbom = JSON.parse(readFileSync(path.join(out, "sbom.spdx.json"), "utf8")) as Statement;
    expect(sbom.predicateType).toBe("https://spdx.dev/Document");
    expect(spdxSchemaErrors(sbom.predicate)).toEqual([]);
    const provenance = JSON.parse(readFileSync(path.join(out, "provenance.json"), "utf8")) as Statement;
    expect(provenance.predicateType).toBe("https://slsa.dev/provenance/v1");
    expect(readFileSync(path.join(out, "built"), "utf8")).toBe("built\n");
  });

  it("refuses a generator image (BuildKit's scanner images): tbuild makes the SBOM itself", () => {
    const ctx = env.ownedDir("sbom-generator");
    writeContext(ctx, { Dockerfile: "FROM busybox\n" });
    const refused = env.run(["build", "--attest", "type=sbom,generator=docker/buildkit-syft-scanner", ctx]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/generator= \(a scanner image\) is not supported/);
  });
});

describe("a two-platform image pushed with --sbom and --provenance", () => {
  let registry: RunningRegistry;
  let store = "";
  let context = "";
  const epochEnv = () => ({ TBUILD_ROOT: store, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) });
  beforeAll(async () => {
    registry = await startRegistry();
    store = tempDir("sbom-push-store");
    await importBusybox(store, "bb-amd64");
    await importArm64Busybox(store, "bb-arm64");
    context = tempDir("sbom-push-ctx");
    writeContext(context, {
      Dockerfile: "FROM bb-$TARGETARCH\nCOPY node_modules /app/node_modules\n",
      "node_modules/ms/package.json": NPM_PACKAGE("ms", "2.1.3"),
    });
    chmodSync(context, 0o755);
  }, 180_000);
  afterAll(async () => {
    await registry?.stop();
  });

  function buildAndPush(ref: string): string {
    const iidfile = path.join(tempDir("sbom-iid"), "iid");
    const built = tbuild(
      [
        "build",
        "--no-cache",
        "--platform",
        "linux/amd64,linux/arm64",
        "--sbom",
        "--provenance=mode=max",
        "--iidfile",
        iidfile,
        "-t",
        ref,
        "--push",
        context,
      ],
      { env: epochEnv() },
    );
    expect(built.status, built.stderr).toBe(0);
    return readFileSync(iidfile, "utf8").trim();
  }

  it("each platform's attestation manifest holds its provenance and its SBOM, about its image", async () => {
    const ref = `${registry.host}/team/sbom:1`;
    buildAndPush(ref);
    const raw = (r: string) =>
      JSON.parse(
        execFileSync("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${r}`], {
          encoding: "utf8",
        }),
      );
    const index = raw(ref) as { manifests: { digest: string; platform: { architecture: string } }[] };
    expect(index.manifests.map((m) => m.platform.architecture)).toEqual([
      "amd64",
      "arm64",
      "unknown",
      "unknown",
    ]);
    for (const i of [0, 1]) {
      const attestation = raw(`${registry.host}/team/sbom@${index.manifests[2 + i]!.digest}`) as {
        subject: { digest: string };
        layers: { digest: string; annotations: Record<string, string> }[];
      };
      expect(attestation.subject.digest).toBe(index.manifests[i]!.digest);
      expect(attestation.layers.map((l) => l.annotations["in-toto.io/predicate-type"])).toEqual([
        "https://slsa.dev/provenance/v1",
        "https://spdx.dev/Document",
      ]);
      const response = await fetch(
        `http://${registry.host}/v2/team/sbom/blobs/${attestation.layers[1]!.digest}`,
      );
      const sbom = (await response.json()) as Statement;
      expect(sbom.subject[0]!.digest.sha256).toBe(index.manifests[i]!.digest.slice(7));
      expect(packageNames(sbom)).toContain("ms@2.1.3");
      expect(spdxSchemaErrors(sbom.predicate)).toEqual([]);
    }
  });

  it("the same build twice with SOURCE_DATE_EPOCH gives the same index digest, attestations included", () => {
    const first = buildAndPush(`${registry.host}/team/sbom:again`);
    const second = buildAndPush(`${registry.host}/team/sbom:again`);
    expect(first).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(second).toBe(first);
  });
});
