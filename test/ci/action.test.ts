import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatPlatform, hostPlatform } from "../../oci/platform.js";
import { projectRoot, tbuild, tbuildBin } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { startSshd } from "../helpers/sshd.js";
import { tempDirs } from "../helpers/temp.js";
import {
  type ActionFile,
  parseCommandFile,
  readYaml,
  runCacheAction,
  runCompositeAction,
} from "./runners.js";

const tempDir = tempDirs();
const actionFile = path.join(projectRoot, "action.yml");
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** docker/build-push-action v6's names, for the inputs tbuild's action takes. */
const INPUTS = [
  "context",
  "file",
  "tags",
  "push",
  "build-args",
  "target",
  "platforms",
  "labels",
  "outputs",
  "cache-from",
  "cache-to",
  "secrets",
  "no-cache",
  "provenance",
  "sbom",
  // tbuild's own: a remote worker.
  "worker",
  "worker-ssh-key",
  "worker-known-hosts",
  // tbuild's own: cache mounts kept in the actions cache.
  "cache-mounts",
];
const OUTPUTS = ["imageid", "digest", "metadata"];

let registry: RunningRegistry;
let env: NodeJS.ProcessEnv;
let workspace: string;

beforeAll(async () => {
  registry = await startRegistry();
  const dir = tempDir("action");
  writeFileSync(path.join(dir, "config.toml"), "");
  mkdirSync(path.join(dir, "docker"));
  env = {
    ...process.env,
    TBUILD_ROOT: path.join(dir, "store"),
    TBUILD_CONFIG: path.join(dir, "config.toml"),
    DOCKER_CONFIG: path.join(dir, "docker"),
    TBUILD_SKIP_INSTALL: "true",
  };
  await importBusybox(env.TBUILD_ROOT!, "busybox");
  workspace = path.join(dir, "workspace");
  mkdirSync(path.join(workspace, "app"), { recursive: true });
  writeFileSync(path.join(workspace, "app", "remote.Dockerfile"), "FROM busybox\nRUN echo remote > /where\n");
  writeFileSync(
    path.join(workspace, "app", "build.Dockerfile"),
    [
      "FROM busybox",
      "ARG GREETING",
      'RUN echo "$GREETING" > /greeting',
      // The secrets' checksums, not the secrets, go into the image.
      "RUN --mount=type=secret,id=token --mount=type=secret,id=multi \\",
      "    sha256sum /run/secrets/token /run/secrets/multi | cut -d' ' -f1 > /secret-sums",
      "",
    ].join("\n"),
  );
});

afterAll(async () => {
  await registry?.stop();
});

function inStore(args: string[]) {
  const result = tbuild(args, { env, cwd: workspace });
  if (result.status !== 0) throw new Error(`tbuild ${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout;
}

describe("action.yml", () => {
  const action = readYaml<ActionFile>(actionFile);

  it("declares build-push-action's inputs and outputs that tbuild supports, and no others", () => {
    expect(Object.keys(action.inputs).sort()).toEqual([...INPUTS].sort());
    expect(Object.keys(action.outputs).sort()).toEqual([...OUTPUTS].sort());
    expect(action.inputs.context!.default).toBe(".");
    expect(action.inputs.push!.default).toBe("false");
    expect(action.inputs["no-cache"]!.default).toBe("false");
    expect(action.runs.using).toBe("composite");
  });

  it("hands every input to its build step as INPUT_<NAME>, cache-mounts as the archive its step names", () => {
    const build = action.runs.steps.find((step) => step.id === "build")!;
    const expected = Object.fromEntries(
      INPUTS.filter((name) => name !== "cache-mounts").map((name) => [
        `INPUT_${name.toUpperCase().replaceAll("-", "_")}`,
        `\${{ inputs.${name} }}`,
      ]),
    );
    expect(build.env).toEqual({
      ...expected,
      TBUILD_CACHE_MOUNTS_ARCHIVE: "${{ steps.cache-mounts.outputs.archive }}",
    });
    const cacheKey = action.runs.steps.find((step) => step.id === "cache-mounts")!;
    expect(cacheKey.env).toEqual({ INPUT_CACHE_MOUNTS: "${{ inputs.cache-mounts }}" });
  });

  it("runs steps that are valid bash, and scripts that are too", () => {
    for (const step of action.runs.steps.filter((s) => s.uses === undefined)) {
      expect(step.shell).toBe("bash");
      const check = spawnSync("bash", ["-n", "-c", step.run!], { encoding: "utf8" });
      expect(check.stderr).toBe("");
      expect(check.status).toBe(0);
    }
    for (const script of [
      "ci/github/install.sh",
      "ci/github/build.sh",
      "ci/github/cache-key.sh",
      "ci/cache-mounts.sh",
    ]) {
      const check = spawnSync("bash", ["-n", path.join(projectRoot, script)], { encoding: "utf8" });
      expect(check.stderr).toBe("");
      expect(check.status).toBe(0);
    }
  });
});

describe("ci/README.md", () => {
  it("names every input and output of the action", () => {
    const readme = readFileSync(path.join(projectRoot, "ci", "README.md"), "utf8");
    const github = readme.slice(readme.indexOf("## GitHub Actions"), readme.indexOf("## GitLab CI"));
    for (const name of [...INPUTS, ...OUTPUTS]) expect(github, name).toContain(`\`${name}\``);
  });
});

describe("the action, run as a GitHub runner runs a composite action", () => {
  it("builds with build args, labels and secrets, pushes every tag, and gives imageid, digest and metadata", () => {
    const repository = `${registry.host}/app`;
    const platform = formatPlatform(hostPlatform());
    const token = "s3cret-token-value";
    const multi = "first line of a secret\nsecond line of it";
    const run = runCompositeAction(projectRoot, {
      cwd: workspace,
      env,
      with: {
        context: "app",
        file: "app/build.Dockerfile",
        tags: `${repository}:ci,${repository}:second`,
        push: "true",
        platforms: platform,
        "build-args": "GREETING=hello, from the action",
        labels: "org.opencontainers.image.title=tbuild action test\ncom.example.ci=github",
        secrets: `token=${token}\n"multi=${multi}"\n`,
      },
    });
    expect(run.log).toContain("tbuild: install skipped (TBUILD_SKIP_INSTALL=true)");
    expect(run.status, run.log).toBe(0);

    // The outputs, in GITHUB_OUTPUT's format.
    const file = run.outputFiles.build!;
    expect(file).toMatch(/^imageid=sha256:[0-9a-f]{64}$/m);
    expect(file).toMatch(/^digest=sha256:[0-9a-f]{64}$/m);
    expect(file).toMatch(/^metadata<<(ghadelimiter_[0-9a-f]+)\n\{\n[\s\S]*\n\}\n\1$/m);
    expect(parseCommandFile(file)).toEqual(run.outputs);
    const { imageid, digest, metadata } = run.outputs;
    expect(JSON.parse(metadata!)["containerimage.digest"]).toBe(digest);

    // The registry serves that digest under both tags; the store names it as the image ID.
    for (const tag of ["ci", "second"]) {
      const inspected = JSON.parse(
        execFileSync("skopeo", ["inspect", "--tls-verify=false", `docker://${repository}:${tag}`], {
          encoding: "utf8",
        }),
      );
      expect(inspected.Digest).toBe(digest);
    }
    const stored = JSON.parse(inStore(["inspect", `${repository}:ci`]));
    expect(stored.descriptor.digest).toBe(imageid);
    expect(`${stored.config.os}/${stored.config.architecture}`).toBe(
      platform.split("/").slice(0, 2).join("/"),
    );
    expect(stored.config.config.Labels).toMatchObject({
      "org.opencontainers.image.title": "tbuild action test",
      "com.example.ci": "github",
    });

    // The build argument (with its comma) and both secrets reached the RUN steps.
    const contents = inStore(["run", "--rm", `${repository}:ci`, "cat", "/greeting", "/secret-sums"]);
    expect(contents).toBe(`hello, from the action\n${sha256(token)}\n${sha256(multi)}\n`);

    // Secret values show in the log only where they are masked.
    const lines = run.log.split("\n");
    expect(lines.filter((line) => line.includes(token))).toEqual([`::add-mask::${token}`]);
    expect(lines).toContain(`::add-mask::${multi.replace("\n", "%0A")}`);
    expect(lines.filter((line) => line.includes("second line of it"))).toEqual([
      `::add-mask::${multi.replace("\n", "%0A")}`,
    ]);
  });

  it("without push, builds into the store only, and gives outputs still", () => {
    const repository = `${registry.host}/local-only`;
    const run = runCompositeAction(projectRoot, {
      cwd: workspace,
      env,
      with: {
        context: "app",
        file: "app/build.Dockerfile",
        tags: `${repository}:ci`,
        "build-args": "GREETING=kept here",
        secrets: "token=t\nmulti=m",
        "no-cache": "true",
      },
    });
    expect(run.status, run.log).toBe(0);
    expect(run.outputs.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(inStore(["run", "--rm", `${repository}:ci`, "cat", "/greeting"])).toBe("kept here\n");
    const inspect = spawnSync("skopeo", ["inspect", "--tls-verify=false", `docker://${repository}:ci`], {
      encoding: "utf8",
    });
    expect(inspect.status).not.toBe(0);
    expect(inspect.stderr).toMatch(/manifest unknown|name unknown/i);
  });

  it("builds several platforms as one index: pushed, and their files split by platform", () => {
    const dir = path.join(workspace, "multi");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, "Dockerfile"),
      "FROM scratch\nARG TARGETARCH\nCOPY arch-$TARGETARCH /arch\n",
    );
    for (const arch of ["amd64", "arm64"]) writeFileSync(path.join(dir, `arch-${arch}`), `${arch}\n`);
    const ref = `${registry.host}/multi:ci`;
    const run = runCompositeAction(projectRoot, {
      cwd: workspace,
      env,
      with: {
        context: "multi",
        tags: ref,
        push: "true",
        platforms: "linux/amd64\nlinux/arm64",
        outputs: `type=local,dest=${path.join(dir, "out")}`,
      },
    });
    expect(run.status, run.log).toBe(0);
    expect(readFileSync(path.join(dir, "out", "linux_amd64", "arch"), "utf8")).toBe("amd64\n");
    expect(readFileSync(path.join(dir, "out", "linux_arm64", "arch"), "utf8")).toBe("arm64\n");
    const index = JSON.parse(
      execFileSync("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`], {
        encoding: "utf8",
      }),
    ) as { manifests: { platform: { architecture: string } }[] };
    // A pushed image gets provenance by default, as with build-push-action: an attestation
    // manifest per platform after the images.
    expect(index.manifests.map((m) => m.platform.architecture)).toEqual([
      "amd64",
      "arm64",
      "unknown",
      "unknown",
    ]);
  });

  it("provenance: mode=max reaches the build, false keeps a pushed image one manifest", () => {
    const raw = (ref: string) =>
      JSON.parse(
        execFileSync("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`], {
          encoding: "utf8",
        }),
      ) as { mediaType: string; manifests?: { digest: string }[] };
    const withMax = `${registry.host}/attested:max`;
    const run = runCompositeAction(projectRoot, {
      cwd: workspace,
      env,
      with: {
        context: "app",
        file: "app/build.Dockerfile",
        tags: withMax,
        push: "true",
        provenance: "mode=max",
        "build-args": "GREETING=in the provenance",
        secrets: "token=t0ken-not-in-provenance\nmulti=m",
      },
    });
    expect(run.status, run.log).toBe(0);
    expect(run.log).toContain("--provenance=mode=max");
    const printed = inStore(["inspect", "--provenance", withMax]);
    expect(printed).toContain('"build-arg:GREETING": "in the provenance"');
    expect(printed).not.toContain("t0ken-not-in-provenance");
    expect(raw(withMax).manifests).toHaveLength(2);

    const without = `${registry.host}/attested:none`;
    const plain = runCompositeAction(projectRoot, {
      cwd: workspace,
      env,
      with: {
        context: "app",
        file: "app/build.Dockerfile",
        tags: without,
        push: "true",
        provenance: "false",
        secrets: "token=t\nmulti=m",
      },
    });
    expect(plain.status, plain.log).toBe(0);
    expect(raw(without).mediaType).toBe("application/vnd.oci.image.manifest.v1+json");

    // sbom is passed on: the stored image has an SPDX SBOM.
    const sbom = runCompositeAction(projectRoot, {
      cwd: workspace,
      env,
      with: {
        context: "app",
        file: "app/build.Dockerfile",
        tags: "sbom-from-action",
        sbom: "true",
        secrets: "token=t\nmulti=m",
      },
    });
    expect(sbom.status, sbom.log).toBe(0);
    expect(sbom.log).toContain("--sbom=true");
    const statements = JSON.parse(inStore(["inspect", "--sbom", "sbom-from-action"])) as Record<
      string,
      { predicateType: string }
    >;
    expect(Object.values(statements).map((s) => s.predicateType)).toEqual(["https://spdx.dev/Document"]);
  });

  it("refuses what tbuild cannot do yet, and malformed inputs, before building", () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ "cache-to": "type=local,dest=a\ntype=local,dest=b" }, "not supported yet: several cache-to entries"],
      [{ push: "yes" }, 'input push is "yes": give true or false'],
      [{ secrets: "token-without-a-value" }, "secrets: entry 1 is not id=value"],
      [
        { worker: "pool:builders", "worker-ssh-key": "token-without-a-value" },
        'an SSH key or known_hosts line is for an ssh:// worker; worker "pool:builders" is not one',
      ],
    ];
    for (const [inputs, message] of cases) {
      const run = runCompositeAction(projectRoot, {
        cwd: workspace,
        env,
        with: { context: "app", ...inputs },
      });
      expect(run.status).toBe(1);
      expect(run.log).toMatch(/^::error title=tbuild::/m);
      expect(run.log).toContain(message);
      expect(run.log).not.toContain("+ tbuild build");
      expect(run.log).not.toContain("token-without-a-value");
    }
  });
});

describe("the action with a remote worker", () => {
  it("builds on an ssh:// worker with the SSH key and known_hosts line of its inputs, and shows neither", async () => {
    const sshd = await startSshd();
    try {
      const workerStore = path.join(tempDir("action-worker"), "store");
      mkdirSync(workerStore);
      await importBusybox(workerStore, "busybox");
      execFileSync("chown", ["-R", "tbuild-test:", path.dirname(workerStore)]);
      chmodSync(path.dirname(workerStore), 0o755);
      const key = readFileSync(sshd.clientKey, "utf8");
      const repository = `${registry.host}/remote`;
      const run = runCompositeAction(projectRoot, {
        cwd: workspace,
        env: {
          ...env,
          // No agent and no ~/.ssh: the inputs are all the runner has.
          HOME: tempDir("action-home"),
          SSH_AUTH_SOCK: "",
          TBUILD_WORKER_COMMAND: `TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
        },
        with: {
          context: "app",
          file: "app/remote.Dockerfile",
          tags: `${repository}:ci`,
          worker: sshd.url,
          "worker-ssh-key": key,
          "worker-known-hosts": sshd.knownHostsLine("ed25519"),
        },
      });
      expect(run.status, run.log).toBe(0);
      expect(run.log).toContain(`#0 building on worker ci-worker (${sshd.url})`);
      expect(run.outputs.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      // The image came back to the runner's store.
      expect(inStore(["run", "--rm", `${repository}:ci`, "cat", "/where"])).toBe("remote\n");
      const keyLines = key.split("\n").filter((line) => line.length > 20);
      for (const line of keyLines) expect(run.log).not.toContain(line);
    } finally {
      await sshd.stop();
    }
  }, 180_000);
});

describe("the action with cache-mounts: the build's cache mounts kept in the actions cache", () => {
  /** A RUN whose cache mount tells whether an earlier build filled it, into the image's /state. */
  const MOUNT_STEP =
    "RUN --mount=type=cache,target=/cache sh -c 'if [ -f /cache/warm ]; then echo WARM; else echo COLD; touch /cache/warm; fi > /state'";
  let dir: string;
  let actionsCache: string;
  let runnerTemp: string;

  beforeAll(() => {
    dir = tempDir("action-mounts");
    actionsCache = path.join(dir, "actions-cache");
    // The same path in every job, as a hosted runner's _temp.
    runnerTemp = path.join(dir, "_temp");
    for (const [name, more] of [
      ["mounts", ""],
      ["mounts-fail", "RUN echo the build failed after the mount step >&2; exit 3\n"],
    ]) {
      mkdirSync(path.join(workspace, name!), { recursive: true });
      writeFileSync(path.join(workspace, name!, "Dockerfile"), `FROM busybox\n${MOUNT_STEP}\n${more}`);
    }
  });

  /** One job: a new, empty store (a new runner), the action with `cache-mounts`, the image's /state. */
  async function job(context: string, cacheMounts = "true") {
    const store = path.join(tempDir("action-mounts-store"), "store");
    await importBusybox(store, "busybox");
    const jobEnv = { ...env, TBUILD_ROOT: store };
    const run = runCompositeAction(projectRoot, {
      cwd: workspace,
      env: jobEnv,
      runnerTemp,
      cache: actionsCache,
      with: { context, tags: "mounts:ci", "cache-mounts": cacheMounts },
    });
    const state = tbuild(["run", "--rm", "mounts:ci", "cat", "/state"], { env: jobEnv, cwd: workspace });
    return { ...run, state: state.status === 0 ? state.stdout.trim() : undefined };
  }

  const savedKeys = () =>
    readdirSync(actionsCache).map(
      (entry) => JSON.parse(readFileSync(path.join(actionsCache, entry, "entry.json"), "utf8")).key as string,
    );
  const archive = () => path.join(runnerTemp, "tbuild-cache-mounts", "tbuild-cache-mounts.tar.zst");

  it("a first job builds cold and saves the mounts; the next, in an empty store, restores them and builds warm", async () => {
    const first = await job("mounts");
    expect(first.status, first.log).toBe(0);
    expect(first.state).toBe("COLD");
    expect(first.log).toContain(
      `tbuild: no cache mounts to import: ${archive()} is not there (a first run, or the CI cache has none yet)`,
    );
    expect(first.log).not.toContain("::warning");
    expect(first.log).toMatch(/^tbuild: exported 1 cache mount\(s\)/m);
    const [firstKey] = savedKeys();
    expect(first.log).toContain(`Cache saved with key: ${firstKey}`);
    expect(firstKey).toMatch(/^tbuild-cache-mounts-run-\d+-1$/);

    const second = await job("mounts");
    expect(second.status, second.log).toBe(0);
    expect(second.log).toContain(`Cache restored from key: ${firstKey}`);
    expect(second.log).toMatch(/^tbuild: imported 1 cache mount\(s\)/m);
    expect(second.state).toBe("WARM");
    // Saved again under a key of its own: an entry is never overwritten.
    expect(savedKeys()).toHaveLength(2);
    expect(new Set(savedKeys()).size).toBe(2);
  }, 180_000);

  it("a failed build fails the action, and still saves its mounts for the next job", async () => {
    const before = savedKeys().length;
    const failed = await job("mounts-fail", "after-a-failure");
    expect(failed.status).not.toBe(0);
    expect(failed.log).toContain("the build failed after the mount step");
    expect(failed.log).toMatch(/^tbuild: exported 1 cache mount\(s\)/m);
    expect(failed.log).toMatch(/^Cache saved with key: after-a-failure-run-\d+-1$/m);
    expect(savedKeys()).toHaveLength(before + 1);

    const next = await job("mounts", "after-a-failure");
    expect(next.status, next.log).toBe(0);
    expect(next.state).toBe("WARM");
  }, 180_000);

  it("a corrupt archive in the cache: a warning naming it, a cold build, and a good archive saved", async () => {
    // The newest entry of the name holds garbage bytes where the archive should be.
    mkdirSync(path.dirname(archive()), { recursive: true });
    writeFileSync(archive(), Buffer.from("this is not a zstd tar archive at all\n".repeat(50)));
    runCacheAction(
      "actions/cache/save@v4",
      { path: archive(), key: "tbuild-cache-mounts-run-garbage" },
      actionsCache,
    );

    const corrupt = await job("mounts");
    expect(corrupt.status, corrupt.log).toBe(0);
    expect(corrupt.log).toContain("Cache restored from key: tbuild-cache-mounts-run-garbage");
    const warnings = corrupt.log.split("\n").filter((line) => line.startsWith("::warning"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(
      `::warning title=tbuild::cache mounts not imported from ${archive()}, building without them:`,
    );
    expect(corrupt.state).toBe("COLD");

    // Its own save is the newest entry now: the next job is warm again.
    const healed = await job("mounts");
    expect(healed.status, healed.log).toBe(0);
    expect(healed.log).not.toContain("tbuild-cache-mounts-run-garbage");
    expect(healed.state).toBe("WARM");
  }, 240_000);

  it("refuses a cache-mounts name actions/cache cannot take, and cache-mounts with a remote worker", async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [
        { "cache-mounts": "my cache, please" },
        'input cache-mounts is "my cache, please": give true, false, or a name',
      ],
      [
        { "cache-mounts": "true", worker: "pool:builders" },
        "not supported yet: cache-mounts with a remote worker",
      ],
    ];
    for (const [inputs, message] of cases) {
      const run = runCompositeAction(projectRoot, {
        cwd: workspace,
        env,
        runnerTemp,
        cache: actionsCache,
        with: { context: "mounts", ...inputs },
      });
      expect(run.status).toBe(1);
      expect(run.log).toMatch(/^::error title=tbuild::/m);
      expect(run.log).toContain(message);
      expect(run.log).not.toContain("+ tbuild build");
    }
  });
});
