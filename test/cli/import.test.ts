import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { beforeAll, describe, expect, it } from "vitest";
import type { ImageConfig, Index, Manifest } from "../../oci/spec.js";
import { tbuild, tbuildBin } from "../helpers/cli.js";
import { busyboxRootfs, FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { schemaErrors } from "../helpers/oci-schema.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

function blob(root: string, digest: string): Buffer {
  return readFileSync(path.join(root, "blobs", digest.replace(":", "/")));
}

function storeIndex(root: string): Index {
  return JSON.parse(readFileSync(path.join(root, "index.json"), "utf8")) as Index;
}

/** The manifest and config a name points to in the store at `root`. */
function imageIn(
  root: string,
  name: string,
): { manifest: Manifest; config: ImageConfig; manifestDigest: string } {
  const entry = storeIndex(root).manifests.find(
    (m) => m.annotations?.["org.opencontainers.image.ref.name"] === name,
  );
  if (entry === undefined) throw new Error(`${name} is not in ${root}`);
  const manifest = JSON.parse(blob(root, entry.digest).toString()) as Manifest;
  const config = JSON.parse(blob(root, manifest.config.digest).toString()) as ImageConfig;
  return { manifest, config, manifestDigest: entry.digest };
}

function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

const env = (root: string) => ({ TBUILD_ROOT: root, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) });

describe("tbuild import", () => {
  let rootfs: string;
  beforeAll(async () => {
    rootfs = await busyboxRootfs();
  });

  it("imports the busybox root filesystem as an image umoci unpacks and skopeo inspects", async () => {
    const root = tempDir("import");
    await importBusybox(root, "busybox");
    const { manifest, config } = imageIn(root, "docker.io/library/busybox:latest");
    expect(schemaErrors("manifest", manifest)).toEqual([]);
    expect(schemaErrors("config", config)).toEqual([]);
    expect(schemaErrors("index", storeIndex(root))).toEqual([]);
    expect(schemaErrors("layout", readFileSync(path.join(root, "oci-layout")))).toEqual([]);
    expect(manifest.layers).toHaveLength(1);
    expect(manifest.layers[0]!.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+gzip");
    expect(config.config.Cmd).toEqual(["sh"]);
    expect(config.created).toBe("2000-01-01T00:00:00Z");

    const bundle = path.join(tempDir("bundle"), "b");
    execFileSync(
      "umoci",
      ["unpack", "--rootless", "--image", `${root}:docker.io/library/busybox:latest`, bundle],
      {
        stdio: "pipe",
      },
    );
    const busybox = readFileSync(path.join(bundle, "rootfs/bin/busybox"));
    expect(busybox.equals(readFileSync("/bin/busybox"))).toBe(true);
    expect(readdirSync(path.join(bundle, "rootfs/bin"))).toContain("sh");

    const inspected = JSON.parse(
      execFileSync("skopeo", ["inspect", `oci:${root}:docker.io/library/busybox:latest`], {
        encoding: "utf8",
      }),
    );
    expect(inspected.Architecture).toBe(config.architecture);
    expect(inspected.Layers).toEqual([manifest.layers[0]!.digest]);
  });

  it("packs a directory deterministically: sorted entries, modes, owners and mtimes kept", () => {
    const first = tempDir("det1");
    const second = tempDir("det2");
    expect(tbuild(["import", rootfs, "a"], { env: env(first) }).status).toBe(0);
    expect(tbuild(["import", rootfs, "b"], { env: env(second) }).status).toBe(0);
    const a = imageIn(first, "docker.io/library/a:latest");
    const b = imageIn(second, "docker.io/library/b:latest");
    expect(a.manifestDigest).toBe(b.manifestDigest);

    const listing = execFileSync(
      "tar",
      ["-tvzf", path.join(first, "blobs", a.manifest.layers[0]!.digest.replace(":", "/"))],
      {
        encoding: "utf8",
      },
    ).split("\n");
    const names = listing.filter(Boolean).map((line) => line.split(/\s+/)[5]!);
    expect(names.slice(0, 3)).toEqual(["bin/", "bin/[", "bin/[["]);
    expect(names).toEqual([...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
    expect(listing.find((l) => l.endsWith(" tmp/"))).toMatch(/^drwxrwxrwt 0\/0 .* 2000-01-01 /);
    expect(listing.find((l) => l.endsWith(" root/"))).toMatch(/^drwx------ /);
    expect(listing.find((l) => / bin\/sh -> busybox$/.test(l))).toMatch(/^lrwxrwxrwx /);
  });

  it("imports a tar, a tar.gz and standard input with the archive's own bytes as the layer", () => {
    const work = tempDir("tars");
    const plain = path.join(work, "rootfs.tar");
    execFileSync("tar", ["-cf", plain, "-C", rootfs, "."]);
    const bytes = readFileSync(plain);
    writeFileSync(`${plain}.gz`, gzipSync(bytes));
    const root = tempDir("tars-store");
    expect(tbuild(["import", plain, "plain"], { env: env(root) }).status).toBe(0);
    expect(tbuild(["import", `${plain}.gz`, "gz"], { env: env(root) }).status).toBe(0);
    const viaStdin = spawnSync(tbuildBin, ["import", "-", "stdin"], {
      env: { ...process.env, ...env(root) },
      input: bytes,
    });
    expect(viaStdin.status).toBe(0);
    for (const name of ["plain", "gz", "stdin"]) {
      expect(imageIn(root, `docker.io/library/${name}:latest`).config.rootfs.diff_ids).toEqual([
        sha256(bytes),
      ]);
    }
    const history = imageIn(root, "docker.io/library/gz:latest").config.history;
    expect(history).toEqual([{ created: "2000-01-01T00:00:00Z", comment: `Imported from ${plain}.gz` }]);
  });

  it("applies --change instructions to the config, as docker import does", () => {
    const root = tempDir("change");
    const result = tbuild(
      [
        "import",
        rootfs,
        "changed:1",
        "--platform",
        "linux/arm64",
        "-c",
        "ENV A=1 B=two",
        "-c",
        "ENV C=${A}-x",
        "-c",
        'ENTRYPOINT ["/bin/sh", "-c"]',
        "-c",
        "CMD echo hi",
        "-c",
        "EXPOSE 80 53/udp",
        "-c",
        'LABEL org.example.k="v w"',
        "-c",
        "USER nobody",
        "-c",
        "WORKDIR /srv",
        "-c",
        "WORKDIR data",
        "-c",
        "VOLUME /data",
        "-c",
        "STOPSIGNAL SIGTERM",
        "-c",
        "ONBUILD RUN echo child",
        "-m",
        "from a test",
      ],
      { env: env(root) },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const { config } = imageIn(root, "docker.io/library/changed:1");
    expect(config.architecture).toBe("arm64");
    expect(config.config).toEqual({
      Env: ["A=1", "B=two", "C=1-x"],
      Entrypoint: ["/bin/sh", "-c"],
      Cmd: ["/bin/sh", "-c", "echo hi"],
      // As BuildKit marks a CMD (Docker's own import leaves it out; Linux ignores it).
      ArgsEscaped: true,
      ExposedPorts: { "80/tcp": {}, "53/udp": {} },
      Labels: { "org.example.k": "v w" },
      User: "nobody",
      WorkingDir: "/srv/data",
      Volumes: { "/data": {} },
      StopSignal: "SIGTERM",
      OnBuild: ["RUN echo child"],
    });
    expect(config.history?.[0]?.comment).toBe("from a test");
    expect(schemaErrors("config", config)).toEqual([]);
  });

  it("gives the config a Dockerfile gives, for the same instructions", () => {
    const root = tempDir("change-parity");
    const instructions = [
      "ENV A=1 B=two",
      "ENV C=${A}-x",
      "EXPOSE 8000-8001/udp 80 53/UDP",
      "STOPSIGNAL SIGRTMIN+3",
      "WORKDIR /srv",
      "WORKDIR data",
      "USER nobody",
      "VOLUME /data",
      'LABEL org.example.k="v w"',
      'ENTRYPOINT ["/bin/sh", "-c"]',
      "CMD echo hi",
      "HEALTHCHECK --interval=5s CMD true",
      "ONBUILD RUN echo child",
    ];
    const changes = (list: string[]) => list.flatMap((i) => ["-c", i]);
    // The base carries a PATH, so that the build's default PATH (BuildKit's) adds nothing.
    const withPath = "ENV PATH=/usr/bin:/bin";
    for (const args of [
      ["import", rootfs, "base:1", ...changes([withPath])],
      ["import", rootfs, "imported:1", ...changes([withPath, ...instructions])],
    ]) {
      const result = tbuild(args, { env: env(root) });
      expect(result.stderr).toBe("");
      expect(result.status).toBe(0);
    }
    const context = tempDir("change-parity-context");
    writeFileSync(path.join(context, "Dockerfile"), ["FROM base:1", ...instructions, ""].join("\n"));
    const built = tbuild(["build", "--progress=quiet", "-t", "built:1", context], { env: env(root) });
    expect(built.stderr).toBe("");
    expect(built.status).toBe(0);
    const imported = imageIn(root, "docker.io/library/imported:1").config.config;
    const fromDockerfile = imageIn(root, "docker.io/library/built:1").config.config;
    expect(imported).toEqual(fromDockerfile);
    // What both must hold, whatever either does: the ports as Docker parses them, the signal as written.
    expect(Object.keys(imported.ExposedPorts ?? {}).sort()).toEqual([
      "53/udp",
      "80/tcp",
      "8000/udp",
      "8001/udp",
    ]);
    expect(imported.StopSignal).toBe("SIGRTMIN+3");
    expect(imported.WorkingDir).toBe("/srv/data");

    // And they refuse the same things: a signal no system has, a port past 65535.
    for (const bad of ["STOPSIGNAL SIGNOPE", "EXPOSE 70000"]) {
      const importing = tbuild(["import", rootfs, "bad:1", "-c", bad], { env: env(root) });
      expect(importing.status, bad).toBe(2);
      writeFileSync(path.join(context, "Dockerfile"), `FROM base:1\n${bad}\n`);
      const building = tbuild(["build", "--progress=quiet", context], { env: env(root) });
      expect(building.status, bad).toBe(1);
      const reason = /invalid (signal|port)[^\n]*/;
      expect(importing.stderr.match(reason)?.[0]).toBe(building.stderr.match(reason)?.[0]);
    }
  });

  it("says what is wrong with bad input, and stores nothing", () => {
    const root = tempDir("bad");
    const work = tempDir("bad-input");
    writeFileSync(path.join(work, "notes.txt"), "hello, not a tar\n");
    writeFileSync(path.join(work, "empty.tar"), "");
    writeFileSync(
      path.join(work, "rootfs.tar.xz"),
      Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]),
    );
    const cases: [string[], number, RegExp][] = [
      [
        ["import", path.join(work, "missing.tar"), "x"],
        1,
        /cannot import .*missing\.tar: no such file or directory/,
      ],
      [["import", path.join(work, "notes.txt"), "x"], 1, /notes\.txt is not a tar archive/],
      [["import", path.join(work, "empty.tar"), "x"], 1, /empty\.tar is empty: expected a tar archive/],
      [
        ["import", path.join(work, "rootfs.tar.xz"), "x"],
        1,
        /compressed with xz, which tbuild does not read yet: decompress it first \(xz -d\)/,
      ],
      [["import", rootfs, "Bad:Name:x"], 1, /invalid image reference "Bad:Name:x"/],
      [["import", rootfs, "x", "-c", "RUN true"], 2, /RUN cannot be changed on import/],
      [["import", rootfs, "x", "-c", "EXPOSE http"], 2, /invalid port "http"/],
      [["import", rootfs], 2, /takes a root filesystem .* and a REF/],
    ];
    for (const [args, status, message] of cases) {
      const result = tbuild(args, { env: env(root) });
      expect(result.status, args.join(" ")).toBe(status);
      expect(result.stderr).toMatch(message);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    }
    expect(storeIndex(root).manifests).toEqual([]);
    expect(readdirSync(path.join(root, "blobs/sha256"))).toEqual([]);
    expect(filesUnder(path.join(root, "ingest"))).toEqual([]);
  });

  it("on a full disk says so and leaves a store the next command uses (a real 512 KiB tmpfs)", () => {
    const root = tempDir("full");
    // A private mount namespace: the tmpfs goes away with the shell, whatever happens in it.
    const script = `
      mount -t tmpfs -o size=512k tmpfs "$ROOT" || exit 99
      "$TBUILD" import "$ROOTFS" busybox; echo "import=$?"
      echo "files=$(find "$ROOT/blobs" "$ROOT/ingest" -type f | wc -l)"
      "$TBUILD" images --format json | tr -d ' \\n'; echo
      "$TBUILD" import "$SMALL" small; echo "small=$?"
    `;
    const small = tempDir("small");
    writeFileSync(path.join(small, "hello"), "hi\n");
    const result = spawnSync("unshare", ["-m", "sh", "-c", script], {
      env: { ...process.env, ROOT: root, TBUILD: tbuildBin, ROOTFS: rootfs, SMALL: small, TBUILD_ROOT: root },
      encoding: "utf8",
    });
    expect(result.stdout).toContain("import=1");
    expect(result.stderr).toMatch(
      /no space left on the device of the store .*: nothing half-written was kept/,
    );
    expect(result.stdout).toContain("files=0");
    expect(result.stdout).toContain("\n[]\n");
    expect(result.stdout).toContain("small=0");
  });

  it("leaves a store the next command uses when killed mid-import", async () => {
    const root = tempDir("killed");
    const big = tempDir("big");
    mkdirSync(path.join(big, "data"));
    // Incompressible bytes keep gzip busy long enough to be killed in the middle.
    for (let i = 0; i < 8; i++) {
      writeFileSync(
        path.join(big, "data", `f${i}`),
        createHash("sha512").update(String(i)).digest().toString("hex").repeat(40000),
      );
    }
    symlinkSync("data/f0", path.join(big, "link"));
    const child = spawn(tbuildBin, ["import", big, "big"], { env: { ...process.env, TBUILD_ROOT: root } });
    // Killed once the layer is being written: its temp file exists in ingest/.
    const ingest = path.join(root, "ingest");
    const writing = () => {
      try {
        return readdirSync(ingest).length > 0;
      } catch {
        return false;
      }
    };
    for (let waited = 0; waited < 20_000; waited += 5) {
      if (writing()) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));

    const images = tbuild(["images", "--format", "json"], { env: { TBUILD_ROOT: root } });
    expect(images.status).toBe(0);
    expect(JSON.parse(images.stdout)).toEqual([]);
    // Whatever reached blobs/ is whole: every blob hashes to its name.
    for (const hex of readdirSync(path.join(root, "blobs/sha256"))) {
      expect(sha256(readFileSync(path.join(root, "blobs/sha256", hex)))).toBe(`sha256:${hex}`);
    }
    expect(tbuild(["import", big, "big"], { env: { TBUILD_ROOT: root } }).status).toBe(0);
    // The next collection removes what the killed import left in ingest/.
    expect(tbuild(["rmi", "big"], { env: { TBUILD_ROOT: root } }).status).toBe(0);
    expect(filesUnder(path.join(root, "ingest"))).toEqual([]);
    expect(readdirSync(path.join(root, "blobs/sha256"))).toEqual([]);
  });
});
