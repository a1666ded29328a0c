/**
 * `--build-context NAME=oci-layout://DIR` with `--worker`: DIR is a layout on the client, holding
 * a two-platform index (each platform's image carries 1 MiB of its own incompressible payload).
 * The worker gets the image for the build's platform from the client, only the blobs its store
 * lacks: the build platform's payload travels and the other's does not, and a second build sends
 * no blob again. The image is the one a local build makes (SOURCE_DATE_EPOCH), on a root worker
 * (`cmd://`, its input copied to a file by `tee`, so the bytes sent can be counted) and a rootless
 * one over real OpenSSH (a byte-counting proxy in between); several platforms in a pool give the
 * local build's index, each worker holding only its platform's image. A bad layout is refused before anything travels.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { type RunningSshd, startSshd } from "../helpers/sshd.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const PAYLOAD = 1024 * 1024;

/** Uses the layout's image twice: copied from (`COPY --from`), and run on top of busybox. */
const PROJECT = "FROM busybox\nCOPY --from=tools / /tools/\nRUN cat /tools/arch > /seen\n";
/** The layout's image as a stage's base, for each platform of a build of several. */
const PLATFORMS_PROJECT = "FROM tools\nCOPY id /id\n";

function dir(prefix: string, files: Record<string, string | Buffer>): string {
  const made = tempDir(prefix);
  for (const [name, content] of Object.entries(files)) writeFileSync(path.join(made, name), content);
  execFileSync("chmod", ["-R", "a+rX", made]);
  return made;
}

function json(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
}

/** The layer digests of each platform's image in the layout (`linux/amd64` → digests). */
function layersByPlatform(layout: string): Record<string, string[]> {
  const blob = (digest: string) => path.join(layout, "blobs", ...digest.split(":"));
  const top = (json(path.join(layout, "index.json")).manifests as { digest: string }[])[0]!;
  const index = json(blob(top.digest)).manifests as {
    digest: string;
    platform: { os: string; architecture: string };
  }[];
  return Object.fromEntries(
    index.map((m) => [
      `${m.platform.os}/${m.platform.architecture}`,
      (json(blob(m.digest)).layers as { digest: string }[]).map((l) => l.digest),
    ]),
  );
}

function holds(store: string, digest: string): boolean {
  return existsSync(path.join(store, "blobs", ...digest.split(":")));
}

describe("--build-context NAME=oci-layout://DIR with --worker", () => {
  let layout = "";
  let project = "";
  let localDigest = "";
  let layers: Record<string, string[]> = {};
  beforeAll(async () => {
    const base = dir("remote-layout-base", {
      Dockerfile:
        "FROM scratch\nARG TARGETARCH\nCOPY arch-$TARGETARCH /arch\nCOPY payload-$TARGETARCH /payload\n",
      "arch-amd64": "amd64\n",
      "arch-arm64": "arm64\n",
      "payload-amd64": randomBytes(PAYLOAD),
      "payload-arm64": randomBytes(PAYLOAD),
    });
    layout = path.join(tempDir("remote-layout-layout"), "tools");
    const made = tbuild(
      [
        "build",
        "--progress=plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        `type=oci,tar=false,dest=${layout},name=tools:1`,
        base,
      ],
      { env: { TBUILD_ROOT: tempDir("remote-layout-base-store"), SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(made.status, made.stderr).toBe(0);
    execFileSync("chmod", ["-R", "a+rX", path.dirname(layout)]);
    layers = layersByPlatform(layout);
    expect(Object.keys(layers).sort()).toEqual(["linux/amd64", "linux/arm64"]);

    project = dir("remote-layout-project", { Dockerfile: PROJECT });
    const local = tempDir("remote-layout-local");
    await importBusybox(local, "busybox");
    const iid = path.join(local, "iid");
    const built = tbuild(
      [
        "build",
        "--progress=plain",
        "--build-context",
        `tools=oci-layout://${layout}`,
        "--iidfile",
        iid,
        project,
      ],
      { env: { TBUILD_ROOT: local, SOURCE_DATE_EPOCH: EPOCH } },
    );
    expect(built.status, built.stderr).toBe(0);
    localDigest = readFileSync(iid, "utf8").trim();
  }, 240_000);

  /** A `cmd://` worker as this user (root) in `store`, whose input is appended to `wire`. */
  const cmdWorker = (store: string, wire: string) =>
    `cmd://tee -a ${wire} | TBUILD_ROOT=${store} ${tbuildBin} worker --stdio`;
  const sent = (wire: string) => (existsSync(wire) ? statSync(wire).size : 0);

  it("on a root worker: the local build's image; only the build platform's payload travels, and a second build sends no blob again", async () => {
    const worker = tempDir("remote-layout-worker");
    await importBusybox(worker, "busybox");
    const client = tempDir("remote-layout-client");
    const build = (tag: string, wire: string) =>
      tbuild(
        [
          "build",
          "--progress=plain",
          "--worker",
          cmdWorker(worker, wire),
          "--build-context",
          `tools=oci-layout://${layout}:1`,
          "-t",
          tag,
          "--iidfile",
          path.join(client, "iid"),
          project,
        ],
        { env: { TBUILD_ROOT: client, SOURCE_DATE_EPOCH: EPOCH } },
      );
    const wires = tempDir("remote-layout-wire");
    const first = build("app:1", path.join(wires, "first"));
    expect(first.status, first.stderr).toBe(0);
    expect(readFileSync(path.join(client, "iid"), "utf8").trim()).toBe(localDigest);
    // The amd64 image's blobs are on the worker now, the arm64 image's are not: its payload stayed here.
    for (const digest of layers["linux/amd64"]!) expect(holds(worker, digest)).toBe(true);
    for (const digest of layers["linux/arm64"]!) expect(holds(worker, digest)).toBe(false);
    expect(sent(path.join(wires, "first"))).toBeGreaterThan(PAYLOAD);
    expect(sent(path.join(wires, "first"))).toBeLessThan(PAYLOAD + 256 * 1024);

    const second = build("app:2", path.join(wires, "second"));
    expect(second.status, second.stderr).toBe(0);
    expect(readFileSync(path.join(client, "iid"), "utf8").trim()).toBe(localDigest);
    expect(sent(path.join(wires, "second"))).toBeLessThan(64 * 1024);
    const ran = tbuild(["run", "--rm", "app:2", "cat", "/seen"], { env: { TBUILD_ROOT: client } });
    expect(ran.stdout).toBe("amd64\n");
  }, 240_000);

  it("several platforms in a pool: the local build's index, each worker taking its own platform's image from the layout", async () => {
    const dir2 = dir("remote-layout-platforms", { Dockerfile: PLATFORMS_PROJECT, id: "layout\n" });
    const args = [
      "build",
      "--progress=plain",
      "--platform",
      "linux/amd64,linux/arm64",
      "--build-context",
      `tools=oci-layout://${layout}`,
      "--iidfile",
    ];
    const local = tempDir("remote-layout-platforms-local");
    const here = tbuild([...args, path.join(local, "iid"), dir2], {
      env: { TBUILD_ROOT: local, SOURCE_DATE_EPOCH: EPOCH },
    });
    expect(here.status, here.stderr).toBe(0);

    const client = tempDir("remote-layout-platforms-client");
    const stores = { amd: tempDir("remote-layout-amd"), arm: tempDir("remote-layout-arm") };
    const wire = path.join(tempDir("remote-layout-platforms-wire"), "wire");
    const worker = (name: "amd" | "arm", platform: string) =>
      `[worker.${name}]\nurl = "${cmdWorker(stores[name], wire)}"\nplatforms = ["${platform}"]\n`;
    const config = path.join(client, "config.toml");
    writeFileSync(
      config,
      `${worker("amd", "linux/amd64")}${worker("arm", "linux/arm64")}[pool.p]\nworkers = ["amd", "arm"]\n`,
    );
    const remote = await tbuildAsync([...args, path.join(client, "iid"), "--worker", "pool:p", dir2], {
      env: {
        TBUILD_CONFIG: config,
        TBUILD_ROOT: path.join(client, "store"),
        TBUILD_WORKER_COMMAND: "",
        SOURCE_DATE_EPOCH: EPOCH,
      },
    });
    expect(remote.status, remote.stderr).toBe(0);
    expect(remote.stderr).toContain("#0 building linux/arm64 on worker arm (cmd://");
    expect(readFileSync(path.join(client, "iid"), "utf8")).toBe(
      readFileSync(path.join(local, "iid"), "utf8"),
    );
    // Each worker holds its platform's image, not the other's; each payload travelled once.
    for (const digest of layers["linux/amd64"]!)
      expect([holds(stores.amd, digest), holds(stores.arm, digest)]).toEqual([true, false]);
    for (const digest of layers["linux/arm64"]!)
      expect([holds(stores.amd, digest), holds(stores.arm, digest)]).toEqual([false, true]);
    expect(sent(wire)).toBeGreaterThan(2 * PAYLOAD);
    expect(sent(wire)).toBeLessThan(2 * PAYLOAD + 256 * 1024);
  }, 240_000);

  it("a platform the layout lacks fails on the worker with the local build's words", async () => {
    const args = ["build", "--platform", "linux/s390x", "--build-context", `tools=oci-layout://${layout}`];
    const dir2 = dir("remote-layout-s390x", { Dockerfile: PLATFORMS_PROJECT, id: "x\n" });
    const local = tbuild([...args, dir2], { env: { TBUILD_ROOT: tempDir("remote-layout-s390x-local") } });
    expect(local.status).toBe(1);
    const worker = tempDir("remote-layout-s390x-worker");
    const remote = tbuild(
      [...args, "--worker", `cmd://TBUILD_ROOT=${worker} ${tbuildBin} worker --stdio`, dir2],
      { env: { TBUILD_ROOT: tempDir("remote-layout-s390x-client") } },
    );
    expect(remote.status, remote.stderr).toBe(1);
    const lastLine = (stderr: string) => stderr.trim().split("\n").at(-1);
    expect(lastLine(remote.stderr)).toMatch(
      /^ERROR: the OCI layout .* has no image for linux\/s390x \(platforms: linux\/amd64, linux\/arm64\)/,
    );
    expect(lastLine(remote.stderr)).toBe(lastLine(local.stderr));
  }, 120_000);

  it("a layout that is no layout, or names no such image, is refused before the worker is started", () => {
    const notLayout = dir("remote-layout-not", { "index.json": "{}" });
    const started = path.join(tempDir("remote-layout-started"), "started");
    const refused = (source: string) => {
      const built = tbuild(
        [
          "build",
          "--worker",
          `cmd://touch ${started}; ${tbuildBin} worker --stdio`,
          "--build-context",
          `tools=${source}`,
          project,
        ],
        { env: { TBUILD_ROOT: tempDir("remote-layout-refused") } },
      );
      expect(built.stderr.trim().split("\n")).toHaveLength(1);
      return `${built.status} ${built.stderr.trim()}`;
    };
    // A usage error (exit 2), as for a local build.
    expect(refused(`oci-layout://${layout}-missing`)).toBe(
      `2 ERROR: --build-context tools=oci-layout://${layout}-missing: ${layout}-missing is not a directory`,
    );
    expect(refused(`oci-layout://${notLayout}`)).toBe(
      `1 ERROR: --build-context tools: the OCI layout ${notLayout} has no oci-layout file: it is not an OCI image layout`,
    );
    expect(refused(`oci-layout://${layout}:2`)).toBe(
      `1 ERROR: --build-context tools: the OCI layout ${layout} holds no image tagged 2 (it has: docker.io/library/tools:1); name one with oci-layout://DIR:TAG`,
    );
    expect(existsSync(started)).toBe(false);
  }, 120_000);

  describe("over ssh:// to a rootless host", () => {
    let sshd: RunningSshd;
    let proxy: TcpProxy;
    let home = "";
    let workerStore = "";
    beforeAll(async () => {
      sshd = await startSshd();
      proxy = await startTcpProxy({ port: sshd.port });
      home = tempDir("remote-layout-home");
      mkdirSync(path.join(home, ".ssh"), { mode: 0o700 });
      writeFileSync(path.join(home, ".ssh", "id_ed25519"), readFileSync(sshd.clientKey), { mode: 0o600 });
      writeFileSync(
        path.join(home, ".ssh", "known_hosts"),
        readFileSync(sshd.knownHosts, "utf8").replaceAll(`]:${sshd.port} `, `]:${proxy.port} `),
      );
      workerStore = path.join(tempDir("remote-layout-rootless"), "store");
      mkdirSync(workerStore);
      await importBusybox(workerStore, "busybox");
      execFileSync("chown", ["-R", "tbuild-test:", path.dirname(workerStore)]);
      chmodSync(path.dirname(workerStore), 0o755);
    }, 120_000);
    afterAll(async () => {
      await proxy?.stop();
      await sshd?.stop();
    });

    it("gives the local build's image, and a second build sends no blob again", async () => {
      const client = tempDir("remote-layout-ssh-client");
      const build = (tag: string) =>
        tbuildAsync(
          [
            "build",
            "--progress=plain",
            "--worker",
            `ssh://tbuild-test@127.0.0.1:${proxy.port}`,
            "--build-context",
            `tools=oci-layout://${layout}`,
            "-t",
            tag,
            "--iidfile",
            path.join(client, "iid"),
            project,
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
      const before = proxy.bytes.up;
      const first = await build("app:1");
      expect(first.status, first.stderr).toBe(0);
      expect(readFileSync(path.join(client, "iid"), "utf8").trim()).toBe(localDigest);
      const firstUp = proxy.bytes.up - before;
      expect(firstUp).toBeGreaterThan(PAYLOAD);
      expect(firstUp).toBeLessThan(PAYLOAD + 256 * 1024);
      for (const digest of layers["linux/arm64"]!) expect(holds(workerStore, digest)).toBe(false);

      const again = proxy.bytes.up;
      const second = await build("app:2");
      expect(second.status, second.stderr).toBe(0);
      expect(readFileSync(path.join(client, "iid"), "utf8").trim()).toBe(localDigest);
      expect(proxy.bytes.up - again).toBeLessThan(64 * 1024);
    }, 300_000);
  });
});
