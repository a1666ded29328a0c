/**
 * BuildKit as the oracle: a private Docker daemon (Debian's `docker.io`, 20.10, with BuildKit
 * 0.8 embedded) started on its own socket, data root and exec root, and Debian's `/usr/bin/docker`
 * client to build with it (`DOCKER_BUILDKIT=1`). No network: base images are imported into it
 * from the same busybox root filesystem the tests import into tbuild's stores.
 *
 * Its embedded Dockerfile frontend is the 1.2 syntax: RUN mounts yes, heredocs no. It builds one
 * platform per build (`docker build`, not buildx). It must be started as root.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, watch } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** Debian's client, not whichever `docker` comes first on PATH (it must speak to a 20.10 daemon). */
const DOCKER = "/usr/bin/docker";
const DOCKERD = "/usr/sbin/dockerd";

export interface BuildKitOracle {
  /** `docker ARGS` against this daemon, BuildKit on; the result as spawnSync gives it. */
  docker(
    args: string[],
    options?: { input?: Buffer },
  ): { status: number | null; stdout: string; stderr: string };
  /** `docker build --network host ARGS`: what failed is thrown with BuildKit's output. */
  build(args: string[]): string;
  /** Imports a root filesystem directory as image `name`, with Dockerfile `changes` (`CMD ["sh"]`). */
  importRootfs(dir: string, name: string, changes?: string[]): void;
  /**
   * The config of image `name` as the daemon stores it, byte for byte (read from its image store:
   * `docker save` refuses an image without layers, as a `FROM scratch` with metadata only is).
   */
  imageConfig(name: string): Buffer;
  stop(): Promise<void>;
}

/**
 * Starts the daemon and resolves once it serves its API (it says so on its log), or rejects with
 * its log when it exits first.
 */
export async function startBuildKit(): Promise<BuildKitOracle> {
  const dir = mkdtempSync(path.join(tmpdir(), "tbuild-oracle-"));
  const socket = path.join(dir, "docker.sock");
  // Its log goes to a file: a pipe nobody reads while a synchronous build runs would fill, and
  // the daemon would stop at its next log line.
  const logFile = path.join(dir, "dockerd.log");
  const logFd = openSync(logFile, "a");
  const child: ChildProcess = spawn(
    DOCKERD,
    [
      "--data-root",
      path.join(dir, "data"),
      "--exec-root",
      path.join(dir, "exec"),
      "--pidfile",
      path.join(dir, "dockerd.pid"),
      "--host",
      `unix://${socket}`,
      "--storage-driver",
      "overlay2",
      "--iptables=false",
      "--bridge=none",
    ],
    { stdio: ["ignore", logFd, logFd] },
  );
  closeSync(logFd);
  const log = () => readFileSync(logFile, "utf8");
  // Serving once its socket exists: the daemon makes it by listening on it.
  const watcher = watch(dir);
  try {
    await new Promise<void>((resolve, reject) => {
      watcher.on("change", () => {
        if (existsSync(socket)) resolve();
      });
      child.once("error", (err) =>
        reject(new Error(`cannot start ${DOCKERD} (install docker.io): ${err.message}`)),
      );
      child.once("exit", (code) => reject(new Error(`dockerd exited (${code}) before serving:\n${log()}`)));
      if (existsSync(socket)) resolve();
    });
  } finally {
    watcher.close();
  }
  const env = { ...process.env, DOCKER_HOST: `unix://${socket}`, DOCKER_BUILDKIT: "1", DOCKER_CONFIG: dir };
  const docker: BuildKitOracle["docker"] = (args, options = {}) => {
    const result = spawnSync(DOCKER, args, {
      env,
      encoding: "utf8",
      maxBuffer: 256 * 1024 * 1024,
      ...(options.input ? { input: options.input } : {}),
    });
    return { status: result.status, stdout: result.stdout, stderr: result.stderr };
  };
  return {
    docker,
    build(args) {
      const result = docker(["build", "--network", "host", "--progress", "plain", ...args]);
      if (result.status !== 0) {
        throw new Error(
          `BuildKit failed (docker build ${args.join(" ")}):\n${result.stderr}\ndockerd's log:\n${log().slice(-8192)}`,
        );
      }
      return result.stderr;
    },
    importRootfs(rootfs, name, changes = []) {
      const tar = spawnSync("tar", ["-C", rootfs, "-c", "."], { maxBuffer: 1024 * 1024 * 1024 });
      if (tar.status !== 0) throw new Error(`tar of ${rootfs} failed: ${tar.stderr}`);
      const result = docker(["import", ...changes.flatMap((c) => ["--change", c]), "-", name], {
        input: tar.stdout,
      });
      if (result.status !== 0) throw new Error(`docker import failed: ${result.stderr}`);
    },
    imageConfig(name) {
      const inspected = docker(["image", "inspect", "--format", "{{.Id}}", name]);
      if (inspected.status !== 0) throw new Error(`docker image inspect ${name} failed: ${inspected.stderr}`);
      const id = inspected.stdout.trim().replace(/^sha256:/, "");
      return readFileSync(path.join(dir, "data", "image", "overlay2", "imagedb", "content", "sha256", id));
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
