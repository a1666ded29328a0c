/**
 * `--platform a,b,...`: one plan and solve per platform, one index of their manifests, as buildx
 * makes it. Judged by skopeo (the index, each platform's config) and by the files: a filesystem
 * output splits into `linux_amd64/`-style directories as BuildKit's does. These builds need no
 * emulation: no step runs a foreign binary (`FROM scratch`, or a `FROM --platform=$BUILDPLATFORM`
 * stage, the cross-compiling shape).
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { startRegistry } from "../helpers/registry.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const EPOCH = String(FIXED_EPOCH);
const THREE = "linux/amd64,arm64,linux/arm";

/** A context whose image differs per platform only by the file its TARGETARCH picks. */
function archContext(): string {
  const dir = tempDir("mp-arch");
  writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\nARG TARGETARCH\nCOPY arch-$TARGETARCH /arch\n");
  for (const arch of ["amd64", "arm64", "arm"])
    writeFileSync(path.join(dir, `arch-${arch}`), `${arch} file\n`);
  return dir;
}

const skopeoJson = (args: string[]) =>
  JSON.parse(execFileSync("skopeo", args, { encoding: "utf8" })) as Record<string, unknown>;

describe("a build for several platforms", () => {
  let store = "";
  beforeAll(async () => {
    store = tempDir("mp-store");
    await importBusybox(store, "busybox");
  }, 120_000);
  const build = (args: string[]) =>
    tbuild(["build", "--progress=plain", ...args], { env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: EPOCH } });

  it("names one index in the store, a manifest per platform, each step named with its platform", () => {
    const built = build(["--platform", THREE, "-t", "multi:1", archContext()]);
    expect(built.status, built.stderr).toBe(0);
    for (const platform of ["linux/amd64", "linux/arm64", "linux/arm/v7"]) {
      expect(built.stderr).toContain(`[${platform} 1/1] COPY arch-$TARGETARCH /arch`);
    }
    const inspected = JSON.parse(tbuild(["inspect", "multi:1"], { env: { TBUILD_ROOT: store } }).stdout) as {
      descriptor: { mediaType: string };
      index: { manifests: { platform: Record<string, string> }[] };
    };
    expect(inspected.descriptor.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(inspected.index.manifests.map((m) => m.platform)).toEqual([
      { architecture: "amd64", os: "linux" },
      { architecture: "arm64", os: "linux" },
      { architecture: "arm", os: "linux", variant: "v7" },
    ]);
    const table = tbuild(["images"], { env: { TBUILD_ROOT: store } }).stdout.split("\n");
    expect(table.find((row) => row.startsWith("multi "))).toMatch(
      / linux\/amd64,linux\/arm64,linux\/arm\/v7$/,
    );
  });

  it("-o type=oci writes the index; skopeo reads each platform's config with its architecture and variant", () => {
    const out = path.join(tempDir("mp-oci"), "image.tar");
    const built = build(["--platform", THREE, "-o", `type=oci,dest=${out}`, archContext()]);
    expect(built.status, built.stderr).toBe(0);
    const index = skopeoJson(["inspect", "--raw", `oci-archive:${out}`]) as { manifests: unknown[] };
    expect(index.manifests).toHaveLength(3);
    for (const [arch, variant] of [
      ["amd64", undefined],
      ["arm64", undefined],
      ["arm", "v7"],
    ] as const) {
      const config = skopeoJson([
        "inspect",
        "--override-arch",
        arch,
        ...(variant ? ["--override-variant", variant] : []),
        "--config",
        `oci-archive:${out}`,
      ]) as { architecture: string; variant?: string; os: string };
      expect({ architecture: config.architecture, variant: config.variant, os: config.os }).toEqual({
        architecture: arch,
        variant,
        os: "linux",
      });
    }
  });

  it("--push sends the index and every platform's image; skopeo copies them all", async () => {
    const registry = await startRegistry();
    try {
      const ref = `${registry.host}/team/multi:1`;
      const built = build(["--platform", "linux/amd64,linux/arm64", "-t", ref, "--push", archContext()]);
      expect(built.status, built.stderr).toBe(0);
      const index = skopeoJson(["inspect", "--tls-verify=false", "--raw", `docker://${ref}`]) as {
        mediaType: string;
        manifests: { platform: { architecture: string } }[];
      };
      expect(index.mediaType).toBe("application/vnd.oci.image.index.v1+json");
      // A pushed image gets provenance by default (buildx's): an attestation manifest per platform after them.
      expect(index.manifests.map((m) => m.platform.architecture)).toEqual([
        "amd64",
        "arm64",
        "unknown",
        "unknown",
      ]);
      const copy = path.join(tempDir("mp-copy"), "layout");
      execFileSync("skopeo", ["copy", "--all", "--src-tls-verify=false", `docker://${ref}`, `oci:${copy}`]);
      const arm = skopeoJson(["inspect", "--override-arch", "arm64", "--config", `oci:${copy}`]) as {
        architecture: string;
      };
      expect(arm.architecture).toBe("arm64");
    } finally {
      await registry.stop();
    }
  });

  it("-o type=oci,tar=false adds the index to a layout directory, beside what it holds", () => {
    const dir = path.join(tempDir("mp-layout"), "layout");
    const first = build([
      "--platform",
      "linux/amd64",
      "-o",
      `type=oci,tar=false,dest=${dir},name=example.com/app:single`,
      archContext(),
    ]);
    expect(first.status, first.stderr).toBe(0);
    const built = build([
      "--platform",
      THREE,
      "-o",
      `type=oci,tar=false,dest=${dir},name=example.com/app:multi`,
      archContext(),
    ]);
    expect(built.status, built.stderr).toBe(0);
    const index = skopeoJson(["inspect", "--raw", `oci:${dir}:multi`]) as { manifests: unknown[] };
    expect(index.manifests).toHaveLength(3);
    const arm = skopeoJson(["inspect", "--override-arch", "arm64", "--config", `oci:${dir}:multi`]) as {
      architecture: string;
    };
    expect(arm.architecture).toBe("arm64");
    // The image written before is still there, under its name.
    expect(skopeoJson(["inspect", "--config", `oci:${dir}:single`]).architecture).toBe("amd64");
  });

  it("-o type=local and type=tar split the platforms into directories, as BuildKit does", () => {
    const dir = tempDir("mp-local");
    const built = build(["--platform", THREE, "-o", `type=local,dest=${dir}`, archContext()]);
    expect(built.status, built.stderr).toBe(0);
    expect(readFileSync(path.join(dir, "linux_amd64", "arch"), "utf8")).toBe("amd64 file\n");
    expect(readFileSync(path.join(dir, "linux_arm64", "arch"), "utf8")).toBe("arm64 file\n");
    expect(readFileSync(path.join(dir, "linux_arm_v7", "arch"), "utf8")).toBe("arm file\n");

    const tar = path.join(tempDir("mp-tar"), "fs.tar");
    const tarred = build([
      "--platform",
      "linux/amd64,linux/arm64",
      "-o",
      `type=tar,dest=${tar}`,
      archContext(),
    ]);
    expect(tarred.status, tarred.stderr).toBe(0);
    const listed = execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).trim().split("\n");
    expect(listed).toEqual(["linux_amd64/", "linux_amd64/arch", "linux_arm64/", "linux_arm64/arch"]);
    expect(execFileSync("tar", ["-xOf", tar, "linux_arm64/arch"], { encoding: "utf8" })).toBe("arm64 file\n");
  });

  it("the platform args are BuildKit's in a FROM --platform=$BUILDPLATFORM stage, whose shared step runs once", () => {
    const dir = tempDir("mp-cross");
    writeFileSync(
      path.join(dir, "Dockerfile"),
      [
        "FROM --platform=$BUILDPLATFORM busybox AS build",
        `RUN echo toolchain-${Date.now()} > /toolchain`,
        "ARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM BUILDOS BUILDARCH",
        'RUN echo "$BUILDPLATFORM $BUILDOS $BUILDARCH -> $TARGETPLATFORM $TARGETOS $TARGETARCH [$TARGETVARIANT]" > /out',
        "FROM scratch",
        "COPY --from=build /out /toolchain /",
        "",
      ].join("\n"),
    );
    const out = tempDir("mp-cross-out");
    const built = build(["--platform", "linux/amd64,linux/arm/v7", "-o", `type=local,dest=${out}`, dir]);
    expect(built.status, built.stderr).toBe(0);
    expect(readFileSync(path.join(out, "linux_amd64", "out"), "utf8")).toBe(
      "linux/amd64 linux amd64 -> linux/amd64 linux amd64 []\n",
    );
    expect(readFileSync(path.join(out, "linux_arm_v7", "out"), "utf8")).toBe(
      "linux/amd64 linux amd64 -> linux/arm/v7 linux arm [v7]\n",
    );
    // The step that uses no target arg is the same for both: it ran once, the other was cached.
    expect(readFileSync(path.join(out, "linux_amd64", "toolchain"), "utf8")).toBe(
      readFileSync(path.join(out, "linux_arm_v7", "toolchain"), "utf8"),
    );
    // One solve of both platforms: the shared step is one step, run once, shown once.
    expect(
      built.stderr.match(/#\d+ \[linux\/[^\]]* build 2\/3\] RUN echo toolchain-\d+ > \/toolchain\n/g),
    ).toHaveLength(1);
    // FROM and the toolchain step once, each platform's RUN and COPY twice: 6 steps, not 8.
    expect(built.stderr).toMatch(/: 6 step\(s\) ran, 0 cached;/);
  });

  it("type=docker is refused before anything is built: a docker archive holds one image", () => {
    const out = path.join(tempDir("mp-docker"), "image.tar");
    const refused = build([
      "--platform",
      "linux/amd64,linux/arm64",
      "-o",
      `type=docker,dest=${out}`,
      archContext(),
    ]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toContain(
      "type=docker holds one image, and this build makes one per platform (linux/amd64, linux/arm64): build one platform (--platform), or write them all as one index with type=oci",
    );
    expect(refused.stderr).not.toContain("COPY");
  });

  it("--explain names, for each platform, what changed for the steps that ran again", () => {
    const dir = archContext();
    const explained = (result: { status: number | null; stderr: string }) => {
      expect(result.status, result.stderr).toBe(0);
      return result.stderr.split("\n").filter((line) => line.startsWith("explain: "));
    };
    explained(build(["--platform", "linux/amd64,linux/arm64", "--explain", dir]));
    writeFileSync(path.join(dir, "arch-arm64"), "arm64 file, edited\n");
    expect(explained(build(["--platform", "linux/amd64,linux/arm64", "--explain", dir]))).toEqual([
      "explain: [linux/arm64 1/1] COPY arch-$TARGETARCH /arch: input file arch-arm64 changed",
    ]);
    writeFileSync(path.join(dir, "arch-amd64"), "amd64 file, edited\n");
    writeFileSync(path.join(dir, "arch-arm64"), "arm64 file, edited again\n");
    expect(explained(build(["--platform", "linux/amd64,linux/arm64", "--explain", dir])).sort()).toEqual([
      "explain: [linux/amd64 1/1] COPY arch-$TARGETARCH /arch: input file arch-amd64 changed",
      "explain: [linux/arm64 1/1] COPY arch-$TARGETARCH /arch: input file arch-arm64 changed",
    ]);
  });

  it("on a worker too, type=docker with several platforms is refused before the worker is started", () => {
    // cmd://false would fail: the refusal comes first.
    const remote = build([
      "--platform",
      "linux/amd64,linux/arm64",
      "--worker",
      "cmd://false",
      "-o",
      `type=docker,dest=${path.join(tempDir("mp-docker-remote"), "image.tar")}`,
      archContext(),
    ]);
    expect(remote.status).toBe(2);
    expect(remote.stderr).toContain(
      "type=docker holds one image, and this build makes one per platform (linux/amd64, linux/arm64)",
    );
    expect(remote.stderr).not.toContain("cmd://false");
  });
});
