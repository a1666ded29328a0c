import { describe, expect, it } from "vitest";
import { proxyEnv } from "../../../frontend/lower/index.js";
import { asExec, lower } from "./lower.js";

describe("ARG and ENV scoping", () => {
  it("a global ARG is usable in FROM and takes --build-arg", async () => {
    const dockerfile = "ARG BASE=busybox\nFROM ${BASE}\n";
    expect((await lower(dockerfile)).asked).toEqual(["docker.io/library/busybox:latest"]);
    expect((await lower(dockerfile, { buildArgs: { BASE: "debian:12" } })).asked).toEqual([
      "docker.io/library/debian:12",
    ]);
  });

  it("a global ARG is not visible inside a stage until redeclared without a value", async () => {
    const build = await lower(`ARG V=global
FROM busybox AS plain
RUN echo "[$V]"
ENV SEEN=\${V}
FROM busybox
ARG V
ENV SEEN=\${V}
COPY --from=plain /etc/passwd /p
`);
    expect(build.image.config.Env).toContain("SEEN=global");
    const plain = build.ops("exec")[0]!;
    expect(build.env(plain).V).toBeUndefined();
  });

  it("a stage ARG default expands with what is set before it, and --build-arg overrides it", async () => {
    const dockerfile = `FROM busybox
ENV BASE=/opt
ARG DIR=\${BASE}/app
WORKDIR \${DIR}
`;
    expect((await lower(dockerfile)).image.config.WorkingDir).toBe("/opt/app");
    expect((await lower(dockerfile, { buildArgs: { DIR: "/srv" } })).image.config.WorkingDir).toBe("/srv");
  });

  it("ARG values reach RUN's environment but not the image config", async () => {
    const build = await lower("FROM busybox\nARG VERSION=1.2\nRUN echo $VERSION\n");
    expect(build.env(asExec(build.rootVertex().op)).VERSION).toBe("1.2");
    expect(build.image.config.Env?.some((e) => e.startsWith("VERSION="))).toBe(false);
  });

  it("an ENV after an ARG of the same name wins", async () => {
    const build = await lower("FROM busybox\nARG V=from-arg\nENV V=from-env\nRUN echo $V\nLABEL v=$V\n");
    expect(build.env(asExec(build.rootVertex().op)).V).toBe("from-env");
    expect(build.image.config.Labels?.v).toBe("from-env");
  });

  it("ENV values on one line expand with the values from before that line", async () => {
    const build = await lower("FROM busybox\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n");
    expect(build.image.config.Env).toEqual(expect.arrayContaining(["abc=bye", "def=hello", "ghi=bye"]));
  });

  it("ARG declared in a stage stays in the stages built FROM it", async () => {
    const build = await lower("FROM busybox AS base\nARG MODE=debug\nFROM base\nRUN echo $MODE\n");
    expect(build.env(asExec(build.rootVertex().op)).MODE).toBe("debug");
  });

  it("platform ARGs are global: usable in FROM, and in a stage once declared", async () => {
    const build = await lower(
      `FROM --platform=$BUILDPLATFORM busybox AS tools
ARG TARGETARCH
ARG TARGETPLATFORM
RUN echo $TARGETARCH
FROM busybox
RUN echo "[$TARGETARCH]"
COPY --from=tools /bin/sh /sh
`,
      { targetPlatform: { os: "linux", architecture: "arm64" } },
    );
    const [tools, final] = build.ops("exec");
    expect(build.env(tools!).TARGETARCH).toBe("arm64");
    expect(build.env(tools!).TARGETPLATFORM).toBe("linux/arm64");
    expect(tools!.platform.architecture).toBe("amd64");
    expect(build.env(final!).TARGETARCH).toBeUndefined();
    expect(final!.platform.architecture).toBe("arm64");
  });

  it("a bare global ARG of a platform name declares it and keeps its value, as in BuildKit; a value replaces it", async () => {
    const images = {
      "example.invalid/arm64:1": {},
      "example.invalid/custom:1": {},
      "example.invalid/vnone:1": {},
    };
    const arm64 = { targetPlatform: { os: "linux", architecture: "arm64" }, images };
    expect((await lower("ARG TARGETARCH\nFROM example.invalid/$TARGETARCH:1\n", arm64)).asked).toEqual([
      "example.invalid/arm64:1",
    ]);
    expect((await lower("ARG TARGETARCH=custom\nFROM example.invalid/$TARGETARCH:1\n", arm64)).asked).toEqual(
      ["example.invalid/custom:1"],
    );
    // Any other bare global ARG is unset, as before.
    expect((await lower("ARG V\nFROM example.invalid/v${V:-none}:1\n", arm64)).asked).toEqual([
      "example.invalid/vnone:1",
    ]);
  });

  it("TARGETSTAGE is the stage built: --target, else the last stage's name, else default", async () => {
    const dockerfile = "FROM busybox AS base\nARG TARGETSTAGE\nRUN echo $TARGETSTAGE\nFROM base AS final\n";
    const stageOf = async (options: { target?: string }, text = dockerfile) => {
      const build = await lower(text, options);
      return build.env(build.ops("exec")[0]!).TARGETSTAGE;
    };
    expect(await stageOf({ target: "base" })).toBe("base");
    expect(await stageOf({})).toBe("final");
    expect(await stageOf({}, dockerfile.replace(" AS final", ""))).toBe("default");
  });

  it("proxy build args stay out of the graph and the history; the worker gives them to RUN", async () => {
    const build = await lower("FROM busybox\nRUN wget example.invalid\n", {
      buildArgs: { HTTP_PROXY: "http://proxy:3128" },
    });
    expect(JSON.stringify(build.graph)).not.toContain("proxy:3128");
    expect(JSON.stringify(build.image.history)).not.toContain("proxy:3128");
    expect(build.warnings).toEqual([]);
  });

  it("proxy build args, in either case, give RUN both cases, the lowercase name winning", () => {
    expect(proxyEnv({ http_proxy: "hp", NO_PROXY: "np", FOO: "x" })).toEqual([
      "NO_PROXY=np",
      "no_proxy=np",
      "HTTP_PROXY=hp",
      "http_proxy=hp",
    ]);
    expect(proxyEnv({ HTTPS_PROXY: "upper", https_proxy: "lower" })).toEqual([
      "HTTPS_PROXY=lower",
      "https_proxy=lower",
    ]);
  });

  it("RUN's history line lists the stage's ARGs as BuildKit writes them", async () => {
    const build = await lower("FROM busybox\nARG A=1\nARG B\nRUN echo hi\n", { buildArgs: { B: "2" } });
    expect(build.image.history?.at(-1)?.created_by).toBe("RUN |2 A=1 B=2 /bin/sh -c echo hi # buildkit");
  });

  it("RUN's history line lists an ARG declared twice once, with its latest value", async () => {
    const build = await lower("FROM busybox\nARG foo=bar\nARG bar=123\nARG foo=bar2\nRUN ls\n");
    expect(build.image.history?.at(-1)?.created_by).toBe("RUN |2 foo=bar2 bar=123 /bin/sh -c ls # buildkit");
  });

  it("warns when a variable is used before its ARG declaration", async () => {
    const build = await lower("FROM busybox\nENV X=$LATE\nARG LATE=1\n");
    expect(build.warnings).toEqual([
      expect.objectContaining({
        message: "LATE is used before its ARG declaration on line 3",
        position: expect.objectContaining({ line: 2 }),
      }),
    ]);
  });

  it("warns when FROM uses an ARG that was never declared globally", async () => {
    const build = await lower("FROM busybox$SUFFIX\n");
    expect(build.warnings.map((w) => w.message)).toEqual([
      "FROM uses $SUFFIX, but no ARG before the first FROM declares it",
    ]);
  });

  it("warns about build args no ARG consumes", async () => {
    const build = await lower("FROM busybox\n", { buildArgs: { UNUSED: "1" } });
    expect(build.warnings.map((w) => w.message)).toEqual([
      "build-arg UNUSED was given but no ARG in Dockerfile declares it",
    ]);
  });
});
