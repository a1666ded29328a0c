/**
 * Builds on a remote worker: `tbuild worker --stdio` started per build over a real OpenSSH server
 * (as the unprivileged `tbuild-test`, so the host builds rootless) or by a `cmd://` command (as
 * root here). The worker builds in its own store; the image comes back to the client's, and must
 * be the image a local build makes (SOURCE_DATE_EPOCH). The context is synchronized, not re-sent:
 * a byte-counting proxy between client and sshd judges how much travels.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { startRegistry } from "../helpers/registry.js";
import { type RunningSshd, startSshd } from "../helpers/sshd.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);

const DOCKERFILE = `FROM busybox
WORKDIR /app
COPY requirements.txt .
RUN sort requirements.txt > /installed
COPY . .
RUN ls -la /app | wc -l > /listing
`;

/** A project as tutorials shape it: requirements first, the sources after, a big file ignored. */
function project(): string {
  const dir = tempDir("remote-project");
  writeFileSync(path.join(dir, "Dockerfile"), DOCKERFILE);
  writeFileSync(path.join(dir, "requirements.txt"), "flask\nrequests\n");
  writeFileSync(path.join(dir, ".dockerignore"), "big.bin\n");
  mkdirSync(path.join(dir, "src"));
  // Incompressible sources, the same in every project (hashes of their names), so that a sync
  // that sent them all again would show in the bytes counted.
  const noise = (name: string) =>
    Buffer.concat(
      Array.from({ length: 100 }, (_, k) => createHash("sha256").update(`${name}/${k}`).digest()),
    );
  for (let i = 0; i < 200; i++) {
    writeFileSync(path.join(dir, "src", `m${i}.py`), `# ${noise(`m${i}`).toString("base64")}\nprint(${i})\n`);
  }
  writeFileSync(path.join(dir, "big.bin"), Buffer.alloc(50 * 1024 * 1024, 7));
  chmodSync(dir, 0o755);
  return dir;
}

let busyboxTemplate: Promise<string> | undefined;

/**
 * Makes `store` (a path not there yet, or an empty directory) a store holding `busybox`: a copy of
 * one store imported once, as the hostile harness makes its stores, so a case costs its builds
 * rather than an import.
 */
async function busyboxStore(store: string): Promise<void> {
  busyboxTemplate ??= (async () => {
    const template = path.join(tempDir("remote-busybox-template"), "store");
    await importBusybox(template, "busybox");
    return template;
  })();
  execFileSync("cp", ["-a", `${await busyboxTemplate}/.`, store]);
}

function imageDigest(store: string, name: string): string {
  const out = tbuild(["images", "--format", "json"], { env: { TBUILD_ROOT: store } });
  expect(out.status, out.stderr).toBe(0);
  const rows = JSON.parse(out.stdout) as { repository: string; tag: string; digest: string }[];
  const [repository, tag] = name.split(":");
  const row = rows.find((r) => r.repository.endsWith(repository!) && r.tag === tag);
  expect(row, out.stdout).toBeDefined();
  return row!.digest;
}

describe("a build on a remote worker", () => {
  let localDigest = "";
  let context = "";
  beforeAll(async () => {
    context = project();
    const local = tempDir("remote-local-store");
    await busyboxStore(local);
    const built = tbuild(["build", "--progress=plain", "-t", "app:1", context], {
      env: { TBUILD_ROOT: local, SOURCE_DATE_EPOCH: EPOCH },
    });
    expect(built.status, built.stderr).toBe(0);
    localDigest = imageDigest(local, "app:1");
  }, 180_000);

  it("over cmd:// as root: Ctrl-C on the client stops the step on the worker, whose store then gives the image a local build makes, in the client's store and as -o type=oci", async () => {
    const client = tempDir("remote-client-store");
    const workerStore = tempDir("remote-worker-store");
    await busyboxStore(workerStore);
    // First a build stopped by Ctrl-C: the build after it, in the same stores, shows that the
    // worker's store is left usable (it gives the image a local build makes).
    const dir = tempDir("remote-cancel-project");
    const marker = `${400 + Math.floor(Math.random() * 500)}`;
    writeFileSync(path.join(dir, "Dockerfile"), `FROM busybox\nRUN echo started && sleep ${marker}\n`);
    chmodSync(dir, 0o755);
    const child = spawn(
      tbuildBin,
      [
        "build",
        "--progress=plain",
        "--worker",
        `cmd://TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
        dir,
      ],
      { env: { ...process.env, TBUILD_ROOT: client }, stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    const ended = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    // The step's own output, relayed from the worker: it is running there now.
    await new Promise<void>((resolve) => {
      child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
        stderr += chunk;
        if (stderr.includes("started")) resolve();
      });
    });
    child.kill("SIGINT");
    expect(await ended, stderr).toBe(130);
    // Nothing of the step is left running on the worker.
    expect(spawnSync("pgrep", ["-f", `sleep ${marker}`]).status).toBe(1);
    const out = path.join(tempDir("remote-out"), "image.tar");
    const files = path.join(tempDir("remote-local-out"), "rootfs");
    const built = tbuild(
      [
        "build",
        "--progress=plain",
        "--worker",
        `cmd://TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
        "-t",
        "app:1",
        "-o",
        `type=oci,dest=${out}`,
        "-o",
        `type=local,dest=${files}`,
        context,
      ],
      { env: { TBUILD_ROOT: client, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("#0 building on worker cmd://");
    // The summary line names the image once it is named here.
    expect(built.stderr).toMatch(/image sha256:[0-9a-f]{64} \([^)]*\) named docker\.io\/library\/app:1\n/);
    expect(imageDigest(client, "app:1")).toBe(localDigest);
    // The archive's index names the same manifest.
    const index = execFileSync("tar", ["-xOf", out, "index.json"], { encoding: "utf8" });
    expect(index).toContain(localDigest);
    // type=local: the image's files, written here.
    expect(readFileSync(path.join(files, "installed"), "utf8")).toBe("flask\nrequests\n");
    expect(readFileSync(path.join(files, "app", "requirements.txt"), "utf8")).toBe("flask\nrequests\n");
    expect(existsSync(path.join(files, "app", "big.bin"))).toBe(false);
    const ran = tbuild(["run", "--rm", "app:1", "cat", "/installed"], { env: { TBUILD_ROOT: client } });
    expect(ran.stdout).toBe("flask\nrequests\n");
    // The worker keeps the synced context for the next build: `du` counts it, `prune --all` frees it.
    const du = () =>
      JSON.parse(tbuild(["du", "--format", "json"], { env: { TBUILD_ROOT: workerStore } }).stdout) as Record<
        string,
        number
      >;
    expect(du()["remote-contexts"]).toBeGreaterThan(200 * 3000);
    expect(tbuild(["prune", "-f", "--all"], { env: { TBUILD_ROOT: workerStore } }).status).toBe(0);
    expect(du()["remote-contexts"]).toBe(0);
  }, 240_000);

  it("a client that is no root needs no user namespace of its own: what comes back is the user's, as on a laptop", async () => {
    const user = "tbuild-test";
    const uid = Number(execFileSync("id", ["-u", user], { encoding: "utf8" }).trim());
    const base = tempDir("remote-user-client");
    const workerStore = path.join(base, "worker");
    mkdirSync(workerStore);
    await busyboxStore(workerStore);
    const dir = path.join(base, "project");
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, "Dockerfile"),
      "FROM busybox\nCOPY --chown=1000:1000 owned.txt /owned.txt\n",
    );
    writeFileSync(path.join(dir, "owned.txt"), "mine\n");
    const out = path.join(base, "out");
    execFileSync("chown", ["-R", `${user}:`, base]);
    chmodSync(base, 0o755);
    const built = spawnSync(
      "runuser",
      [
        "-u",
        user,
        "--",
        "env",
        `HOME=${base}`,
        `TBUILD_ROOT=${path.join(base, "client")}`,
        tbuildBin,
        "build",
        "--progress=plain",
        "--worker",
        `cmd://TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
        "-t",
        "mine:1",
        "-o",
        `type=local,dest=${out}`,
        dir,
      ],
      { encoding: "utf8" },
    );
    expect(built.status, built.stderr).toBe(0);
    // Written by the user itself, not by uid 1000 of a user namespace (a subordinate id on this
    // host, which the user could not even delete): what buildx's local exporter gives too.
    expect(readFileSync(path.join(out, "owned.txt"), "utf8")).toBe("mine\n");
    expect(statSync(path.join(out, "owned.txt")).uid).toBe(uid);
    expect(spawnSync("runuser", ["-u", user, "--", "rm", "-rf", out]).status).toBe(0);
    expect(existsSync(out)).toBe(false);
    const images = spawnSync(
      "runuser",
      ["-u", user, "--", "env", `TBUILD_ROOT=${path.join(base, "client")}`, tbuildBin, "images"],
      { encoding: "utf8" },
    );
    expect(images.stdout).toContain("mine");
  }, 240_000);

  describe("over ssh:// to a rootless host", () => {
    let sshd: RunningSshd;
    let proxy: TcpProxy;
    let home = "";
    let workerStore = "";
    beforeAll(async () => {
      sshd = await startSshd();
      proxy = await startTcpProxy({ port: sshd.port });
      home = tempDir("remote-home");
      mkdirSync(path.join(home, ".ssh"), { mode: 0o700 });
      writeFileSync(path.join(home, ".ssh", "id_ed25519"), readFileSync(sshd.clientKey), { mode: 0o600 });
      writeFileSync(
        path.join(home, ".ssh", "known_hosts"),
        readFileSync(sshd.knownHosts, "utf8").replaceAll(`]:${sshd.port} `, `]:${proxy.port} `),
      );
      workerStore = path.join(tempDir("remote-rootless-worker"), "store");
      mkdirSync(workerStore);
      await busyboxStore(workerStore);
      execFileSync("chown", ["-R", "tbuild-test:", path.dirname(workerStore)]);
      chmodSync(path.dirname(workerStore), 0o755);
    }, 120_000);
    afterAll(async () => {
      await proxy?.stop();
      await sshd?.stop();
    });

    const remoteBuild = (client: string, extra: string[] = [], dir = context, env: NodeJS.ProcessEnv = {}) =>
      tbuildAsync(
        ["build", "--progress=plain", "--worker", `ssh://tbuild-test@127.0.0.1:${proxy.port}`, ...extra, dir],
        {
          env: {
            HOME: home,
            SSH_AUTH_SOCK: "",
            TBUILD_ROOT: client,
            SOURCE_DATE_EPOCH: EPOCH,
            TBUILD_WORKER_COMMAND: `TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
            ...env,
          },
        },
      );

    it("gives the local build's image, sends no ignored file, and after a one-file edit sends about that file", async () => {
      const client = tempDir("remote-ssh-client");
      // A project of its own, edited below (SOURCE_DATE_EPOCH clamps its files' times: the same image).
      const dir = project();
      const before = { ...proxy.bytes };
      const first = await remoteBuild(client, ["-t", "app:1"], dir);
      expect(first.status, first.stderr).toBe(0);
      expect(imageDigest(client, "app:1")).toBe(localDigest);
      const firstSent = { ...proxy.bytes }.up - before.up;
      // The 50 MB ignored file never travels; the 200 sources (~800 KB, incompressible) do.
      expect(firstSent).toBeLessThan(2 * 1024 * 1024);
      expect(firstSent).toBeGreaterThan(600 * 1024);

      const edited = path.join(dir, "src", "m7.py");
      writeFileSync(edited, "print('edited')\n".repeat(500));
      const again = { ...proxy.bytes };
      const second = await remoteBuild(client, ["-t", "app:2"], dir);
      expect(second.status, second.stderr).toBe(0);
      const sent = { ...proxy.bytes }.up - again.up;
      expect(sent).toBeLessThan(readFileSync(edited).length + 64 * 1024);
      // The install step was cached on the worker: only the steps after `COPY . .` ran.
      expect(second.stderr).toMatch(/RUN sort requirements.txt > \/installed\n#\d+ CACHED/);
      // The image came back by need: the layers the client's store had (busybox's, the install's)
      // did not travel again, so the second build brought less than the first by at least those.
      const firstDown = again.down - before.down;
      const secondDown = proxy.bytes.down - again.down;
      const inspected = JSON.parse(tbuild(["inspect", "app:1"], { env: { TBUILD_ROOT: client } }).stdout) as {
        manifest: { layers: { size: number }[] };
      };
      const unchanged = inspected.manifest.layers.slice(0, 3).reduce((sum, layer) => sum + layer.size, 0);
      expect(secondDown).toBeLessThan(firstDown - unchanged + 64 * 1024);
    }, 300_000);

    it("a registry cache written from one worker lets another worker run nothing (--cache-to, then --cache-from)", async () => {
      const registry = await startRegistry();
      try {
        const ref = `${registry.host}/team/app:buildcache`;
        const dir = project();
        const first = await remoteBuild(
          tempDir("remote-cache-a"),
          ["--cache-to", `type=registry,ref=${ref},mode=max`, "-t", "cached:1"],
          dir,
        );
        expect(first.status, first.stderr).toBe(0);
        expect(first.stderr).toContain("exporting cache");
        // Worker B: another host's store (here a root worker through cmd://), empty but for busybox.
        const storeB = tempDir("remote-cache-worker-b");
        await busyboxStore(storeB);
        const client = tempDir("remote-cache-b");
        const second = await tbuildAsync(
          [
            "build",
            "--progress=plain",
            "--worker",
            `cmd://TBUILD_ROOT=${storeB} ${tbuildBin} worker --stdio`,
            "--cache-from",
            `type=registry,ref=${ref}`,
            "-t",
            "cached:2",
            dir,
          ],
          { env: { TBUILD_ROOT: client, SOURCE_DATE_EPOCH: EPOCH } },
        );
        expect(second.status, second.stderr).toBe(0);
        expect(second.stderr).toMatch(/: 0 step\(s\) ran/);
        expect(imageDigest(client, "cached:2")).toBe(localDigest);
      } finally {
        await registry.stop();
      }
    }, 300_000);

    it("--push pushes from the worker, with the client's login handed over for that registry only and kept nowhere there", async () => {
      const password = `pw-${randomBytes(9).toString("hex")}`;
      const registry = await startRegistry({ htpasswd: { pusher: password } });
      try {
        const client = tempDir("remote-push-client");
        const login = tbuild(["login", "-u", "pusher", "--password-stdin", registry.host], {
          env: { HOME: home, TBUILD_ROOT: client },
          input: password,
        });
        expect(login.status, login.stderr).toBe(0);
        const ref = `${registry.host}/team/app:1`;
        const built = await remoteBuild(client, ["-t", ref, "--push"]);
        expect(built.status, built.stderr).toBe(0);
        const inspected = JSON.parse(
          execFileSync(
            "skopeo",
            ["inspect", "--tls-verify=false", "--creds", `pusher:${password}`, `docker://${ref}`],
            { encoding: "utf8" },
          ),
        ) as { Digest: string };
        expect(inspected.Digest).toBe(localDigest);
        const userHome = execFileSync("getent", ["passwd", "tbuild-test"], { encoding: "utf8" }).split(
          ":",
        )[5]!;
        const found = spawnSync("grep", ["-rlsF", password, userHome, workerStore, "/tmp", "/dev/shm"], {
          encoding: "utf8",
        });
        // The client's own login (its HOME and store) is under /tmp here: it is the client's.
        expect(
          found.stdout.split("\n").filter((f) => f && !f.startsWith(home) && !f.startsWith(client)),
        ).toEqual([]);
      } finally {
        await registry.stop();
      }
    }, 300_000);

    it("a connection cut in the middle of the sync: the build tries once more, keeping what was synced, and succeeds", async () => {
      const client = tempDir("remote-cut-client");
      const dir = tempDir("remote-cut-project");
      const big = randomBytes(3 * 1024 * 1024);
      writeFileSync(path.join(dir, "Dockerfile"), "FROM busybox\nCOPY . /data\n");
      for (let i = 0; i < 50; i++) writeFileSync(path.join(dir, `small-${i}`), `small ${i}\n`);
      writeFileSync(path.join(dir, "zz-big.bin"), big);
      chmodSync(dir, 0o755);
      // The listing and the small files come first; the cut lands inside the big file's bytes.
      proxy.cutAfterUp(1024 * 1024);
      const built = await remoteBuild(client, ["-t", "cut:1"], dir);
      expect(built.status, built.stderr).toBe(0);
      expect(built.stderr).toMatch(
        /WARNING: lost the connection to worker [^\n]*; trying once more \(what was synced is kept\)\n/,
      );
      // The retry is tbuild's own: the warning does not tell the user to run again.
      expect(built.stderr).not.toMatch(/WARNING: [^\n]*run again/);
      const hash = tbuild(["run", "--rm", "cut:1", "sha256sum", "/data/zz-big.bin"], {
        env: { TBUILD_ROOT: client },
      });
      expect(hash.stdout.slice(0, 64)).toBe(createHash("sha256").update(big).digest("hex"));
      // The worker's copy is whole: a build of the same context sends next to nothing.
      const before = { ...proxy.bytes };
      const again = await remoteBuild(client, ["-t", "cut:2"], dir);
      expect(again.status, again.stderr).toBe(0);
      expect(proxy.bytes.up - before.up).toBeLessThan(64 * 1024);
    }, 300_000);

    it("a connection cut while the output streams to standard output is not tried again: the output would repeat", async () => {
      const dir = tempDir("remote-stdout-project");
      writeFileSync(path.join(dir, "Dockerfile"), "FROM busybox\nCOPY noise.bin /noise.bin\n");
      writeFileSync(path.join(dir, "noise.bin"), randomBytes(4 * 1024 * 1024));
      chmodSync(dir, 0o755);
      const client = tempDir("remote-stdout-client");
      // The build first (nothing to cut in it), so that the cut below lands in the output's bytes.
      const warm = await remoteBuild(client, [], dir);
      expect(warm.status, warm.stderr).toBe(0);
      proxy.cutAfterDown(1024 * 1024);
      const cut = await remoteBuild(client, ["-o", "type=tar,dest=-"], dir);
      expect(cut.status).not.toBe(0);
      expect(cut.stderr).toMatch(
        /lost the connection to worker [^\n]* while part of the output had gone to standard output already, so tbuild does not try again/,
      );
      expect(cut.stderr).not.toContain("trying once more");
      // Part of the tar went out, once: less than the 4 MiB file it holds.
      expect(cut.stdout.length).toBeGreaterThan(0);
      expect(Buffer.byteLength(cut.stdout, "latin1")).toBeLessThan(4 * 1024 * 1024);
    }, 300_000);

    it("--build-context: a directory is synced as the context is (its own .dockerignore, a one-file edit sends that file), an image is resolved by the worker", async () => {
      const dir = tempDir("remote-named-project");
      writeFileSync(
        path.join(dir, "Dockerfile"),
        "FROM base\nCOPY --from=assets . /assets\nRUN ls /assets | wc -l > /count && cat /assets/a0 > /first\n",
      );
      chmodSync(dir, 0o755);
      // The assets live outside the build context, as a sibling project's would.
      const assets = tempDir("remote-named-assets");
      const noise = (k: number) => randomBytes(2048).toString("base64") + k;
      for (let i = 0; i < 100; i++) writeFileSync(path.join(assets, `a${i}`), noise(i));
      writeFileSync(path.join(assets, "huge.iso"), Buffer.alloc(20 * 1024 * 1024, 3));
      writeFileSync(path.join(assets, ".dockerignore"), "huge.iso\n.dockerignore\n");
      chmodSync(assets, 0o755);
      const named = ["--build-context", `assets=${assets}`, "--build-context", "base=docker-image://busybox"];

      const local = tempDir("remote-named-local");
      await busyboxStore(local);
      const builtHere = tbuild(["build", "--progress=plain", ...named, "-t", "named:1", dir], {
        env: { TBUILD_ROOT: local, SOURCE_DATE_EPOCH: EPOCH },
      });
      expect(builtHere.status, builtHere.stderr).toBe(0);

      const client = tempDir("remote-named-client");
      const before = { ...proxy.bytes };
      const first = await remoteBuild(client, [...named, "-t", "named:1"], dir);
      expect(first.status, first.stderr).toBe(0);
      expect(imageDigest(client, "named:1")).toBe(imageDigest(local, "named:1"));
      const sent = proxy.bytes.up - before.up;
      // The 100 assets (~270 KB of base64) travel; the ignored 20 MB file does not.
      expect(sent).toBeGreaterThan(200 * 1024);
      expect(sent).toBeLessThan(2 * 1024 * 1024);

      writeFileSync(path.join(assets, "a0"), "edited\n");
      const again = { ...proxy.bytes };
      const second = await remoteBuild(client, [...named, "-t", "named:2"], dir);
      expect(second.status, second.stderr).toBe(0);
      expect(proxy.bytes.up - again.up).toBeLessThan(64 * 1024);
      const ran = tbuild(["run", "--rm", "named:2", "cat", "/count", "/first"], {
        env: { TBUILD_ROOT: client },
      });
      expect(ran.stdout).toBe("100\nedited\n");
    }, 300_000);

    it("serves a secret on demand: the step sees it, and the host keeps it nowhere (home, store, /tmp, /dev/shm, logs)", async () => {
      const client = tempDir("remote-secret-client");
      const value = `s3cr3t-${randomBytes(12).toString("hex")}`;
      const dir = tempDir("remote-secret-project");
      writeFileSync(
        path.join(dir, "Dockerfile"),
        "FROM busybox\nRUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -c1-64 > /hash\n",
      );
      chmodSync(dir, 0o755);
      const built = await remoteBuild(client, ["--secret", "id=token,env=TOKEN", "-t", "secret:1"], dir, {
        TOKEN: value,
      });
      expect(built.status, built.stderr).toBe(0);
      const ran = tbuild(["run", "--rm", "secret:1", "cat", "/hash"], { env: { TBUILD_ROOT: client } });
      expect(ran.stdout.trim()).toBe(createHash("sha256").update(value).digest("hex"));
      const userHome = execFileSync("getent", ["passwd", "tbuild-test"], { encoding: "utf8" }).split(":")[5]!;
      const found = spawnSync("grep", ["-rlsF", value, userHome, workerStore, "/tmp", "/dev/shm"], {
        encoding: "utf8",
      });
      // The client's own store is under /tmp here: it is the client's, not the host's.
      expect(found.stdout.split("\n").filter((f) => f && !f.startsWith(client))).toEqual([]);
      expect(built.stdout + built.stderr + sshd.log()).not.toContain(value);
    }, 300_000);

    it("relays the client's agent to a step that mounts it (--ssh default), and no agent socket exists otherwise", async () => {
      const client = tempDir("remote-ssh-agent-client");
      const dir = tempDir("remote-agent-project");
      // A static client of the agent's socket, for the busybox step: it says hello and prints the answer.
      writeFileSync(
        path.join(dir, "ping.c"),
        `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(void) {
  const char *path = getenv("SSH_AUTH_SOCK");
  if (!path) { fputs("no SSH_AUTH_SOCK\\n", stderr); return 1; }
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 1; }
  if (write(fd, "hello", 5) != 5) return 1;
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n > 0) fwrite(buf, 1, n, stdout);
  return 0;
}
`,
      );
      execFileSync("gcc", ["-static", "-O2", "-o", path.join(dir, "agentping"), path.join(dir, "ping.c")]);
      writeFileSync(
        path.join(dir, "Dockerfile"),
        [
          "FROM busybox",
          "COPY agentping /agentping",
          "RUN --mount=type=ssh /agentping > /agent",
          "RUN find / -xdev -type s 2>/dev/null | wc -l > /sockets; env | grep -c SSH_AUTH_SOCK > /env || true",
          "",
        ].join("\n"),
      );
      chmodSync(dir, 0o755);
      // The test agent answers with what it got, so the step's output proves the round trip.
      const agentSocket = path.join(tempDir("remote-agent"), "agent.sock");
      const agent = net.createServer((conn) => conn.once("data", (data) => conn.end(`agent got ${data}\n`)));
      await new Promise<void>((resolve) => agent.listen(agentSocket, resolve));
      try {
        const built = await remoteBuild(client, ["--ssh", "default", "-t", "agent:1"], dir, {
          SSH_AUTH_SOCK: agentSocket,
        });
        expect(built.status, built.stderr).toBe(0);
        // One container reads the three files: the agent's answer, then no socket and no variable left.
        const files = tbuild(["run", "--rm", "agent:1", "cat", "/agent", "/sockets", "/env"], {
          env: { TBUILD_ROOT: client },
        });
        expect(files.stdout, files.stderr).toBe("agent got hello\n0\n0\n");
        const without = await remoteBuild(client, ["--no-cache", "-t", "agent:2"], dir);
        // Without --ssh the step runs with no agent: the client finds no socket to talk to.
        expect(without.status).toBe(1);
        expect(without.stderr).toContain("no SSH_AUTH_SOCK");
      } finally {
        agent.close();
      }
    }, 300_000);
  });
});
