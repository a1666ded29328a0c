/**
 * examples/static-binary, built as its README says: a C program compiled statically by Debian's
 * gcc in a build stage, shipped alone in a `FROM scratch` image. The base image is made here (no
 * Docker Hub); umoci and podman judge the exported image.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { projectRoot, tbuild } from "../helpers/cli.js";
import { makeDockerDebianSlim } from "../helpers/debian-image.js";
import { PrivatePodman } from "../helpers/judges.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const example = `${projectRoot}examples/static-binary`;
const IMAGE = "docker.io/library/static-hello:latest";
const GREETING = "hello, world!\n(a static binary, running as uid 65532, gid 65532)\n";

describe("examples/static-binary", () => {
  const store = tempDir("example-static-store");
  const out = tempDir("example-static-out");
  const ociArchive = path.join(out, "static-hello.oci.tar");
  const dockerArchive = path.join(out, "static-hello.docker.tar");
  const inStore = (args: string[]) => tbuild(args, { env: { TBUILD_ROOT: store } });

  beforeAll(async () => {
    await makeDockerDebianSlim(store, "debian:bookworm-slim", tempDir("example-static-base"));
    const build = inStore([
      "build",
      "--progress=plain",
      "-t",
      "static-hello",
      "-o",
      `type=oci,dest=${ociArchive}`,
      "-o",
      `type=docker,dest=${dockerArchive}`,
      example,
    ]);
    if (build.status !== 0) throw new Error(`the example did not build: ${build.stderr}`);
  }, 900_000);

  it("runs with tbuild run: the entrypoint greets CMD's default, as the unprivileged user", () => {
    const result = inStore(["run", "--rm", "static-hello"]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toBe(GREETING);
  });

  it("takes arguments in place of CMD", () => {
    const result = inStore(["run", "--rm", "static-hello", "Ada", "Grace"]);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/^hello, Ada!\nhello, Grace!\n/);
  });

  it("has one layer, holding nothing but the binary", () => {
    const layout = tempDir("example-static-layout");
    execFileSync("tar", ["-xf", ociArchive, "-C", layout]);
    const manifest = JSON.parse(
      execFileSync("skopeo", ["inspect", "--raw", `oci:${layout}:latest`], { encoding: "utf8" }),
    );
    expect(manifest.layers).toHaveLength(1);
    const layerBlob = path.join(layout, "blobs", manifest.layers[0].digest.replace(":", "/"));
    const entries = execFileSync("tar", ["-tzvf", layerBlob], { encoding: "utf8" }).trim().split("\n");
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatch(/^-rwxr-xr-x 0\/0 .* hello$/);

    // umoci's unpack of the image gives the same: a root filesystem of one file.
    const bundle = path.join(tempDir("example-static-bundle"), "bundle");
    execFileSync("umoci", ["unpack", "--image", `${layout}:latest`, bundle]);
    expect(readdirSync(path.join(bundle, "rootfs"))).toEqual(["hello"]);
    const runtimeConfig = JSON.parse(readFileSync(path.join(bundle, "config.json"), "utf8"));
    expect(runtimeConfig.process.args).toEqual(["/hello", "world"]);
    expect(runtimeConfig.process.user).toMatchObject({ uid: 65532, gid: 65532 });
    // Linked statically: the binary runs with no libc beside it, and ldd says so.
    const ldd = lddReport(path.join(bundle, "rootfs", "hello"));
    expect(ldd).toMatch(/not a dynamic executable/);
  });

  it("loads into podman from the docker archive and runs there the same", () => {
    const podman = new PrivatePodman(tempDir("example-static-podman"));
    expect(podman.load(dockerArchive)).toContain(`Loaded image: ${IMAGE}`);
    const result = podman.run(IMAGE);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toBe(GREETING);
  });
});

/** `ldd FILE`'s report; ldd exits 1 for a static binary, which is the answer, not a failure. */
function lddReport(file: string): string {
  try {
    return execFileSync("ldd", [file], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string };
    return `${failed.stdout ?? ""}${failed.stderr ?? ""}`;
  }
}
