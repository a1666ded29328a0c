/**
 * Every output of a build on a remote worker is what a local build writes (SOURCE_DATE_EPOCH),
 * and what travels is only what the client needs:
 * - `-o type=image,name=X` (no push): the image named X in the client's store;
 * - `-o type=oci,tar=false,dest=DIR`: the layout directory a local build writes, byte for byte,
 *   written on the client from the image brought back (and an archive named inside by `-t`);
 * - several platforms pushed (`-o type=image,name=REG/x,push=true`): each worker pushes its own
 *   platform's image by digest, the client pushes the index alone, and no layer comes back to the
 *   client (a byte-counting proxy between client and worker judges it); `-t REG/x --push` brings
 *   the images back, as the name in the client's store needs them.
 *
 * Each runs against a root worker (a `cmd://` connection through a TCP proxy to a worker started
 * per connection) and a rootless one (real OpenSSH, as `tbuild-test`, through the same kind of
 * proxy). The project is `FROM scratch` with a 4 MiB incompressible file per platform, so a layer
 * that travels shows in the bytes counted.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, tbuild, tbuildAsync, tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH } from "../helpers/images.js";
import { type RunningRegistry, startRegistry } from "../helpers/registry.js";
import { type RunningSshd, startSshd } from "../helpers/sshd.js";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp-proxy.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const PLATFORMS = "linux/amd64,linux/arm64";
const BLOB_BYTES = 4 * 1024 * 1024;

/** A worker reachable through a byte-counting proxy, and the build that uses it. */
interface Worker {
  proxy: TcpProxy;
  store: string;
  build(client: string, args: string[]): Promise<CliResult>;
  stop(): Promise<void>;
}

/**
 * A root worker: a TCP server starting `tbuild worker --stdio` per connection (as sshd would),
 * behind the proxy; the client reaches it with `cmd://` running a tiny relay to the proxy.
 */
async function rootWorker(): Promise<Worker> {
  const store = tempDir("rout-root-worker");
  const children = new Set<ChildProcess>();
  const server = net.createServer((socket) => {
    const child = spawn(tbuildBin, ["worker", "--stdio"], {
      env: { ...process.env, TBUILD_ROOT: store },
      stdio: ["pipe", "pipe", "ignore"],
    });
    children.add(child);
    child.on("exit", () => children.delete(child));
    socket.on("error", () => child.kill());
    child.stdin!.on("error", () => {});
    socket.pipe(child.stdin!);
    child.stdout!.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const proxy = await startTcpProxy({ port: (server.address() as net.AddressInfo).port });
  const relay = `const s=require("net").connect(${proxy.port},"127.0.0.1");process.stdin.pipe(s);s.pipe(process.stdout);s.on("close",()=>process.exit(0))`;
  const url = `cmd://${process.execPath} -e '${relay}'`;
  return {
    proxy,
    store,
    build: (client, args) =>
      tbuildAsync(["build", "--progress=plain", "--worker", url, ...args], {
        env: { TBUILD_ROOT: client, SOURCE_DATE_EPOCH: EPOCH },
      }),
    stop: async () => {
      await proxy.stop();
      for (const child of children) child.kill();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A rootless worker: real OpenSSH letting in `tbuild-test`, behind the proxy. */
async function rootlessWorker(): Promise<Worker> {
  const sshd: RunningSshd = await startSshd();
  const proxy = await startTcpProxy({ port: sshd.port });
  const home = tempDir("rout-home");
  mkdirSync(path.join(home, ".ssh"), { mode: 0o700 });
  writeFileSync(path.join(home, ".ssh", "id_ed25519"), readFileSync(sshd.clientKey), { mode: 0o600 });
  writeFileSync(
    path.join(home, ".ssh", "known_hosts"),
    readFileSync(sshd.knownHosts, "utf8").replaceAll(`]:${sshd.port} `, `]:${proxy.port} `),
  );
  const store = path.join(tempDir("rout-rootless-worker"), "store");
  mkdirSync(store);
  execFileSync("chown", ["-R", "tbuild-test:", path.dirname(store)]);
  chmodSync(path.dirname(store), 0o755);
  return {
    proxy,
    store,
    build: (client, args) =>
      tbuildAsync(
        ["build", "--progress=plain", "--worker", `ssh://tbuild-test@127.0.0.1:${proxy.port}`, ...args],
        {
          env: {
            HOME: home,
            SSH_AUTH_SOCK: "",
            TBUILD_ROOT: client,
            SOURCE_DATE_EPOCH: EPOCH,
            TBUILD_WORKER_COMMAND: `TBUILD_ROOT=${store} ${tbuildBin} worker --stdio`,
          },
        },
      ),
    stop: async () => {
      await proxy.stop();
      await sshd.stop();
    },
  };
}

/** A project whose image has one 4 MiB incompressible layer per platform, and a small one. */
function project(): string {
  const dir = tempDir("rout-project");
  writeFileSync(
    path.join(dir, "Dockerfile"),
    "FROM scratch\nARG TARGETARCH\nCOPY blob-$TARGETARCH /blob\nCOPY id /id\n",
  );
  for (const arch of ["amd64", "arm64"])
    writeFileSync(path.join(dir, `blob-${arch}`), randomBytes(BLOB_BYTES));
  writeFileSync(path.join(dir, "id"), "remote outputs\n");
  chmodSync(dir, 0o755);
  return dir;
}

/** The digest `name` has in the store at `root`. */
function storedDigest(root: string, name: string): string | undefined {
  const out = tbuild(["images", "--format", "json"], { env: { TBUILD_ROOT: root } });
  expect(out.status, out.stderr).toBe(0);
  const rows = JSON.parse(out.stdout) as { name: string; digest: string }[];
  return rows.find((row) => row.name === name)?.digest;
}

/** Every file under `dir` with its content's hash: two layout directories compared byte for byte. */
function tree(dir: string): Record<string, string> {
  const files = execFileSync("find", [dir, "-type", "f"], { encoding: "utf8" }).trim().split("\n");
  return Object.fromEntries(
    files.map((file) => [
      path.relative(dir, file),
      createHash("sha256").update(readFileSync(file)).digest("hex"),
    ]),
  );
}

const sha256 = (bytes: Buffer | string) => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/** The project, and what a local build makes of it: the same for both workers (built as root here). */
let dir = "";
const local = { store: "", out: "" };
const localDigests = new Map<string, string | undefined>();
/** The digest `name` has in the local build's store, asked of `tbuild images` once: it never changes. */
function localDigest(name: string): string | undefined {
  if (!localDigests.has(name)) localDigests.set(name, storedDigest(local.store, name));
  return localDigests.get(name);
}

beforeAll(() => {
  dir = project();
  local.store = tempDir("rout-local-store");
  local.out = tempDir("rout-local-out");
  const env = { TBUILD_ROOT: local.store, SOURCE_DATE_EPOCH: EPOCH };
  const one = tbuild(
    [
      "build",
      "--progress=plain",
      "-t",
      "app:one",
      "-o",
      "type=image,name=app:zstd,compression=zstd,force-compression=true",
      "-o",
      `type=oci,tar=false,dest=${path.join(local.out, "layout")}`,
      "-o",
      `type=oci,dest=${path.join(local.out, "image.tar")}`,
      dir,
    ],
    { env },
  );
  expect(one.status, one.stderr).toBe(0);
  const several = tbuild(["build", "--progress=plain", "--platform", PLATFORMS, "-t", "app:several", dir], {
    env,
  });
  expect(several.status, several.stderr).toBe(0);
}, 240_000);

describe.each([
  ["root", rootWorker],
  ["rootless", rootlessWorker],
] as const)("the outputs of a build on a %s worker", (_mode, startWorker) => {
  let worker: Worker;
  let registry: RunningRegistry;

  // A registry of each mode's own: what the workers pushed is there only if this mode's pushed it.
  beforeAll(async () => {
    [worker, registry] = await Promise.all([startWorker(), startRegistry()]);
  }, 240_000);

  afterAll(async () => {
    await worker?.stop();
    await registry?.stop();
  });

  it("-o type=image,name=X without push names X in the client's store, as a local build does (compression too)", async () => {
    const client = tempDir("rout-image-client");
    const built = await worker.build(client, [
      "-o",
      "type=image,name=app:one",
      "-o",
      "type=image,name=app:zstd,compression=zstd,force-compression=true",
      // An archive the worker writes, its layers converted: the image names here are not.
      "-o",
      `type=oci,dest=${path.join(client, "zstd.tar")},compression=zstd,force-compression=true`,
      "--iidfile",
      path.join(client, "iid"),
      dir,
    ]);
    expect(built.status, built.stderr).toBe(0);
    // The digest reported is the last image output's, as a local build reports it.
    const zstd = localDigest("docker.io/library/app:zstd");
    expect(zstd).not.toBe(localDigest("docker.io/library/app:one"));
    expect(readFileSync(path.join(client, "iid"), "utf8")).toBe(zstd);
    expect(built.stderr).toContain(`image ${zstd} `);
    expect(storedDigest(client, "docker.io/library/app:one")).toBe(localDigest("docker.io/library/app:one"));
    expect(storedDigest(client, "docker.io/library/app:zstd")).toBe(
      localDigest("docker.io/library/app:zstd"),
    );
    // The image is whole here: saved as an archive from the client's store alone.
    const saved = tbuild(["save", "-o", path.join(client, "saved.tar"), "app:zstd"], {
      env: { TBUILD_ROOT: client },
    });
    expect(saved.status, saved.stderr).toBe(0);
  }, 240_000);

  it("-o type=oci,tar=false writes the layout directory a local build writes, byte for byte; an archive is named by -t as locally", async () => {
    const client = tempDir("rout-layout-client");
    const out = tempDir("rout-layout-out");
    const layout = path.join(out, "layout");
    const built = await worker.build(client, [
      "-t",
      "app:one",
      "-o",
      `type=oci,tar=false,dest=${layout}`,
      "-o",
      `type=oci,dest=${path.join(out, "image.tar")}`,
      dir,
    ]);
    expect(built.status, built.stderr).toBe(0);
    expect(tree(layout)).toEqual(tree(path.join(local.out, "layout")));
    // Judged from outside: skopeo reads it by the name inside, umoci lists it.
    const inspected = JSON.parse(
      execFileSync("skopeo", ["inspect", `oci:${layout}:one`], { encoding: "utf8" }),
    ) as { Digest: string; Layers: string[] };
    expect(inspected.Digest).toBe(localDigest("docker.io/library/app:one"));
    expect(execFileSync("umoci", ["ls", "--layout", layout], { encoding: "utf8" })).toContain("one");
    expect(sha256(readFileSync(path.join(out, "image.tar")))).toBe(
      sha256(readFileSync(path.join(local.out, "image.tar"))),
    );
  }, 240_000);

  it("several platforms pushed: each worker pushes its own image, the client the index alone, and no layer comes back", async () => {
    const client = tempDir("rout-push-client");
    const ref = `${registry.host}/team/app:pushed`;
    const before = { ...worker.proxy.bytes };
    const built = await worker.build(client, [
      "--platform",
      PLATFORMS,
      "-o",
      `type=image,name=${ref},push=true`,
      dir,
    ]);
    expect(built.status, built.stderr).toBe(0);
    // Each platform's image was pushed from where it was built, by digest.
    for (const platform of PLATFORMS.split(",")) {
      expect(built.stderr).toContain(`pushing ${ref} by digest for ${platform}`);
    }
    // Two 4 MiB layers were pushed; what came back to the client is far below one of them.
    expect(worker.proxy.bytes.down - before.down).toBeLessThan(BLOB_BYTES / 4);
    const raw = execFileSync("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`]);
    const index = JSON.parse(raw.toString("utf8")) as {
      manifests: { digest: string; platform: { architecture: string } }[];
    };
    expect(index.manifests.map((m) => m.platform.architecture).sort()).toEqual(["amd64", "arm64"]);
    // The index a local build makes, digest for digest.
    expect(sha256(raw)).toBe(localDigest("docker.io/library/app:several"));
    // Named nothing in the client's store, which holds no layer of it.
    expect(storedDigest(client, ref)).toBeUndefined();
    const copy = path.join(tempDir("rout-push-copy"), "layout");
    execFileSync(
      "skopeo",
      ["copy", "--all", "--src-tls-verify=false", `docker://${ref}`, `oci:${copy}:all`],
      {
        stdio: "ignore",
      },
    );
    // Both platforms' layers are in the registry: the workers pushed them.
    const copied = execFileSync("find", [path.join(copy, "blobs"), "-type", "f", "-size", "+3M"], {
      encoding: "utf8",
    });
    expect(copied.trim().split("\n")).toHaveLength(2);
  }, 300_000);

  it("several platforms with -t NAME --push: named in the client's store as locally, the images come back once", async () => {
    const client = tempDir("rout-tag-push-client");
    const ref = `${registry.host}/team/app:tagged`;
    const before = { ...worker.proxy.bytes };
    const built = await worker.build(client, ["--platform", PLATFORMS, "-t", ref, "--push", dir]);
    expect(built.status, built.stderr).toBe(0);
    const localIndex = localDigest("docker.io/library/app:several");
    expect(storedDigest(client, ref)).toBe(localIndex);
    // The layers came back, for the name here: both of them, once.
    const down = worker.proxy.bytes.down - before.down;
    expect(down).toBeGreaterThan(2 * BLOB_BYTES);
    expect(down).toBeLessThan(3 * BLOB_BYTES);
    const raw = execFileSync("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`]);
    expect(sha256(raw)).toBe(localIndex);
  }, 300_000);
});
