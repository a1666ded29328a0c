/**
 * Errors a user can act on, each produced by the real fault through the CLI: a closed port, a
 * registry with htpasswd, a self-signed certificate, runc hidden, a user without a subuid range,
 * newuidmap off PATH, a full tmpfs as the store, a store of another user. Each message says what,
 * where and what to do, and never shows a stack trace. Runs as root (to hide runc, mount a tmpfs
 * and act as other users).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { userInfo } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, tbuild, tbuildBin } from "../helpers/cli.js";
import { busyboxRootfs, importBusybox } from "../helpers/images.js";
import { freePort, type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const STACK = /\n\s+at /;

/** A store, a config file and a docker config dir of the test's own. */
function isolatedEnv(configText = ""): NodeJS.ProcessEnv & { TBUILD_CONFIG: string; DOCKER_CONFIG: string } {
  const dir = tempDir("errors");
  writeFileSync(path.join(dir, "config.toml"), configText);
  return {
    TBUILD_ROOT: path.join(dir, "store"),
    TBUILD_CONFIG: path.join(dir, "config.toml"),
    DOCKER_CONFIG: dir,
  };
}

/** A user error: exit code 1, the message, no stack trace even with --debug. */
function expectUserError(result: CliResult): string {
  expect(result.status, result.stderr).toBe(1);
  expect(result.stderr).toMatch(/^ERROR: /m);
  expect(result.stderr).not.toMatch(STACK);
  expect(result.stderr).not.toContain("internal error");
  return result.stderr;
}

/** A build context with `dockerfile`, as a directory. */
function context(dockerfile: string, files: Record<string, string | Buffer> = {}): string {
  const dir = tempDir("context");
  writeFileSync(path.join(dir, "Dockerfile"), dockerfile);
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(dir, name), content);
  return dir;
}

beforeAll(() => {
  if (userInfo().uid !== 0)
    throw new Error("these tests run as root: they hide runc, mount a tmpfs and act as other users");
});

describe("registry errors", () => {
  let locked: RunningRegistry;
  let tls: RunningRegistry & { ca?: string };
  beforeAll(async () => {
    [locked, tls] = await Promise.all([
      startRegistry({ htpasswd: { alice: "wonderland" } }),
      startRegistry({ tls: true }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([locked?.stop(), tls?.stop()]);
  });

  it("an unreachable registry: names it and points at its address and its config.toml table", async () => {
    const host = `127.0.0.1:${await freePort()}`;
    const env = isolatedEnv();
    for (const args of [
      ["pull", `${host}/app:1`],
      ["--debug", "pull", `${host}/app:1`],
    ]) {
      const stderr = expectUserError(tbuild(args, { env }));
      expect(stderr).toContain(`connection refused by ${host} (registry ${host})`);
      expect(stderr).toContain("is the registry running and the address right?");
      expect(stderr).toContain(`[registry."${host}"] (mirrors, http) in ${env.TBUILD_CONFIG}`);
    }
  });

  it("a registry that wants a login: no login says to run tbuild login; a wrong one says it was refused", () => {
    const env = isolatedEnv();
    const anonymous = expectUserError(tbuild(["pull", `${locked.host}/private:1`], { env }));
    expect(anonymous).toContain(`registry ${locked.host} refused access`);
    expect(anonymous).toContain(`no login is saved for it; run \`tbuild login ${locked.host}\``);

    // The same through a build's FROM, where users meet it most.
    const build = expectUserError(
      tbuild(["build", "--progress", "plain", context(`FROM ${locked.host}/private:1\n`)], { env }),
    );
    expect(build).toContain(`run \`tbuild login ${locked.host}\``);

    const wrongLogin = expectUserError(
      tbuild(["login", "-u", "alice", "--password-stdin", locked.host], { env, input: "rabbit\n" }),
    );
    expect(wrongLogin).toContain(
      `login to ${locked.host} failed: the registry refused the user name or password`,
    );

    // A saved login whose password has since changed.
    writeFileSync(
      path.join(env.DOCKER_CONFIG, "config.json"),
      JSON.stringify({ auths: { [locked.host]: { auth: Buffer.from("alice:rabbit").toString("base64") } } }),
    );
    const refused = expectUserError(tbuild(["pull", `${locked.host}/private:1`], { env }));
    expect(refused).toContain("the saved login of user alice was refused");
    expect(refused).toContain(`run \`tbuild login ${locked.host}\` again with the right password`);
  });

  it("a self-signed certificate: says it is not trusted and which config.toml keys fix it, and ca does", () => {
    // Loopback registries speak plain HTTP by default, as with Docker: this one is asked for TLS.
    const env = isolatedEnv(`[registry."${tls.host}"]\nhttp = false\n`);
    const stderr = expectUserError(tbuild(["pull", `${tls.host}/app:1`], { env }));
    expect(stderr).toContain(`TLS connection to registry ${tls.host} failed: its certificate is not trusted`);
    expect(stderr).toContain(`in ${env.TBUILD_CONFIG}: [registry."${tls.host}"] ca = ["/path/to/ca.pem"]`);
    expect(stderr).toContain("set insecure = true there");

    // Following the advice: the registry is reached, and says the image is not there.
    writeFileSync(env.TBUILD_CONFIG, `[registry."${tls.host}"]\nhttp = false\nca = ["${tls.ca}"]\n`);
    const trusted = expectUserError(tbuild(["pull", `${tls.host}/app:1`], { env }));
    expect(trusted).toContain(`not found in repository "app" on registry ${tls.host}`);
  });
});

describe("missing tools", () => {
  it("runc not installed: names it and the apt-get command", async () => {
    const env = isolatedEnv();
    await importBusybox(env.TBUILD_ROOT!, "busybox");
    const candidates = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin"]
      .map((dir) => path.join(dir, "runc"))
      .filter((file) => existsSync(file))
      .map((file) => realpathSync(file));
    expect(candidates.length).toBeGreaterThan(0);
    // A private mount namespace where each runc is /dev/null: not executable, so not found.
    const hide = [...new Set(candidates)].map((file) => `mount --bind /dev/null ${file} &&`).join(" ");
    const result = spawnSync(
      "unshare",
      [
        "-m",
        "sh",
        "-c",
        `${hide} exec "$@"`,
        "sh",
        tbuildBin,
        "build",
        "--progress",
        "plain",
        context("FROM busybox\nRUN true\n"),
      ],
      { env: { ...process.env, ...env }, encoding: "utf8" },
    );
    const stderr = expectUserError({ status: result.status, stdout: result.stdout, stderr: result.stderr });
    expect(stderr).toContain("runc is not installed");
    expect(stderr).toContain("To fix it, run: sudo apt-get install runc");
  });

  describe("rootless pieces, for an unprivileged user", () => {
    const throwaway = `tbnosub${process.pid}`;
    beforeAll(() => {
      // useradd gives new users a subuid range by default (login.defs): this one gets none.
      execFileSync("useradd", [
        "--no-create-home",
        "-K",
        "SUB_UID_COUNT=0",
        "-K",
        "SUB_GID_COUNT=0",
        throwaway,
      ]);
    });
    afterAll(() => {
      spawnSync("userdel", [throwaway]);
    });

    function buildAs(user: string, env: NodeJS.ProcessEnv = {}): CliResult {
      const store = tempDir("rootless-store");
      chmodSync(store, 0o777);
      const assignments = Object.entries({ TBUILD_ROOT: store, HOME: store, ...env }).map(
        ([k, v]) => `${k}=${v}`,
      );
      const ctx = context("FROM busybox\nRUN true\n");
      chmodSync(ctx, 0o755);
      const result = spawnSync(
        "runuser",
        ["-u", user, "--", "env", ...assignments, tbuildBin, "build", ctx],
        {
          encoding: "utf8",
          cwd: "/",
        },
      );
      return { status: result.status, stdout: result.stdout, stderr: result.stderr };
    }

    it("no subuid range: names the user and /etc/subuid, and the usermod command", () => {
      const stderr = expectUserError(buildAs(throwaway));
      expect(stderr).toContain(`cannot run rootless: no subuid range for user ${throwaway} in /etc/subuid`);
      expect(stderr).toMatch(
        new RegExp(
          `To fix it, run: sudo usermod --add-subuids \\d+-\\d+ --add-subgids \\d+-\\d+ ${throwaway}\\n`,
        ),
      );
    });

    it("newuidmap not installed: names it, its package and the apt-get command", () => {
      // A PATH with unshare alone (newuidmap lives in /usr/bin, which is left out).
      const bin = tempDir("only-unshare");
      chmodSync(bin, 0o755);
      symlinkSync("/usr/bin/unshare", path.join(bin, "unshare"));
      const stderr = expectUserError(buildAs("tbuild-test", { PATH: bin }));
      expect(stderr).toContain("cannot run rootless: `newuidmap` (package uidmap) is not installed");
      expect(stderr).toContain("To fix it, run: sudo apt-get install uidmap");
    });
  });
});

describe("the store", () => {
  it("out of space (a 2 MiB tmpfs): says the store at its path is out of space and suggests tbuild prune", async () => {
    const root = tempDir("full-store");
    const big = tempDir("big");
    // Random bytes: the layer's gzip cannot make them fit the tmpfs.
    writeFileSync(path.join(big, "data"), randomBytes(3 * 1024 * 1024));
    // A private mount namespace: the tmpfs goes with the shell, however the test ends.
    const script = `
      mount -t tmpfs -o size=2m tmpfs "$TBUILD_ROOT" || exit 99
      "$TBUILD" import "$ROOTFS" busybox >/dev/null || exit 98
      "$TBUILD" build --progress plain "$CONTEXT"; echo "build=$?"
      "$TBUILD" import "$BIG" big; echo "import=$?"
    `;
    const result = spawnSync("unshare", ["-m", "sh", "-c", script], {
      env: {
        ...process.env,
        TBUILD_ROOT: root,
        TBUILD: tbuildBin,
        ROOTFS: await busyboxRootfs(),
        BIG: big,
        CONTEXT: context("FROM busybox\nRUN true\n"),
      },
      encoding: "utf8",
    });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toContain("build=1");
    expect(result.stdout).toContain("import=1");
    expect(result.stderr).not.toMatch(STACK);
    expect(result.stderr).not.toContain("internal error");
    const errors = result.stderr.split("\n").filter((line) => line.startsWith("ERROR: "));
    expect(errors).toHaveLength(2);
    for (const line of errors) {
      expect(line).toMatch(new RegExp(`the store (at )?${root}[: ]`));
      expect(line).toContain("out of space");
      expect(line).toContain("`tbuild prune`");
    }
  });

  it("of another user: says so and how to use a store of one's own", async () => {
    const env = isolatedEnv();
    await importBusybox(env.TBUILD_ROOT!, "busybox");
    chmodSync(path.dirname(env.TBUILD_ROOT!), 0o755);
    const rootfs = await busyboxRootfs();
    const result = spawnSync(
      "runuser",
      [
        "-u",
        "tbuild-test",
        "--",
        "env",
        `TBUILD_ROOT=${env.TBUILD_ROOT}`,
        "HOME=/tmp",
        tbuildBin,
        "import",
        rootfs,
        "mine",
      ],
      { encoding: "utf8", cwd: "/" },
    );
    const stderr = expectUserError({ status: result.status, stdout: result.stdout, stderr: result.stderr });
    expect(stderr).toContain("permission denied");
    expect(stderr).toContain(`in the store at ${env.TBUILD_ROOT}`);
    expect(stderr).toContain("set TBUILD_ROOT to a directory you own");
  });
});

describe("unsupported features and --debug", () => {
  it("a --worker naming no worker of config.toml exits 1 saying so, without a stack even with --debug", () => {
    const ctx = context("FROM scratch\n");
    for (const args of [
      ["build", "--worker", "builder", ctx],
      ["--debug", "build", "--worker", "builder", ctx],
      ["build", "--debug", "--worker", "builder", ctx],
    ]) {
      const result = tbuild(args, { env: isolatedEnv() });
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(
        /^ERROR: --worker builder: not a worker URL \(ssh:\/\/USER@HOST\[:PORT\], cmd:\/\/COMMAND\) and \/\S+\/config\.toml has no \[worker\.builder\] table \(it defines no worker\)\n$/,
      );
    }
  });

  it("usage errors exit 2 without a stack, with --debug too", () => {
    const result = tbuild(["--debug", "build"], { env: isolatedEnv() });
    expect(result.status).toBe(2);
    expect(result.stderr).not.toMatch(STACK);
  });
});
