/**
 * The automatic platform args, judged against BuildKit itself (test/oracle/buildkit.ts): a
 * `FROM --platform=$BUILDPLATFORM` stage writes every one of them into a file that each platform's
 * final stage copies, and the files tbuild's one multi-platform build gives equal those BuildKit's
 * builds give, one build per platform, with and without `--build-arg` overrides of the args.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { busyboxRootfs, FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";
import { type BuildKitOracle, startBuildKit } from "./buildkit.js";

const tempDir = tempDirs();
const PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"];
const ARGS = [
  "BUILDPLATFORM",
  "BUILDOS",
  "BUILDARCH",
  "BUILDVARIANT",
  "TARGETPLATFORM",
  "TARGETOS",
  "TARGETARCH",
  "TARGETVARIANT",
];

/** The same Dockerfile for both builders: 1.2 syntax (BuildKit 0.8's frontend). */
function crossContext(): string {
  const dir = tempDir("oracle-args");
  writeFileSync(
    path.join(dir, "Dockerfile"),
    [
      "FROM --platform=$BUILDPLATFORM busybox AS build",
      `ARG ${ARGS.join(" ")}`,
      `RUN for v in ${ARGS.map((a) => `"${a}=$${a}"`).join(" ")}; do echo "$v"; done > /args`,
      "FROM scratch",
      "ARG TARGETARCH",
      "COPY --from=build /args /args-for-$TARGETARCH",
      "",
    ].join("\n"),
  );
  return dir;
}

describe("the platform args, as BuildKit sets them", () => {
  let oracle: BuildKitOracle;
  let store = "";
  beforeAll(async () => {
    oracle = await startBuildKit();
    oracle.importRootfs(await busyboxRootfs(), "busybox:latest", ['CMD ["sh"]']);
    store = tempDir("oracle-store");
    await importBusybox(store, "busybox");
  }, 120_000);
  afterAll(() => oracle?.stop());

  const overrides: [string, string[]][] = [
    ["no override", []],
    ["TARGETPLATFORM overridden", ["TARGETPLATFORM=linux/riscv64"]],
    ["BUILDARCH and TARGETVARIANT overridden", ["BUILDARCH=foo", "TARGETVARIANT=v9"]],
    ["TARGETOS and TARGETARCH overridden", ["TARGETOS=plan9", "TARGETARCH=mips"]],
  ];
  it.each(overrides)("%s: tbuild's files equal BuildKit's for every platform", (_name, buildArgs) => {
    const context = crossContext();
    const flags = buildArgs.flatMap((a) => ["--build-arg", a]);
    const ours = tempDir("oracle-ours");
    const built = tbuild(
      [
        "build",
        "--progress=plain",
        "--platform",
        PLATFORMS.join(","),
        ...flags,
        "-o",
        `type=local,dest=${ours}`,
        context,
      ],
      { env: { TBUILD_ROOT: store, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) } },
    );
    expect(built.status, built.stderr).toBe(0);
    for (const platform of PLATFORMS) {
      const theirs = tempDir("oracle-theirs");
      oracle.build(["--platform", platform, ...flags, "-o", `type=local,dest=${theirs}`, context]);
      const [file, ...others] = readdirNames(theirs);
      expect(others, `BuildKit wrote one file for ${platform}`).toEqual([]);
      const ourDir = path.join(ours, platform.replaceAll("/", "_"));
      expect(readdirNames(ourDir), platform).toEqual([file]);
      expect(readFileSync(path.join(ourDir, file!), "utf8"), platform).toBe(
        readFileSync(path.join(theirs, file!), "utf8"),
      );
    }
  });
});

const readdirNames = (dir: string): string[] => readdirSync(dir).sort();
