/**
 * RUN mounts whose source is a symlink an attacker planted: in an earlier stage, in the context,
 * in a cache's seed. Each source resolves inside its own root, as the container would see it; the
 * host's files stay out of reach, as root and rootless.
 */
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("RUN mount sources that are symlinks (%s)", (mode) => {
  it("a bind mount from a stage of a link to / mounts that stage's root, not the host's", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    const ctx = world.context({
      Dockerfile: [
        "FROM busybox AS s",
        "RUN ln -s / /hostroot",
        "FROM busybox",
        `RUN --mount=type=bind,from=s,source=/hostroot,target=/h,rw sh -c 'cat /h${canary.dir}/secret; touch /h${canary.dir}/PWNED /h${canary.dir}/sub/PWNED; test -L /h/hostroot && echo SAW-STAGE-ROOT'`,
        "",
      ].join("\n"),
    });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", "--no-cache", ctx]);
    // The stage's own root (which holds the link itself) is what is mounted, and it has no canary.
    canary.expectUntouched(built.stdout, built.stderr);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain("SAW-STAGE-ROOT");
    world.expectStoreUsable(mode, store);
  });

  it("a bind mount from a stage of a link into / resolves to that stage's directory", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    const ctx = world.context({
      Dockerfile: [
        "FROM busybox AS s",
        `RUN mkdir -p /inside${canary.dir} && echo stage-file > /inside${canary.dir}/secret && ln -s ${canary.dir} /link`,
        "FROM busybox",
        // /link → the canary's path, which inside the stage is missing; /inside… is what a relative link sees.
        `RUN --mount=type=bind,from=s,source=/inside${canary.dir},target=/m cat /m/secret > /got`,
        `RUN --mount=type=bind,from=s,source=/link,target=/n,rw sh -c 'ls /n; echo x > /n/PWNED' || true`,
        "",
      ].join("\n"),
    });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", ctx]);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("a bind mount of a context symlink to a host directory does not write through it", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    const ctx = world.context({
      Dockerfile: [
        "FROM busybox",
        `RUN --mount=type=bind,source=d,target=/m,rw sh -c 'cat /m/secret; echo x > /m/PWNED; echo x > /m/sub/file' || true`,
        "",
      ].join("\n"),
      d: { link: canary.dir },
    });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", ctx]);
    canary.expectUntouched(built.stdout, built.stderr);
    // Inside the context, the link's absolute target does not exist.
    expect(built.stderr).toContain("source /d does not exist");
    world.expectStoreUsable(mode, store);
  });

  it("a bind mount of a context symlink that stays inside the context mounts its target", () => {
    const store = world.store(mode);
    const ctx = world.context({
      Dockerfile:
        'FROM busybox\nRUN --mount=type=bind,source=d,target=/m cat /m/f > /got\nRUN --mount=type=bind,source=abs,target=/m cat /m/f >> /got\nCMD ["cat", "/got"]\n',
      "real/f": "inside\n",
      d: { link: "real" },
      // An absolute target means the context's own root, as the container would read it.
      abs: { link: "/real" },
    });
    const built = world.tbuild(mode, store, ["build", "-q", "-t", "linked", ctx]);
    expect(built.status, built.stderr).toBe(0);
    const ran = world.tbuild(mode, store, ["run", "--rm", "linked"]);
    expect(ran.stdout).toBe("inside\ninside\n");
  });

  it("a bind mount from a named context follows its symlinks inside that context", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    const named = world.context({ up: { link: "../../../../../../../.." }, root: { link: "/" } });
    const ctx = world.context({
      Dockerfile: [
        "FROM busybox",
        `RUN --mount=type=bind,from=named,source=up${canary.dir},target=/m,rw sh -c 'cat /m/secret; echo x > /m/PWNED' || true`,
        `RUN --mount=type=bind,from=named,source=root,target=/m,rw sh -c 'cat /m${canary.dir}/secret; echo x > /m${canary.dir}/PWNED; ls /m' || true`,
        "",
      ].join("\n"),
    });
    const built = world.tbuild(mode, store, [
      "build",
      "--progress=plain",
      "--build-context",
      `named=${named}`,
      ctx,
    ]);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });

  it("a missing bind-mount source names the mount and the path, and no store path", () => {
    const store = world.store(mode);
    const ctx = world.context({
      Dockerfile:
        "FROM busybox AS s\nRUN true\nFROM busybox\nRUN --mount=type=bind,from=s,source=/nope,target=/m true\n",
    });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", ctx]);
    expect(built.status).toBe(1);
    expect(built.stderr).toContain("ERROR: RUN --mount=type=bind,target=/m: source /nope does not exist");
    expect(built.stderr).not.toContain(store);
    expect(built.stderr).not.toMatch(/\n\s+at /);
  });

  it("a cache mount seeded from a stage's link to / copies the stage's files, not the host's", () => {
    const canary = world.canary(mode);
    const store = world.store(mode);
    const ctx = world.context({
      Dockerfile: [
        "FROM busybox AS s",
        "RUN ln -s / /hostroot",
        "FROM busybox",
        `RUN --mount=type=cache,id=c1,from=s,source=/hostroot${canary.dir},target=/c sh -c 'cat /c/secret; ls -la /c' || true`,
        "",
      ].join("\n"),
    });
    const built = world.tbuild(mode, store, ["build", "--progress=plain", ctx]);
    canary.expectUntouched(built.stdout, built.stderr);
    world.expectStoreUsable(mode, store);
  });
});
