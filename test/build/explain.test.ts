import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { busyboxRootfs, importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

let storeRoot: string;
beforeAll(async () => {
  storeRoot = tempDir("explain-store");
  await importBusybox(storeRoot, "busybox");
});

function context(files: Record<string, string>): string {
  const dir = tempDir("explain-ctx");
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

function build(args: string[]) {
  const result = tbuild(["build", "--progress=plain", "--explain", ...args], {
    env: { TBUILD_ROOT: storeRoot },
  });
  expect(result.status, result.stderr).toBe(0);
  return result.stderr.split("\n").filter((line) => line.startsWith("explain: "));
}

describe("tbuild build --explain", () => {
  it("names the changed file of the context, through the COPY to the RUN that reads it", () => {
    const dir = context({
      Dockerfile: "FROM busybox\nCOPY src/ /src/\nRUN cat /src/main.c > /out\n",
      "src/main.c": "int main() {}\n",
      "src/util.c": "void util() {}\n",
    });
    build([dir]);
    writeFileSync(path.join(dir, "src/main.c"), "int main() { return 1; }\n");
    const lines = build([dir]);
    expect(lines).toEqual([
      "explain: [2/3] COPY src/ /src/: input file src/main.c changed",
      "explain: [3/3] RUN cat /src/main.c > /out: [2/3] COPY src/ /src/ changed: input file src/main.c changed",
    ]);
    expect(build([dir])).toEqual([]);
  });

  it("names a changed SOURCE_DATE_EPOCH, and a build with it after one without equals a fresh store's", async () => {
    const dir = context({
      Dockerfile: "FROM busybox\nCOPY f /f\nRUN touch /made\n",
      f: "a file with today's mtime\n",
    });
    const digestOf = (store: string, env: Record<string, string>) => {
      const metadata = path.join(tempDir("explain-metadata"), "m.json");
      const result = tbuild(["build", "--progress=plain", "--explain", "--metadata-file", metadata, dir], {
        env: { TBUILD_ROOT: store, ...env },
      });
      expect(result.status, result.stderr).toBe(0);
      const lines = result.stderr.split("\n").filter((line) => line.startsWith("explain: "));
      return { digest: JSON.parse(readFileSync(metadata, "utf8"))["containerimage.digest"], lines };
    };
    const warm = tempDir("explain-sde-store");
    await importBusybox(warm, "busybox");
    digestOf(warm, {});
    const clamped = digestOf(warm, { SOURCE_DATE_EPOCH: "1000000000" });
    expect(clamped.lines).toEqual([
      "explain: [2/3] COPY f /f: SOURCE_DATE_EPOCH changed (was unset, now 1000000000)",
      "explain: [3/3] RUN touch /made: SOURCE_DATE_EPOCH changed (was unset, now 1000000000)",
    ]);
    const fresh = tempDir("explain-sde-fresh");
    await importBusybox(fresh, "busybox");
    expect(clamped.digest).toBe(digestOf(fresh, { SOURCE_DATE_EPOCH: "1000000000" }).digest);
  });

  it("names a changed --build-arg", () => {
    const dir = context({ Dockerfile: "FROM busybox\nARG LEVEL\nRUN echo $LEVEL > /level\n" });
    build(["--build-arg", "LEVEL=1", dir]);
    expect(build(["--build-arg", "LEVEL=2", dir])).toEqual([
      'explain: [2/2] RUN echo 2 > /level: build arg LEVEL changed: "1" → "2"',
    ]);
  });

  it("names a changed instruction text", () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN echo one > /f\nRUN echo done\n" });
    build([dir]);
    writeFileSync(path.join(dir, "Dockerfile"), "FROM busybox\nRUN echo two > /f\nRUN echo done\n");
    expect(build([dir])).toEqual([
      'explain: [2/3] RUN echo two > /f: instruction text changed: "RUN echo one > /f" → "RUN echo two > /f"',
      'explain: [3/3] RUN echo done: [2/3] RUN echo two > /f changed: instruction text changed: "RUN echo one > /f" → "RUN echo two > /f"',
    ]);
  });

  it("names a changed base image digest", async () => {
    const store = tempDir("explain-base-store");
    const dir = context({ Dockerfile: "FROM base\nRUN echo hi > /hi\n" });
    const rootfs = await busyboxRootfs();
    const importAs = (cmd: string) => {
      const imported = tbuild(["import", rootfs, "base", "--change", cmd], { env: { TBUILD_ROOT: store } });
      expect(imported.status, imported.stderr).toBe(0);
    };
    const buildIn = () => {
      const result = tbuild(["build", "--progress=rawjson", "--explain", dir], {
        env: { TBUILD_ROOT: store },
      });
      expect(result.status, result.stderr).toBe(0);
      return result.stderr
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { type: string; name?: string; reason?: string })
        .filter((event) => event.type === "explain");
    };
    importAs('CMD ["sh"]');
    buildIn();
    importAs('CMD ["true"]');
    const events = buildIn();
    expect(events).toHaveLength(2);
    expect(events[0]!.name).toMatch(/^\[1\/2\] FROM docker\.io\/library\/base:latest@sha256:/);
    expect(events[0]!.reason).toMatch(
      /^base image docker\.io\/library\/base:latest digest changed: sha256:[0-9a-f]{64} → sha256:[0-9a-f]{64}$/,
    );
    expect(events[1]!.name).toBe("[2/2] RUN echo hi > /hi");
    expect(events[1]!.reason).toMatch(/^\[1\/2\] FROM .* changed: base image .* digest changed: /);
  });
});
