import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

/** A store with busybox and `marked:1`, an image no registry has, holding /marker. */
let storeRoot: string;
beforeAll(async () => {
  storeRoot = tempDir("build-context-store");
  await importBusybox(storeRoot, "busybox");
  const built = build([
    "-t",
    "marked:1",
    context({ Dockerfile: "FROM busybox\nRUN echo marker > /marker\n" }),
  ]);
  expect(built.status, built.stderr).toBe(0);
});

function context(files: Record<string, string>): string {
  const dir = tempDir("build-context-ctx");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

function build(args: string[]) {
  return tbuild(["build", "--progress=plain", ...args], { env: { TBUILD_ROOT: storeRoot } });
}

/** Builds with `-o type=local` and returns a reader of the result's files. */
function buildFiles(args: string[]) {
  const out = tempDir("build-context-out");
  const built = build(["-o", `type=local,dest=${out}`, ...args]);
  expect(built.status, built.stderr).toBe(0);
  return (file: string) => readFileSync(path.join(out, file), "utf8");
}

describe("tbuild build --build-context", () => {
  it("NAME=DIR replaces a stage of that name for COPY --from and RUN --mount=from", () => {
    const assets = context({ "data.txt": "from the named context\n" });
    const dir = context({
      Dockerfile:
        "FROM busybox AS assets\nRUN echo from the stage > /data.txt\n" +
        "FROM busybox\nCOPY --from=assets /data.txt /copied.txt\n" +
        "RUN --mount=from=assets,target=/m cat /m/data.txt > /mounted.txt\n",
    });
    const read = buildFiles(["--build-context", `assets=${assets}`, dir]);
    expect(read("copied.txt")).toBe("from the named context\n");
    expect(read("mounted.txt")).toBe("from the named context\n");
    // Without it, the stage is used.
    expect(buildFiles([dir])("copied.txt")).toBe("from the stage\n");
  });

  it("NAME=DIR as FROM makes the directory the stage's root", () => {
    const rootDir = context({ "hello.txt": "hello\n" });
    const dir = context({ Dockerfile: "FROM tree\nCOPY extra.txt /extra.txt\n", "extra.txt": "extra\n" });
    const read = buildFiles(["--build-context", `tree=${rootDir}`, dir]);
    expect(read("hello.txt")).toBe("hello\n");
    expect(read("extra.txt")).toBe("extra\n");
  });

  it("NAME=DIR leaves out what that directory's own .dockerignore names, as BuildKit does", () => {
    const rootDir = context({
      "kept.txt": "kept\n",
      "secret.txt": "ignored\n",
      ".dockerignore": "secret.txt\n",
    });
    const dir = context({ Dockerfile: "FROM scratch\nCOPY --from=tree /*.txt /\n" });
    const out = tempDir("build-context-out");
    const built = build(["-o", `type=local,dest=${out}`, "--build-context", `tree=${rootDir}`, dir]);
    expect(built.status, built.stderr).toBe(0);
    expect(readFileSync(path.join(out, "kept.txt"), "utf8")).toBe("kept\n");
    expect(existsSync(path.join(out, "secret.txt"))).toBe(false);
  });

  it("NAME=docker-image://REF replaces an image by name", () => {
    const dir = context({ Dockerfile: "FROM base\nRUN cat /marker > /copied\n" });
    const read = buildFiles(["--build-context", "base=docker-image://marked:1", dir]);
    expect(read("copied")).toBe("marker\n");
  });

  it("NAME=oci-layout://DIR[:TAG] uses the image in a layout (a tbuild save archive, extracted)", () => {
    const archive = path.join(tempDir("build-context-save"), "marked.tar");
    const saved = tbuild(["save", "-o", archive, "marked:1"], { env: { TBUILD_ROOT: storeRoot } });
    expect(saved.status, saved.stderr).toBe(0);
    const layout = tempDir("build-context-layout");
    execFileSync("tar", ["-xf", archive, "-C", layout]);
    // A fresh store: the image can only come from the layout.
    const fresh = tempDir("build-context-fresh");
    const dir = context({ Dockerfile: "FROM alpine:3\nCOPY --from=tools /marker /from-tools\n" });
    for (const source of [`oci-layout://${layout}`, `oci-layout://${layout}:1`]) {
      const out = tempDir("build-context-out");
      const built = tbuild(
        [
          "build",
          "--build-context",
          `alpine:3=${source}`,
          "--build-context",
          `tools=${source}`,
          "-o",
          `type=local,dest=${out}`,
          dir,
        ],
        { env: { TBUILD_ROOT: fresh } },
      );
      expect(built.status, built.stderr).toBe(0);
      expect(readFileSync(path.join(out, "marker"), "utf8")).toBe("marker\n");
      expect(readFileSync(path.join(out, "from-tools"), "utf8")).toBe("marker\n");
    }
  });

  it("a source kind tbuild does not read yet is refused by name", () => {
    const dir = context({ Dockerfile: "FROM busybox\n" });
    const built = build(["--build-context", "x=https://example.com/x.tar", dir]);
    expect(built.status).toBe(1);
    expect(built.stderr).toContain("not supported yet");
  });
});
