/**
 * SLSA provenance, stored as BuildKit's attestation storage says: judged from outside by skopeo
 * (the index and its attestation manifests as a registry serves them, and a copy of all of it),
 * podman (each platform's image still runs), and by reading the statements themselves against
 * what the SLSA v1 and in-toto v1 specifications require of them.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH, importArm64Busybox, importBusybox } from "../helpers/images.js";
import { PrivatePodman } from "../helpers/judges.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";
import { lockBinfmt, withAarch64Handler } from "../hostile/binfmt.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const SECRET = "s3cret-value-never-stored-4f1e";

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string };
}
interface Statement {
  _type: string;
  subject: { name: string; digest: { sha256: string } }[];
  predicateType: string;
  // biome-ignore lint/suspicious/noExplicitAny: a statement's JSON, its fields checked one by one below
  predicate: Record<string, any>;
}

const skopeo = (args: string[]) => execFileSync("skopeo", args, { encoding: "utf8" });
const raw = (ref: string) =>
  JSON.parse(skopeo(["inspect", "--tls-verify=false", "--raw", `docker://${ref}`])) as {
    mediaType: string;
    manifests: Descriptor[];
    config: Descriptor;
    layers: Descriptor[];
    subject?: Descriptor;
    artifactType?: string;
  };
/** A blob of a registry's repository, fetched over plain HTTP. */
async function blob(registry: RunningRegistry, repository: string, digest: string): Promise<Buffer> {
  const response = await fetch(`http://${registry.host}/v2/${repository}/blobs/${digest}`);
  expect(response.status).toBe(200);
  return Buffer.from(await response.arrayBuffer());
}
const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

/** What SLSA provenance v1 and in-toto Statement v1 require, by hand from the specifications. */
function expectSlsaV1(statement: Statement): void {
  expect(statement._type).toBe("https://in-toto.io/Statement/v1");
  expect(statement.predicateType).toBe("https://slsa.dev/provenance/v1");
  expect(statement.subject.length).toBeGreaterThan(0);
  for (const subject of statement.subject) {
    expect(typeof subject.name).toBe("string");
    expect(subject.digest.sha256).toMatch(/^[0-9a-f]{64}$/);
  }
  const { buildDefinition, runDetails } = statement.predicate;
  expect(typeof buildDefinition.buildType).toBe("string");
  expect(new URL(buildDefinition.buildType).protocol).toBe("https:");
  expect(typeof buildDefinition.externalParameters).toBe("object");
  expect(Array.isArray(buildDefinition.resolvedDependencies)).toBe(true);
  for (const dependency of buildDefinition.resolvedDependencies) {
    expect(typeof dependency.uri).toBe("string");
    expect(Object.keys(dependency.digest).length).toBeGreaterThan(0);
  }
  expect(typeof runDetails.builder.id).toBe("string");
  for (const time of [runDetails.metadata.startedOn, runDetails.metadata.finishedOn]) {
    expect(time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  }
}

describe("provenance of a two-platform image pushed to a registry", () => {
  let registry: RunningRegistry;
  let store = "";
  let releaseBinfmt: (() => Promise<void>) | undefined;
  const ref = () => `${registry.host}/team/attested:1`;
  let baseDigests: Record<string, string> = {};
  let context = "";
  beforeAll(async () => {
    releaseBinfmt = await lockBinfmt();
    registry = await startRegistry();
    store = tempDir("prov-store");
    await importBusybox(store, "bb-amd64");
    await importArm64Busybox(store, "bb-arm64");
    baseDigests = {};
    for (const arch of ["amd64", "arm64"]) {
      const inspected = JSON.parse(
        tbuild(["inspect", `bb-${arch}`], { env: { TBUILD_ROOT: store } }).stdout,
      ) as { descriptor: { digest: string } };
      baseDigests[arch] = inspected.descriptor.digest;
    }
    context = tempDir("prov-ctx");
    writeFileSync(path.join(context, "Dockerfile"), "FROM bb-$TARGETARCH\nARG FLAVOUR\nCOPY hello /hello\n");
    writeFileSync(path.join(context, "hello"), "hello\n");
    const built = tbuild(
      [
        "build",
        "--progress=plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "--build-arg",
        "FLAVOUR=min-mode-hides-this",
        "-t",
        ref(),
        "--push",
        context,
      ],
      { env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(built.status, built.stderr).toBe(0);
  }, 180_000);
  afterAll(async () => {
    await registry?.stop();
    await releaseBinfmt?.();
  });

  it("the pushed index lists each image, then an attestation manifest per platform naming it", () => {
    const index = raw(ref());
    expect(index.manifests.map((m) => `${m.platform?.os}/${m.platform?.architecture}`)).toEqual([
      "linux/amd64",
      "linux/arm64",
      "unknown/unknown",
      "unknown/unknown",
    ]);
    const [amd64, arm64, ...attestations] = index.manifests;
    expect(attestations.map((a) => a.annotations)).toEqual([
      { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd64!.digest },
      { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": arm64!.digest },
    ]);
    for (const [i, attestation] of attestations.entries()) {
      const manifest = raw(`${registry.host}/team/attested@${attestation.digest}`);
      // The OCI artifact form, BuildKit's default: a subject, an artifactType, the empty config.
      expect(manifest.artifactType).toBe("application/vnd.docker.attestation.manifest.v1+json");
      expect(manifest.subject?.digest).toBe([amd64, arm64][i]!.digest);
      expect(manifest.config.mediaType).toBe("application/vnd.oci.empty.v1+json");
      expect(manifest.layers.map((l) => [l.mediaType, l.annotations])).toEqual([
        ["application/vnd.in-toto+json", { "in-toto.io/predicate-type": "https://slsa.dev/provenance/v1" }],
      ]);
    }
  });

  it("each statement is SLSA v1 about its platform's manifest, lists the base image's digest, and no build arg value (mode=min)", async () => {
    const index = raw(ref());
    for (const [i, arch] of ["amd64", "arm64"].entries()) {
      const image = index.manifests[i]!;
      const manifest = raw(`${registry.host}/team/attested@${index.manifests[2 + i]!.digest}`);
      const bytes = await blob(registry, "team/attested", manifest.layers[0]!.digest);
      const statement = JSON.parse(bytes.toString("utf8")) as Statement;
      expectSlsaV1(statement);
      expect(statement.subject).toEqual([
        {
          name: `pkg:docker/${registry.host}/team/attested@1?platform=linux%2F${arch}`,
          digest: { sha256: image.digest.slice("sha256:".length) },
        },
      ]);
      expect(statement.predicate.buildDefinition.resolvedDependencies).toContainEqual({
        uri: `pkg:docker/bb-${arch}@latest?platform=linux%2F${arch}`,
        digest: { sha256: baseDigests[arch]!.slice("sha256:".length) },
      });
      expect(bytes.toString("utf8")).not.toContain("min-mode-hides-this");
      expect(statement.predicate.buildDefinition.internalParameters.buildConfig).toBeUndefined();
    }
  });

  it("tbuild inspect --provenance prints each platform's statement, from the store and from the registry", () => {
    const index = raw(ref());
    const emptyStore = tempDir("prov-inspect-empty");
    for (const root of [store, emptyStore]) {
      const inspected = tbuild(["inspect", "--provenance", ref()], { env: { TBUILD_ROOT: root } });
      expect(inspected.status, inspected.stderr).toBe(0);
      const byPlatform = JSON.parse(inspected.stdout) as Record<string, Statement>;
      expect(Object.keys(byPlatform)).toEqual(["linux/amd64", "linux/arm64"]);
      expect(byPlatform["linux/amd64"]!.subject[0]!.digest.sha256).toBe(index.manifests[0]!.digest.slice(7));
      expect(byPlatform["linux/arm64"]!.subject[0]!.digest.sha256).toBe(index.manifests[1]!.digest.slice(7));
    }
    // tbuild images lists the image's platforms, not its attestations' unknown/unknown.
    const table = tbuild(["images"], { env: { TBUILD_ROOT: store } }).stdout.split("\n");
    expect(table.find((row) => row.includes("team/attested "))).toMatch(/ linux\/amd64,linux\/arm64$/);
    const none = tbuild(["inspect", "--provenance", "bb-amd64"], { env: { TBUILD_ROOT: store } });
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/bb-amd64:latest has no provenance attestation: build it with --provenance/);
  });

  it("skopeo copies the whole index, attestations included, into another repository", () => {
    const other = `${registry.host}/copies/attested:1`;
    skopeo([
      "copy",
      "--all",
      "--src-tls-verify=false",
      "--dest-tls-verify=false",
      `docker://${ref()}`,
      `docker://${other}`,
    ]);
    // skopeo's index type has no artifactType: the entries as it knows them, in order.
    const entries = (r: string) =>
      raw(r).manifests.map(({ digest, annotations, platform }) => ({ digest, annotations, platform }));
    expect(entries(other)).toEqual(entries(ref()));
    expect(entries(other).map((e) => e.annotations?.["vnd.docker.reference.type"])).toEqual([
      undefined,
      undefined,
      "attestation-manifest",
      "attestation-manifest",
    ]);
    const dir = tempDir("prov-copy");
    skopeo(["copy", "--all", "--src-tls-verify=false", `docker://${ref()}`, `dir:${dir}`]);
    expect(readdirSync(dir).length).toBeGreaterThan(6);
  });

  it("podman still runs each platform's image (the arm64 one under qemu-user-static)", () => {
    const restore = withAarch64Handler();
    try {
      for (const platform of ["linux/amd64", "linux/arm64"]) {
        const podman = new PrivatePodman(tempDir(`prov-podman-${platform.replace("/", "-")}`));
        podman.pull(ref(), platform);
        const ran = podman.runOn(platform, ref(), "cat", "/hello");
        expect(ran.status, ran.stderr).toBe(0);
        expect(ran.stdout).toBe("hello\n");
      }
    } finally {
      restore();
    }
  });

  it("the same build again with SOURCE_DATE_EPOCH gives the same index digest, attestations included", () => {
    const digestOf = (r: string) =>
      `sha256:${sha256(Buffer.from(skopeo(["inspect", "--tls-verify=false", "--raw", `docker://${r}`])))}`;
    const first = digestOf(ref());
    const rebuilt = tbuild(
      [
        "build",
        "--progress=plain",
        "--no-cache",
        "--platform",
        "linux/amd64,linux/arm64",
        "--build-arg",
        "FLAVOUR=min-mode-hides-this",
        "-t",
        ref(),
        "--push",
        context,
      ],
      { env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(rebuilt.status, rebuilt.stderr).toBe(0);
    expect(rebuilt.stderr).toMatch(/\[linux\/arm64 2\/2\] COPY hello \/hello\n(?!.*CACHED)/);
    expect(raw(ref()).manifests).toHaveLength(4);
    expect(digestOf(ref())).toBe(first);
  });
});

describe("provenance flags and outputs", () => {
  let store = "";
  beforeAll(async () => {
    store = tempDir("prov-flags-store");
    await importBusybox(store, "busybox");
  }, 120_000);
  const build = (args: string[], env: Record<string, string> = {}) =>
    tbuild(["build", "--progress=plain", ...args], {
      env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH, ...env },
    });
  function secretContext(): string {
    const dir = tempDir("prov-secret");
    writeFileSync(
      path.join(dir, "Dockerfile"),
      "FROM busybox\nARG FLAVOUR\nRUN --mount=type=secret,id=token test -s /run/secrets/token && echo $FLAVOUR > /flavour\n",
    );
    return dir;
  }
  /** The statements of an OCI archive's attestation manifests, and its image manifests. */
  function archiveAttestations(tar: string) {
    const dir = tempDir("prov-untar");
    execFileSync("tar", ["-xf", tar, "-C", dir]);
    const read = (digest: string) => readFileSync(path.join(dir, "blobs", "sha256", digest.slice(7)));
    const top = JSON.parse(readFileSync(path.join(dir, "index.json"), "utf8")) as { manifests: Descriptor[] };
    const index = JSON.parse(read(top.manifests[0]!.digest).toString()) as { manifests: Descriptor[] };
    const attestations = index.manifests.filter(
      (m) => m.annotations?.["vnd.docker.reference.type"] === "attestation-manifest",
    );
    const statements = attestations.map((a) => {
      const manifest = JSON.parse(read(a.digest).toString()) as {
        layers: Descriptor[];
        config: Descriptor;
        subject?: Descriptor;
      };
      return { manifest, statement: JSON.parse(read(manifest.layers[0]!.digest).toString()) as Statement };
    });
    const allBlobs = readdirSync(path.join(dir, "blobs", "sha256")).map((f) =>
      read(`sha256:${f}`).toString("latin1"),
    );
    return { index, statements, allBlobs };
  }

  it("mode=max lists build arg values, secret ids and the steps, and never a secret's value", () => {
    const out = path.join(tempDir("prov-max"), "image.tar");
    const built = build(
      [
        "--provenance=mode=max",
        "--build-arg",
        "FLAVOUR=max-shows-this",
        "--secret",
        "id=token,env=TOKEN",
        "-o",
        `type=oci,dest=${out}`,
        secretContext(),
      ],
      { TOKEN: SECRET },
    );
    expect(built.status, built.stderr).toBe(0);
    const { index, statements, allBlobs } = archiveAttestations(out);
    expect(index.manifests).toHaveLength(2);
    const { statement } = statements[0]!;
    expectSlsaV1(statement);
    expect(statement.subject[0]!.digest.sha256).toBe(index.manifests[0]!.digest.slice(7));
    const request = statement.predicate.buildDefinition.externalParameters.request;
    expect(request.args["build-arg:FLAVOUR"]).toBe("max-shows-this");
    expect(request.secrets).toEqual([{ id: "token" }]);
    const steps = statement.predicate.buildDefinition.internalParameters.buildConfig.llbDefinition as {
      op: { kind: string };
    }[];
    expect(steps.map((s) => s.op.kind)).toEqual(["image", "exec"]);
    for (const text of allBlobs) expect(text).not.toContain(SECRET);
  });

  it("--attest type=provenance,version=v0.2 writes SLSA v0.2 with its materials, in the legacy form with oci-artifact=false", () => {
    const out = path.join(tempDir("prov-v02"), "image.tar");
    const built = build(
      [
        "--attest",
        "type=provenance,version=v0.2",
        "-o",
        `type=oci,dest=${out},oci-artifact=false`,
        secretContext(),
        "--secret",
        "id=token,env=TOKEN",
      ],
      { TOKEN: SECRET },
    );
    expect(built.status, built.stderr).toBe(0);
    const { statements } = archiveAttestations(out);
    const { manifest, statement } = statements[0]!;
    expect(manifest.subject).toBeUndefined();
    expect(manifest.config.mediaType).toBe("application/vnd.oci.image.config.v1+json");
    expect(statement._type).toBe("https://in-toto.io/Statement/v0.1");
    expect(statement.predicateType).toBe("https://slsa.dev/provenance/v0.2");
    expect(statement.predicate.buildType).toBe("https://mobyproject.org/buildkit@v1");
    expect(statement.predicate.materials[0].uri).toBe("pkg:docker/busybox@latest?platform=linux%2Famd64");
  });

  it("type=local gets provenance.json about the output's files; type=docker leaves it out with a warning", () => {
    const dir = tempDir("prov-local");
    const out = path.join(dir, "out");
    const docker = path.join(dir, "image.docker.tar");
    const built = build(
      [
        "--provenance",
        "-o",
        `type=local,dest=${out}`,
        "-o",
        `type=docker,dest=${docker}`,
        secretContext(),
        "--secret",
        "id=token,env=TOKEN",
      ],
      { TOKEN: SECRET },
    );
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toMatch(
      /type=docker holds one image and no index: its attestations \(provenance\) are left out/,
    );
    const statement = JSON.parse(readFileSync(path.join(out, "provenance.json"), "utf8")) as Statement;
    expectSlsaV1(statement);
    const flavour = statement.subject.find((s) => s.name === "flavour");
    expect(flavour?.digest.sha256).toBe(sha256(readFileSync(path.join(out, "flavour"))));
  });

  it("an OCI archive with provenance loads into another store, runs, and keeps its statement", () => {
    const dir = tempDir("prov-load");
    const ctx = path.join(dir, "ctx");
    mkdirSync(ctx);
    writeFileSync(
      path.join(ctx, "Dockerfile"),
      'FROM busybox\nRUN echo loaded > /said\nCMD ["cat", "/said"]\n',
    );
    const archive = path.join(dir, "image.tar");
    const built = build(["--provenance", "-o", `type=oci,dest=${archive},name=loaded:1`, ctx]);
    expect(built.status, built.stderr).toBe(0);
    const other = { TBUILD_ROOT: path.join(dir, "store") };
    const loaded = tbuild(["load", "-i", archive], { env: other });
    expect(loaded.status, loaded.stderr).toBe(0);
    expect(tbuild(["run", "--rm", "loaded:1"], { env: other }).stdout).toBe("loaded\n");
    const inspected = tbuild(["inspect", "--provenance", "loaded:1"], { env: other });
    expect(inspected.status, inspected.stderr).toBe(0);
    expect(Object.keys(JSON.parse(inspected.stdout))).toEqual(["linux/amd64"]);
  });

  it("a context in a git checkout: its commit and remote (without credentials); outside one, nothing", () => {
    const git = (dir: string, ...args: string[]) =>
      execFileSync("git", ["-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com", ...args], {
        encoding: "utf8",
      }).trim();
    const checkout = secretContext();
    git(checkout, "init", "-q");
    git(checkout, "remote", "add", "origin", "https://builder:t0ken-in-url@example.com/team/app.git");
    git(checkout, "add", "-A");
    git(checkout, "commit", "-q", "-m", "first");
    const commit = git(checkout, "rev-parse", "HEAD");
    const metadataOf = (ctx: string) => {
      const out = path.join(tempDir("prov-git"), "out");
      const built = build(
        ["--provenance", "-o", `type=local,dest=${out}`, "--secret", "id=token,env=TOKEN", ctx],
        {
          TOKEN: SECRET,
        },
      );
      expect(built.status, built.stderr).toBe(0);
      const text = readFileSync(path.join(out, "provenance.json"), "utf8");
      return { text, metadata: (JSON.parse(text) as Statement).predicate.runDetails.metadata };
    };
    const inGit = metadataOf(checkout);
    expect(inGit.metadata.buildkit_metadata.vcs).toEqual({
      source: "https://example.com/team/app.git",
      revision: commit,
    });
    expect(inGit.text).not.toContain("t0ken-in-url");
    expect(metadataOf(secretContext()).metadata.buildkit_metadata).toBeUndefined();
  });

  it("--provenance=false keeps a pushed image a single manifest", async () => {
    const registry = await startRegistry();
    try {
      const ref = `${registry.host}/team/plain:1`;
      const pushed = build(
        ["--provenance=false", "-t", ref, "--push", secretContext(), "--secret", "id=token,env=TOKEN"],
        { TOKEN: SECRET },
      );
      expect(pushed.status, pushed.stderr).toBe(0);
      expect(raw(ref).mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    } finally {
      await registry.stop();
    }
  });
});
