import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { asExec, asFile, lower } from "./lower.js";

describe("the image config of the target", () => {
  it("inherits the base image's config and history", async () => {
    const build = await lower("FROM busybox\nENV A=1\n");
    expect(build.image.config.Cmd).toEqual(["sh"]);
    expect(build.image.config.Env).toEqual([
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "A=1",
    ]);
    expect(build.image.history?.map((h) => h.created_by)).toEqual([
      "base layer of docker.io/library/busybox:latest",
      "ENV A=1",
    ]);
    expect(build.image.history?.[1]?.empty_layer).toBe(true);
  });

  it("scratch starts with a default PATH and no layers", async () => {
    const build = await lower('FROM scratch\nCMD ["/app"]\n');
    expect(build.root).toBeUndefined();
    expect(build.image.config.Env).toEqual([
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    expect(build.image.config.Cmd).toEqual(["/app"]);
  });

  it("a base image without PATH gets the default one after its own Env, as BuildKit does", async () => {
    const build = await lower("FROM imported\nENV A=1\n", { images: { imported: { Env: ["LANG=C"] } } });
    expect(build.image.config.Env).toEqual([
      "LANG=C",
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "A=1",
    ]);
  });

  it("ENTRYPOINT resets an inherited CMD but keeps one set in the same stage", async () => {
    expect((await lower('FROM busybox\nENTRYPOINT ["/bin/app"]\n')).image.config.Cmd).toBeNull();
    const both = await lower('FROM busybox\nCMD ["--help"]\nENTRYPOINT ["/bin/app"]\n');
    expect(both.image.config.Cmd).toEqual(["--help"]);
    expect(both.image.config.Entrypoint).toEqual(["/bin/app"]);
  });

  it("shell forms use the default shell, or the last SHELL", async () => {
    const build = await lower(`FROM busybox
CMD echo one
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN echo two
ENTRYPOINT exec app
`);
    expect(asExec(build.rootVertex().op).args).toEqual(["/bin/bash", "-o", "pipefail", "-c", "echo two"]);
    expect(build.image.config.Entrypoint).toEqual(["/bin/bash", "-o", "pipefail", "-c", "exec app"]);
    expect(build.image.config.Shell).toEqual(["/bin/bash", "-o", "pipefail", "-c"]);
    expect(build.image.history?.find((h) => h.created_by?.startsWith("CMD"))?.created_by).toBe(
      'CMD ["/bin/sh" "-c" "echo one"]',
    );
  });

  it("WORKDIR is relative to the previous one and is created, owned by the USER", async () => {
    const build = await lower("FROM busybox\nUSER app\nWORKDIR /srv\nWORKDIR data\nRUN pwd\n");
    expect(build.image.config.WorkingDir).toBe("/srv/data");
    const run = asExec(build.rootVertex().op);
    expect(run.cwd).toBe("/srv/data");
    expect(run.user).toBe("app");
    const mkdir = asFile(build.graph.vertices[build.rootVertex().inputs[0]!]!.op).actions[0];
    expect(mkdir).toEqual({
      action: "mkdir",
      path: "/srv/data",
      mode: 0o755,
      makeParents: true,
      chown: { user: "app" },
    });
  });

  it("records LABEL, EXPOSE (ports and ranges), VOLUME, STOPSIGNAL, USER and --label", async () => {
    const build = await lower(
      `FROM busybox
LABEL org.example.a="one two" b=2
EXPOSE 80 53/udp 8000-8002/tcp
VOLUME ["/data", "/logs"]
VOLUME /cache
STOPSIGNAL SIGQUIT
USER 1000:1000
`,
      { labels: { extra: "yes" } },
    );
    const c = build.image.config;
    expect(c.Labels).toEqual({ "org.example.a": "one two", b: "2", extra: "yes" });
    expect(Object.keys(c.ExposedPorts ?? {}).sort()).toEqual([
      "53/udp",
      "80/tcp",
      "8000/tcp",
      "8001/tcp",
      "8002/tcp",
    ]);
    expect(Object.keys(c.Volumes ?? {})).toEqual(["/data", "/logs", "/cache"]);
    // BuildKit's history line: the words sorted as written, each port once it is parsed.
    expect(build.image.history?.find((h) => h.created_by?.includes("EXPOSE"))?.created_by).toBe(
      "EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp 8002/tcp]",
    );
    expect(c.StopSignal).toBe("SIGQUIT");
    expect(c.User).toBe("1000:1000");
  });

  it("rejects a bad port and a bad signal at their lines", async () => {
    const port = await lower("FROM busybox\nEXPOSE 80/foo\n").catch((e: unknown) => e);
    expect(port).toBeInstanceOf(DockerfileError);
    expect((port as DockerfileError).line).toBe(2);
    const signal = await lower("FROM busybox\n\nSTOPSIGNAL SIGNOPE\n").catch((e: unknown) => e);
    expect((signal as DockerfileError).line).toBe(3);
    expect((signal as DockerfileError).reason).toContain("invalid signal: SIGNOPE");
  });

  it("records HEALTHCHECK with its durations in nanoseconds, and NONE", async () => {
    const build = await lower(
      "FROM busybox\nHEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD wget -q localhost\n",
    );
    expect(build.image.config.Healthcheck).toEqual({
      Test: ["CMD-SHELL", "wget -q localhost"],
      Interval: 30e9,
      Timeout: 90e9,
      Retries: 3,
    });
    expect((await lower("FROM busybox\nHEALTHCHECK NONE\n")).image.config.Healthcheck).toEqual({
      Test: ["NONE"],
    });
  });

  it("ONBUILD is stored, and runs at the start of a stage built FROM it", async () => {
    const parent = await lower("FROM busybox\nONBUILD RUN echo triggered\nONBUILD ENV FROM_TRIGGER=1\n");
    expect(parent.image.config.OnBuild).toEqual(["RUN echo triggered", "ENV FROM_TRIGGER=1"]);

    const child = await lower("FROM app\nRUN echo child\n", {
      images: { app: { Env: ["PATH=/bin"], OnBuild: ["RUN echo triggered", "ENV FROM_TRIGGER=1"] } },
    });
    const runs = child.ops("exec").map((op) => op.args.at(-1));
    expect(runs).toEqual(["echo triggered", "echo child"]);
    expect(child.image.config.Env).toContain("FROM_TRIGGER=1");
    expect(child.image.config.OnBuild).toBeNull();
  });

  it("an ONBUILD COPY --from or RUN --mount=from names a stage of the Dockerfile being built", async () => {
    const inherited = await lower(
      `FROM busybox AS src
RUN echo 12 > /file
FROM app AS mid
FROM scratch
COPY --from=mid /out /
`,
      {
        images: {
          busybox: {},
          app: { OnBuild: ["COPY --from=src /file /out/", "RUN --mount=from=src,target=/in cat /in/file"] },
        },
      },
    );
    expect(inherited.asked).not.toContain("docker.io/library/src:latest");
    const srcRun = inherited.ops("exec").find((op) => op.args.at(-1) === "echo 12 > /file");
    expect(srcRun).toBeDefined();
    const mount = inherited.ops("exec").find((op) => op.args.at(-1) === "cat /in/file")!.mounts;
    expect(mount.some((m) => m.target === "/in")).toBe(true);
    expect(inherited.stages.map((s) => s.name)).toContain("src");

    const fromStage = await lower(`FROM busybox AS src
RUN echo 12 > /file
FROM busybox AS base
ONBUILD COPY --from=src /file /out/
FROM base AS mid
RUN cat /out/file
`);
    expect(fromStage.asked).not.toContain("docker.io/library/src:latest");
    expect(fromStage.ops("exec").map((op) => op.args.at(-1))).toEqual(["echo 12 > /file", "cat /out/file"]);
  });

  it("an ONBUILD trigger that fails to parse names the FROM line", async () => {
    const err = await lower("FROM busybox\nFROM app\n", {
      images: { busybox: {}, app: { OnBuild: ["FROBNICATE x"] } },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).line).toBe(2);
    expect((err as DockerfileError).reason).toContain("ONBUILD trigger");
  });

  it("MAINTAINER sets the author", async () => {
    const build = await lower("FROM busybox\nMAINTAINER Jane <jane@example.com>\n");
    expect(build.image.author).toBe("Jane <jane@example.com>");
  });
});
