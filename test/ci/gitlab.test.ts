import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot, tbuildBin } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { startSshd } from "../helpers/sshd.js";
import { tempDirs } from "../helpers/temp.js";
import { busyboxArchive, ModeEnv, modes } from "../runtime/harness.js";
import { type GitLabJob, readYaml, runGitLabJob } from "./runners.js";

const tempDir = tempDirs();
const template = path.join(projectRoot, "ci", "gitlab", "tbuild.gitlab-ci.yml");
const USER = "gitlab-ci-token";
const PASSWORD = "job-token-value";

let registry: RunningRegistry;
let env: NodeJS.ProcessEnv;
let dir: string;

beforeAll(async () => {
  registry = await startRegistry({ htpasswd: { [USER]: PASSWORD } });
  dir = tempDir("gitlab");
  writeFileSync(path.join(dir, "config.toml"), "");
  env = {
    ...process.env,
    TBUILD_ROOT: path.join(dir, "store"),
    TBUILD_CONFIG: path.join(dir, "config.toml"),
  };
  await importBusybox(env.TBUILD_ROOT!, "busybox");
});

afterAll(async () => {
  await registry?.stop();
});

/** A clone of a project with a Dockerfile whose image prints its greeting. */
function project(name: string): string {
  const projectDir = path.join(dir, name);
  mkdirSync(projectDir);
  writeFileSync(
    path.join(projectDir, "Dockerfile"),
    // Cross-compiling style: the same busybox steps serve every target platform.
    'FROM --platform=$BUILDPLATFORM busybox\nARG GREETING\nARG TARGETARCH\nRUN echo "$GREETING for $TARGETARCH" > /greeting\nCMD ["cat", "/greeting"]\n',
  );
  return projectDir;
}

/** The template's `tbuild` job on `branch`, as a pipeline of a project that includes it. */
function pipeline(
  branch: string,
  sha: string,
  testCommand?: string,
  more: { project?: Record<string, string>; env?: NodeJS.ProcessEnv } = {},
) {
  const projectDir = project(`${branch}-${sha}`);
  const dockerConfig = path.join(projectDir, "..", `docker-${branch}-${sha}`);
  mkdirSync(dockerConfig);
  const run = runGitLabJob(template, "tbuild", {
    // The user's .gitlab-ci.yml: `include:` the template, then set the job's variables.
    overrides: {
      tbuild: {
        variables: {
          TBUILD_BUILD_FLAGS: '--build-arg "GREETING=hello from $CI_COMMIT_BRANCH"',
          ...(testCommand !== undefined ? { TBUILD_TEST_COMMAND: testCommand } : {}),
        },
      },
    },
    predefined: {
      CI_REGISTRY: registry.host,
      CI_REGISTRY_USER: USER,
      CI_REGISTRY_PASSWORD: PASSWORD,
      CI_REGISTRY_IMAGE: `${registry.host}/group/project`,
      CI_COMMIT_SHORT_SHA: sha,
      CI_COMMIT_BRANCH: branch,
      CI_DEFAULT_BRANCH: "main",
    },
    // An image with tbuild in TBUILD_HOME: the template's install finds it there.
    project: { TBUILD_HOME: projectRoot, ...more.project },
    env: { ...env, DOCKER_CONFIG: dockerConfig, ...more.env },
    projectDir,
  });
  return { ...run, projectDir, dockerConfig };
}

/** skopeo's view of the project's registry, with the job's credentials. */
function inspectInRegistry(reference: string) {
  const result = spawnSync(
    "skopeo",
    ["inspect", "--tls-verify=false", "--creds", `${USER}:${PASSWORD}`, `docker://${reference}`],
    { encoding: "utf8" },
  );
  return {
    status: result.status,
    stderr: result.stderr,
    digest: result.status === 0 ? JSON.parse(result.stdout).Digest : undefined,
  };
}

/** The manifest or index the registry serves for `reference`, as stored. */
function rawInRegistry(reference: string): unknown {
  return JSON.parse(
    execFileSync(
      "skopeo",
      ["inspect", "--raw", "--tls-verify=false", "--creds", `${USER}:${PASSWORD}`, `docker://${reference}`],
      { encoding: "utf8" },
    ),
  );
}

function dotenv(file: string): Record<string, string> {
  return Object.fromEntries(
    readFileSync(file, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );
}

describe("the GitLab CI template", () => {
  it("is YAML with a job that extends a hidden .tbuild job, and valid shell", () => {
    const config = readYaml<Record<string, GitLabJob>>(template);
    expect(config.tbuild!.extends).toBe(".tbuild");
    expect(config.tbuild!.rules![0]).toEqual({
      if: "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH",
      variables: { TBUILD_PUSH: "true" },
    });
    expect(config[".tbuild"]!.artifacts).toEqual({ reports: { dotenv: "tbuild.env" } });
    // GitLab runs the script in bash, or in sh when the image has no bash: it must suit both.
    const script = [...config[".tbuild"]!.before_script!, ...config[".tbuild"]!.script!].join("\n");
    for (const shell of ["bash", "sh"]) {
      const check = spawnSync(shell, ["-n", "-c", script], { encoding: "utf8" });
      expect(check.stderr).toBe("");
      expect(check.status).toBe(0);
    }
    const check = spawnSync("bash", ["-n", path.join(projectRoot, "ci/gitlab/tbuild.sh")], {
      encoding: "utf8",
    });
    expect(check.status).toBe(0);
  });

  it("on another branch: builds, runs the image's own command as the test, and pushes nothing", () => {
    const job = pipeline("feature-x", "f00d001");
    expect(job.ran).toBe(true);
    expect(job.variables.TBUILD_PUSH).toBe("false");
    expect(job.status, job.log).toBe(0);
    expect(job.log).toContain("\nhello from feature-x for amd64\n");
    expect(job.log).toContain("is not pushed");
    const image = `${registry.host}/group/project:f00d001`;
    expect(dotenv(path.join(job.projectDir, "tbuild.env"))).toMatchObject({ TBUILD_IMAGE: image });
    const inspected = inspectInRegistry(image);
    expect(inspected.status).not.toBe(0);
    expect(inspected.stderr).toMatch(/manifest unknown|name unknown/i);
  });

  it("on the default branch: logs in with the job's credentials, tests with TBUILD_TEST_COMMAND, pushes", () => {
    const job = pipeline("main", "cafe002", `sh -c 'echo "test saw: $(cat /greeting)"'`);
    expect(job.variables.TBUILD_PUSH).toBe("true");
    expect(job.status, job.log).toBe(0);
    expect(job.log).toContain("\ntest saw: hello from main for amd64\n");
    const auths = JSON.parse(readFileSync(path.join(job.dockerConfig, "config.json"), "utf8")).auths;
    expect(Object.keys(auths)).toContain(registry.host);
    const image = `${registry.host}/group/project:cafe002`;
    const report = dotenv(path.join(job.projectDir, "tbuild.env"));
    expect(report.TBUILD_IMAGE).toBe(image);
    expect(inspectInRegistry(image).digest).toBe(report.TBUILD_DIGEST);
    // Pushed: with mode=min provenance, as buildx gives a pushed image.
    const index = rawInRegistry(image) as { manifests: { annotations?: Record<string, string> }[] };
    expect(index.manifests.map((m) => m.annotations?.["vnd.docker.reference.type"])).toEqual([
      undefined,
      "attestation-manifest",
    ]);
  });

  it("TBUILD_PROVENANCE=false: the pushed image is one manifest, without attestations", () => {
    const job = pipeline("main", "cafe00f", "true", { project: { TBUILD_PROVENANCE: "false" } });
    expect(job.status, job.log).toBe(0);
    expect(job.log).toContain("--provenance=false");
    const raw = rawInRegistry(`${registry.host}/group/project:cafe00f`) as { mediaType: string };
    expect(raw.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
  });

  it("TBUILD_SBOM=true: the pushed image's attestation manifest holds its SBOM beside its provenance", () => {
    const job = pipeline("main", "cafe05b", "true", { project: { TBUILD_SBOM: "true" } });
    expect(job.status, job.log).toBe(0);
    expect(job.log).toContain("--sbom=true");
    const image = `${registry.host}/group/project:cafe05b`;
    const index = rawInRegistry(image) as { manifests: { digest: string }[] };
    const attestation = rawInRegistry(`${registry.host}/group/project@${index.manifests[1]!.digest}`) as {
      layers: { annotations: Record<string, string> }[];
    };
    expect(attestation.layers.map((l) => l.annotations["in-toto.io/predicate-type"])).toEqual([
      "https://slsa.dev/provenance/v1",
      "https://spdx.dev/Document",
    ]);
  });

  it("TBUILD_PLATFORMS: one index of both platforms is tested on the runner's and pushed", () => {
    const job = pipeline("main", "beef004", undefined, {
      project: { TBUILD_PLATFORMS: "linux/amd64,linux/arm64" },
    });
    expect(job.status, job.log).toBe(0);
    // The test ran the runner's platform of the index.
    expect(job.log).toContain("\nhello from main for amd64\n");
    const image = `${registry.host}/group/project:beef004`;
    const raw = spawnSync(
      "skopeo",
      ["inspect", "--raw", "--tls-verify=false", "--creds", `${USER}:${PASSWORD}`, `docker://${image}`],
      { encoding: "utf8" },
    );
    expect(raw.status, raw.stderr).toBe(0);
    const index = JSON.parse(raw.stdout) as { manifests: { platform: { architecture: string } }[] };
    // Each platform's image, then its provenance (the default of a pushing job).
    expect(index.manifests.map((m) => m.platform.architecture)).toEqual([
      "amd64",
      "arm64",
      "unknown",
      "unknown",
    ]);
    const report = dotenv(path.join(job.projectDir, "tbuild.env"));
    expect(report.TBUILD_DIGEST).toBe(`sha256:${createHash("sha256").update(raw.stdout).digest("hex")}`);
  });

  it("on the default branch, an image that fails its test is not pushed", () => {
    const job = pipeline("main", "bad0003", "sh -c 'echo the test failed >&2; exit 3'");
    expect(job.status).not.toBe(0);
    expect(job.log).toContain("the test failed");
    const inspected = inspectInRegistry(`${registry.host}/group/project:bad0003`);
    expect(inspected.status).not.toBe(0);
    expect(inspected.stderr).toMatch(/manifest unknown|name unknown/i);
  });
});

describe("ci/README.md", () => {
  it("names every variable of the template", () => {
    const readme = readFileSync(path.join(projectRoot, "ci", "README.md"), "utf8");
    const gitlab = readme.slice(readme.indexOf("## GitLab CI"));
    const variables = Object.keys(readYaml<Record<string, GitLabJob>>(template)[".tbuild"]!.variables!);
    expect(variables).toContain("TBUILD_CACHE_MOUNTS");
    for (const name of variables) expect(gitlab, name).toContain(`\`${name}\``);
  });
});

describe("the GitLab CI template with TBUILD_CACHE_MOUNTS: cache mounts kept in the job's cache", () => {
  /** A RUN whose cache mount tells whether an earlier build filled it, into the image's /state. */
  const MOUNT_STEP =
    "RUN --mount=type=cache,target=/cache sh -c 'if [ -f /cache/warm ]; then echo WARM; else echo COLD; touch /cache/warm; fi > /state'";
  const ARCHIVE = ".tbuild-cache/cache-mounts.tar.zst";
  let runnerCache: string;
  let count = 0;

  beforeAll(() => {
    runnerCache = path.join(tempDir("gitlab-runner-cache"), "cache");
  });

  /**
   * A job on a new runner: a fresh clone and an empty store, the runner's cache shared. Its test
   * prints the image's /state, then what the build's context held.
   */
  async function mountsJob(jobName: string, options: { more?: string; clone?: (dir: string) => void } = {}) {
    count++;
    const projectDir = path.join(dir, `mounts-${count}`);
    mkdirSync(projectDir);
    writeFileSync(
      path.join(projectDir, "Dockerfile"),
      `FROM busybox\n${MOUNT_STEP}\n${options.more ?? ""}COPY . /context/\n`,
    );
    options.clone?.(projectDir);
    const store = path.join(tempDir("gitlab-mounts-store"), "store");
    await importBusybox(store, "busybox");
    return runGitLabJob(template, "tbuild", {
      overrides: { tbuild: { variables: { TBUILD_TEST_COMMAND: "sh -c 'cat /state; ls -A /context'" } } },
      predefined: {
        CI_REGISTRY_IMAGE: `${registry.host}/group/mounts`,
        CI_COMMIT_SHORT_SHA: `0000${count}`,
        CI_COMMIT_BRANCH: "feature-m",
        CI_DEFAULT_BRANCH: "main",
        CI_JOB_NAME: jobName,
      },
      project: { TBUILD_HOME: projectRoot },
      env: {
        ...env,
        TBUILD_ROOT: store,
        DOCKER_CONFIG: path.join(projectDir, "..", `docker-mounts-${count}`),
      },
      projectDir,
      cache: runnerCache,
    });
  }

  it("a first job builds cold and its cache keeps the archive; the next, on a new runner, builds warm", async () => {
    const first = await mountsJob("tbuild");
    expect(first.status, first.log).toBe(0);
    expect(first.log).toContain(
      `tbuild: no cache mounts to import: ${ARCHIVE} is not there (a first run, or the CI cache has none yet)`,
    );
    expect(first.log).not.toContain("warning");
    expect(first.log).toMatch(/^tbuild: exported 1 cache mount\(s\)/m);
    // The archive was never in the build's context.
    expect(first.log).toContain("\nCOLD\nDockerfile\n");
    expect(first.log).toContain("Created cache tbuild-cache-mounts-tbuild");

    const second = await mountsJob("tbuild");
    expect(second.status, second.log).toBe(0);
    expect(second.log).toContain("Successfully extracted cache tbuild-cache-mounts-tbuild");
    expect(second.log).toMatch(/^tbuild: imported 1 cache mount\(s\)/m);
    expect(second.log).toContain("\nWARM\nDockerfile\n");
  }, 180_000);

  it("a failed build fails the job, and its cache keeps the mounts for the next job", async () => {
    const failed = await mountsJob("tbuild-failing", { more: "RUN echo the build failed >&2; exit 3\n" });
    expect(failed.status).not.toBe(0);
    expect(failed.log).toContain("the build failed");
    expect(failed.log).toMatch(/^tbuild: exported 1 cache mount\(s\)/m);
    expect(failed.log).toContain("Created cache tbuild-cache-mounts-tbuild-failing");

    const next = await mountsJob("tbuild-failing");
    expect(next.status, next.log).toBe(0);
    expect(next.log).toContain("\nWARM\nDockerfile\n");
  }, 180_000);

  it("a corrupt archive: a warning naming it, a cold build, and a good archive for the next job", async () => {
    const corrupt = await mountsJob("tbuild-corrupt", {
      clone: (projectDir) => {
        mkdirSync(path.join(projectDir, ".tbuild-cache"));
        writeFileSync(path.join(projectDir, ARCHIVE), Buffer.from("not a zstd tar archive\n".repeat(80)));
      },
    });
    expect(corrupt.status, corrupt.log).toBe(0);
    const warnings = corrupt.log.split("\n").filter((line) => line.includes("warning"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(
      `tbuild: warning: cache mounts not imported from ${ARCHIVE}, building without them:`,
    );
    expect(corrupt.log).toContain("\nCOLD\nDockerfile\n");

    const healed = await mountsJob("tbuild-corrupt");
    expect(healed.status, healed.log).toBe(0);
    expect(healed.log).not.toContain("warning");
    expect(healed.log).toContain("\nWARM\nDockerfile\n");
  }, 180_000);

  it("rootless, as a shell executor's unprivileged user: the cache keeps the user's archive, and the next job builds warm", async () => {
    const mode = modes().find((m) => m.name === "rootless")!;
    const user = mode.user;
    const owned = new ModeEnv(mode, tempDir);
    const rootlessCache = path.join(owned.ownedDir("runner-cache"), "cache");
    const job = async (sha: string) => {
      // A new runner: an empty store of the user's, with busybox, and a fresh clone.
      const world = new ModeEnv(mode, tempDir);
      await world.loadBusybox(await busyboxArchive(tempDir));
      const projectDir = world.ownedDir("clone");
      writeFileSync(path.join(projectDir, "Dockerfile"), `FROM busybox\n${MOUNT_STEP}\nCOPY . /context/\n`);
      if (user) execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, projectDir]);
      return runGitLabJob(template, "tbuild", {
        overrides: { tbuild: { variables: { TBUILD_TEST_COMMAND: "sh -c 'cat /state; ls -A /context'" } } },
        predefined: {
          CI_REGISTRY_IMAGE: `${registry.host}/group/rootless`,
          CI_COMMIT_SHORT_SHA: sha,
          CI_COMMIT_BRANCH: "feature-r",
          CI_DEFAULT_BRANCH: "main",
          CI_JOB_NAME: "tbuild",
        },
        project: { TBUILD_HOME: projectRoot },
        env: {
          PATH: process.env.PATH,
          HOME: user?.home ?? process.env.HOME,
          TBUILD_ROOT: world.store,
          TBUILD_CONFIG: "/dev/null",
          DOCKER_CONFIG: world.ownedDir("docker"),
        },
        projectDir,
        cache: rootlessCache,
        ...(user ? { user: user.name } : {}),
      });
    };

    const first = await job("r000001");
    expect(first.status, first.log).toBe(0);
    expect(first.log).toContain("\nCOLD\nDockerfile\n");
    const saved = statSync(path.join(rootlessCache, "tbuild-cache-mounts-tbuild", ARCHIVE));
    expect(saved.uid).toBe(user?.uid ?? process.getuid!());

    const second = await job("r000002");
    expect(second.status, second.log).toBe(0);
    expect(second.log).toMatch(/^tbuild: imported 1 cache mount\(s\)/m);
    expect(second.log).toContain("\nWARM\nDockerfile\n");
  }, 240_000);

  it("TBUILD_CACHE_MOUNTS empty: nothing imported or exported", async () => {
    count++;
    const projectDir = project(`mounts-off-${count}`);
    const run = runGitLabJob(template, "tbuild", {
      predefined: {
        CI_REGISTRY_IMAGE: `${registry.host}/group/mounts`,
        CI_COMMIT_SHORT_SHA: "off0001",
        CI_COMMIT_BRANCH: "feature-m",
        CI_DEFAULT_BRANCH: "main",
        CI_JOB_NAME: "tbuild-off",
      },
      project: { TBUILD_HOME: projectRoot, TBUILD_CACHE_MOUNTS: "" },
      env,
      projectDir,
    });
    expect(run.status, run.log).toBe(0);
    expect(run.log).not.toContain("cache mount");
    expect(existsSync(path.join(projectDir, ".tbuild-cache"))).toBe(false);
  }, 180_000);
});

describe("the GitLab CI template with a remote worker", () => {
  it("builds on TBUILD_WORKER with the key (a File variable) and known_hosts line of its CI/CD variables", async () => {
    const sshd = await startSshd();
    try {
      const workerStore = path.join(tempDir("gitlab-worker"), "store");
      mkdirSync(workerStore);
      await importBusybox(workerStore, "busybox");
      execFileSync("chown", ["-R", "tbuild-test:", path.dirname(workerStore)]);
      chmodSync(path.dirname(workerStore), 0o755);
      const job = pipeline("feature-y", "beef004", undefined, {
        project: {
          TBUILD_WORKER: sshd.url,
          TBUILD_WORKER_SSH_KEY: sshd.clientKey,
          TBUILD_WORKER_KNOWN_HOSTS: sshd.knownHostsLine("ed25519"),
        },
        env: {
          HOME: tempDir("gitlab-home"),
          SSH_AUTH_SOCK: "",
          TBUILD_WORKER_COMMAND: `TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
        },
      });
      expect(job.status, job.log).toBe(0);
      expect(job.log).toContain(`#0 building on worker ci-worker (${sshd.url})`);
      // Built there, tested here: the image came back to the job's store.
      expect(job.log).toContain("\nhello from feature-y for amd64\n");
    } finally {
      await sshd.stop();
    }
  }, 180_000);
});
