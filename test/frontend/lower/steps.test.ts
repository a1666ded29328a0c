import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { asExec, asFile, lower } from "./lower.js";

describe("RUN", () => {
  it("turns every --mount type into a mount of the step", async () => {
    const build = await lower(`FROM busybox AS deps
RUN touch /lock
FROM busybox
RUN --mount=type=cache,target=/root/.cache,sharing=locked,id=pip \\
    --mount=type=bind,from=deps,source=/lock,target=/mnt/lock \\
    --mount=type=tmpfs,target=/scratch \\
    --mount=type=secret,id=token \\
    --mount=type=ssh \\
    --network=none \\
    make
`);
    const run = asExec(build.rootVertex().op);
    expect(run.network).toBe("none");
    const byTarget = Object.fromEntries(run.mounts.map((m) => [m.target, m]));
    expect(byTarget["/root/.cache"]).toMatchObject({
      type: "cache",
      cache: { id: "pip", sharing: "locked" },
    });
    expect(byTarget["/mnt/lock"]).toMatchObject({ type: "bind", selector: "/lock", readonly: true });
    const deps = build.graph.vertices[build.rootVertex().inputs[byTarget["/mnt/lock"]!.input!]!]!;
    expect(asExec(deps.op).args.at(-1)).toBe("touch /lock");
    expect(byTarget["/scratch"]).toMatchObject({ type: "tmpfs" });
    expect(byTarget["/run/secrets/token"]).toMatchObject({
      type: "secret",
      secret: { id: "token", required: false },
    });
    expect(run.mounts.find((m) => m.type === "ssh")).toMatchObject({ ssh: { id: "default" } });
  });

  it("expands ARGs inside --mount values", async () => {
    const build = await lower(
      "FROM busybox\nARG CACHE=/var/cache/apt\nRUN --mount=type=cache,target=$CACHE apt-get update\n",
    );
    expect(asExec(build.rootVertex().op).mounts.some((m) => m.target === "/var/cache/apt")).toBe(true);
  });

  it("a bad --mount value after expansion is an error at that --mount", async () => {
    const err = await lower(
      "FROM busybox\nARG MODE=bogus\nRUN --network=none --mount=type=cache,target=/c,sharing=$MODE make\n",
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).line).toBe(3);
    expect((err as DockerfileError).column).toBe(20);
    expect((err as DockerfileError).reason).toContain("bogus");
  });

  it("runs a heredoc as the shell's script, or as a file when it has a shebang", async () => {
    const plain = await lower("FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\n");
    expect(asExec(plain.rootVertex().op).args).toEqual(["/bin/sh", "-c", "echo one\necho two\n"]);

    const script = await lower("FROM busybox\nRUN <<EOF\n#!/usr/bin/env python3\nprint('hi')\nEOF\n");
    const run = asExec(script.rootVertex().op);
    expect(run.args).toEqual(["/bin/sh", "-c", "/dev/pipes/EOF"]);
    const pipe = run.mounts.find((m) => m.target === "/dev/pipes/")!;
    const file = asFile(script.graph.vertices[script.rootVertex().inputs[pipe.input!]!]!.op);
    expect(file.actions[0]).toMatchObject({
      action: "mkfile",
      path: "/EOF",
      mode: 0o755,
      data: "#!/usr/bin/env python3\nprint('hi')\n",
    });
  });

  it("hands a heredoc with a command around it to the shell whole", async () => {
    const build = await lower("FROM busybox\nRUN python3 <<EOF\nprint(1)\nEOF\n");
    expect(asExec(build.rootVertex().op).args).toEqual(["/bin/sh", "-c", "python3 <<EOF\nprint(1)\nEOF"]);
  });

  it("keeps exec form as written, without a shell", async () => {
    const build = await lower('FROM busybox\nRUN ["echo", "$HOME"]\n');
    expect(asExec(build.rootVertex().op).args).toEqual(["echo", "$HOME"]);
  });
});

describe("COPY and ADD", () => {
  it("reads only the paths the build copies from the context, minus .dockerignore", async () => {
    const build = await lower(
      "FROM busybox\nCOPY package.json src/ /app/\nCOPY --from=busybox /bin/sh /sh\n",
      {
        excludePatterns: ["**/*.log", "!keep.log"],
      },
    );
    const [context] = build.ops("local");
    expect(context).toEqual({
      kind: "local",
      name: "context",
      excludePatterns: ["**/*.log", "!keep.log"],
      followPaths: ["/package.json", "/src"],
    });
  });

  it("a RUN bind mount of the whole context reads all of it, from a source of its own", async () => {
    const build = await lower("FROM busybox\nCOPY a /a\nRUN --mount=type=bind,target=/src make\n");
    // The COPY's context holds what the COPY reads; the mount's, all of the context.
    expect(build.ops("local").map((op) => op.followPaths)).toEqual(expect.arrayContaining([["/a"], []]));
  });

  it("a RUN bind mount of a context path mounts a source of only that path", async () => {
    const build = await lower(
      "FROM busybox\nCOPY . /app\nRUN --mount=type=bind,source=deps,target=/deps make\n",
    );
    expect(build.ops("local").map((op) => op.followPaths)).toEqual(expect.arrayContaining([[], ["/deps"]]));
  });

  it("makes destinations absolute against WORKDIR and keeps chown, chmod and exclude", async () => {
    const build = await lower(
      "FROM busybox\nWORKDIR /app\nARG OWNER=app\nCOPY --chown=${OWNER}:staff --chmod=640 --exclude=*.md docs/ ./docs/\n",
    );
    const copy = asFile(build.rootVertex().op).actions[0]!;
    expect(copy).toMatchObject({
      action: "copy",
      src: "/docs",
      dest: "/app/docs/",
      chown: { user: "app", group: "staff" },
      chmod: "640",
      excludePatterns: ["*.md"],
      attemptUnpack: false,
    });
    expect(build.image.history?.at(-1)?.created_by).toBe(
      "COPY --chown=app:staff --chmod=640 docs/ ./docs/ # buildkit",
    );
  });

  it("takes --chmod=0 as mode 0000, as BuildKit does (octal 0 to 7777)", async () => {
    const build = await lower("FROM busybox\nCOPY --chmod=0 foo /foobis\n");
    expect(asFile(build.rootVertex().op).actions[0]).toMatchObject({ action: "copy", chmod: "0" });
  });

  it("extracts a downloaded archive only with ADD --unpack=true", async () => {
    for (const [flag, unpack] of [
      ["", false],
      ["--unpack=true ", true],
    ] as const) {
      const build = await lower(`FROM busybox\nADD ${flag}https://example.com/t.tar.gz /dest/\n`);
      expect(asFile(build.rootVertex().op).actions[0]).toMatchObject({
        action: "copy",
        attemptUnpack: unpack,
      });
    }
  });

  it("needs a directory destination for several sources", async () => {
    const err = await lower("FROM busybox\nCOPY a b /dest\n").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).reason).toContain("the destination must be a directory and end with a /");
  });

  it("writes heredoc files, expanding variables only for unquoted delimiters", async () => {
    const build = await lower(`FROM busybox
ENV NAME=world
COPY <<EOF /hello.txt
hello $NAME
EOF
COPY <<'EOF' /raw.txt
hello $NAME
EOF
`);
    const data = build
      .ops("file")
      .flatMap((op) => op.actions.flatMap((a) => (a.action === "mkfile" ? [a.data] : [])));
    expect(data).toEqual(["hello world\n", "hello $NAME\n"]);
  });

  it("ADD downloads URLs, verified by --checksum; COPY refuses them", async () => {
    const sum = `sha256:${"a".repeat(64)}`;
    const build = await lower(
      `FROM busybox\nADD --checksum=${sum} https://example.invalid/dl/tool.tar.gz /opt/\n`,
    );
    expect(build.ops("http")).toEqual([
      { kind: "http", url: "https://example.invalid/dl/tool.tar.gz", filename: "tool.tar.gz", checksum: sum },
    ]);
    const copy = asFile(build.rootVertex().op).actions[0]!;
    expect(copy).toMatchObject({ src: "/tool.tar.gz", dest: "/opt/", attemptUnpack: false });

    const err = await lower("FROM busybox\nCOPY https://example.invalid/x /x\n").catch((e: unknown) => e);
    expect((err as DockerfileError).reason).toContain("source can't be a URL for COPY");
  });

  it("ADD unpacks local archives; --parents keeps the directories below the pivot", async () => {
    const add = await lower("FROM busybox\nADD rootfs.tar.gz /\n");
    expect(asFile(add.rootVertex().op).actions[0]).toMatchObject({ attemptUnpack: true });
    const parents = await lower("FROM busybox\nCOPY --parents ./src/./pkg/*.go /app/\n");
    expect(asFile(parents.rootVertex().op).actions[0]).toMatchObject({
      src: "/src",
      includePatterns: ["pkg/*.go"],
    });
    expect(asFile(parents.rootVertex().op).actions[0]).not.toHaveProperty("requiredPaths");
  });

  it("a RUN's step name has its variables expanded, quotes and unset ones kept, a secret env masked", async () => {
    const build = await lower(
      'FROM busybox\nENV A=1 TOKEN=t\nRUN --mount=type=secret,id=s,env=TOKEN echo "$A" $UNSET \'$A\' "$TOKEN"\n',
    );
    const names = Object.values(build.graph.info).map((i) => i.name);
    expect(names).toContain(`[2/2] RUN --mount=type=secret,id=s,env=TOKEN echo "1" $UNSET '$A' "****"`);
  });

  it("--build-arg BUILDKIT_SANDBOX_HOSTNAME sets every RUN's hostname, as BuildKit's option", async () => {
    const build = await lower("FROM busybox\nRUN hostname\nRUN true\n", {
      buildArgs: { BUILDKIT_SANDBOX_HOSTNAME: "foo" },
    });
    expect(build.ops("exec").map((op) => op.hostname)).toEqual(["foo", "foo"]);
    expect(build.warnings).toEqual([]);
    expect((await lower("FROM busybox\nRUN hostname\n")).ops("exec")[0]).not.toHaveProperty("hostname");
  });

  it("COPY --parents of a path without wildcards requires it to exist, as BuildKit does", async () => {
    const build = await lower("FROM busybox\nCOPY --parents /test/a/./b/c /app/\n");
    expect(asFile(build.rootVertex().op).actions[0]).toMatchObject({
      src: "/test/a",
      includePatterns: ["b/c"],
      requiredPaths: ["/test/a/b/c"],
    });
  });
});
