/**
 * Builds on a remote worker: `tbuild worker --stdio` started per build over a real OpenSSH server
 * (as the unprivileged `tbuild-test`, so the host builds rootless) or by a `cmd://` command (as
 * root here). The worker builds in its own store; the image comes back to the client's, and must
 * be the image a local build makes (SOURCE_DATE_EPOCH). The context is synchronized, not re-sent:
 * a byte-counting proxy between client and sshd judges how much travels.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
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
  for (let i = 0; i < 200; i++) writeFileSync(path.join(dir, "src", `m${i}.py`), `print(${i})\n`.repeat(20));
  writeFileSync(path.join(dir, "big.bin"), Buffer.alloc(50 * 1024 * 1024, 7));
  chmodSync(dir, 0o755);
  return dir;
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
    await importBusybox(local, "busybox");
    const built = tbuild(["build", "--progress=plain", "-t", "app:1", context], {
      env: { TBUILD_ROOT: local, SOURCE_DATE_EPOCH: EPOCH },
    });
    expect(built.status, built.stderr).toBe(0);
    localDigest = imageDigest(local, "app:1");
  }, 180_000);

  it("over cmd:// as root: the image a local build makes, in the client's store and as -o type=oci", async () => {
    const client = tempDir("remote-client-store");
    const workerStore = tempDir("remote-worker-store");
    await importBusybox(workerStore, "busybox");
    const out = path.join(tempDir("remote-out"), "image.tar");
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
        context,
      ],
      { env: { TBUILD_ROOT: client, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("#0 building on worker cmd://");
    expect(imageDigest(client, "app:1")).toBe(localDigest);
    // The archive's index names the same manifest.
    const index = execFileSync("tar", ["-xOf", out, "index.json"], { encoding: "utf8" });
    expect(index).toContain(localDigest);
    // Nothing was built in the client's store: it holds busybox's blobs only through the image.
    const ran = tbuild(["run", "--rm", "app:1", "cat", "/installed"], { env: { TBUILD_ROOT: client } });
    expect(ran.stdout).toBe("flask\nrequests\n");
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
      await importBusybox(workerStore, "busybox");
      execFileSync("chown", ["-R", "tbuild-test:", path.dirname(workerStore)]);
      chmodSync(path.dirname(workerStore), 0o755);
    }, 120_000);
    afterAll(async () => {
      await proxy?.stop();
      await sshd?.stop();
    });

    const remoteBuild = (client: string, extra: string[] = []) =>
      tbuildAsync(
        [
          "build",
          "--progress=plain",
          "--worker",
          `ssh://tbuild-test@127.0.0.1:${proxy.port}`,
          ...extra,
          context,
        ],
        {
          env: {
            HOME: home,
            SSH_AUTH_SOCK: "",
            TBUILD_ROOT: client,
            SOURCE_DATE_EPOCH: EPOCH,
            TBUILD_WORKER_COMMAND: `TBUILD_ROOT=${workerStore} ${tbuildBin} worker --stdio`,
          },
        },
      );

    it("gives the local build's image, sends no ignored file, and after a one-file edit sends about that file", async () => {
      const client = tempDir("remote-ssh-client");
      const before = { ...proxy.bytes };
      const first = await remoteBuild(client, ["-t", "app:1"]);
      expect(first.status, first.stderr).toBe(0);
      expect(imageDigest(client, "app:1")).toBe(localDigest);
      const firstSent = { ...proxy.bytes }.up - before.up;
      // The 50 MB ignored file never travels; the rest of the context is 200 small files.
      expect(firstSent).toBeLessThan(1024 * 1024);

      const edited = path.join(context, "src", "m7.py");
      writeFileSync(edited, "print('edited')\n".repeat(500));
      const again = { ...proxy.bytes };
      const second = await remoteBuild(client, ["-t", "app:2"]);
      expect(second.status, second.stderr).toBe(0);
      const sent = { ...proxy.bytes }.up - again.up;
      expect(sent).toBeLessThan(readFileSync(edited).length + 64 * 1024);
      // The install step was cached on the worker: only the steps after `COPY . .` ran.
      expect(second.stderr).toMatch(/RUN sort requirements.txt > \/installed\n#\d+ CACHED/);
    }, 300_000);
  });
});
