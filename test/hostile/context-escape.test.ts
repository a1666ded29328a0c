/**
 * COPY and ADD sources an attacker writes to reach outside the context: `..`, absolute paths,
 * symlinks to host paths, `.dockerignore` tricks, local tars whose entries climb out or go through
 * a planted link, destinations through a link the image planted. Whatever they name is looked up
 * inside the context (or the stage), as BuildKit does; the host is never read or written, and what
 * an image holds is judged from an exported tar of it.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { hostileWorld, MODES, type Mode } from "./harness.js";

const world = hostileWorld();

/** Builds `ctx` and exports the image as a tar; gives the tar's bytes and tbuild's output. */
function buildToTar(mode: Mode, ctx: string, extra: string[] = []) {
  const store = world.store(mode);
  const out = path.join(world.dir("out", mode), "image.tar");
  const built = world.tbuild(mode, store, [
    "build",
    "--progress=plain",
    ...extra,
    "-o",
    `type=tar,dest=${out}`,
    ctx,
  ]);
  const tar = built.status === 0 ? readFileSync(out) : Buffer.alloc(0);
  return { built, tar, store, out };
}

/** The names in an exported filesystem tar. */
function tarNames(file: string): string[] {
  return execFileSync("tar", ["-tf", file], { encoding: "utf8" }).split("\n").filter(Boolean);
}

describe.each(MODES)("COPY and ADD sources reaching outside the context (%s)", (mode) => {
  it("`..` in a COPY source is clipped at the context's root", () => {
    const canary = world.canary(mode);
    const climb = "../".repeat(12);
    const ctx = world.context({
      Dockerfile: `FROM scratch\nCOPY ${climb}${canary.dir.slice(1)}/secret /stolen\nCOPY ${climb}f /f\n`,
      f: "in the context\n",
    });
    const { built, tar, store } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    // The first COPY names a path the context lacks: an error naming it, not the host's file.
    expect(built.status).toBe(1);
    expect(built.stderr).toMatch(/secret.*not found|not found.*secret/);
    world.expectStoreUsable(mode, store);
  });

  it("`..` that stays inside the context means the context's own file", () => {
    const ctx = world.context({ Dockerfile: "FROM scratch\nCOPY ../../../f /f\n", f: "in the context\n" });
    const { built, out } = buildToTar(mode, ctx);
    expect(built.status, built.stderr).toBe(0);
    expect(execFileSync("tar", ["-xOf", out, "f"], { encoding: "utf8" })).toBe("in the context\n");
  });

  it("an absolute COPY source is a path inside the context", () => {
    const canary = world.canary(mode);
    const ctx = world.context({ Dockerfile: `FROM scratch\nCOPY ${canary.dir}/secret /stolen\n` });
    const { built, tar, store } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    expect(built.status).toBe(1);
    world.expectStoreUsable(mode, store);
  });

  it("a context symlink to a host file or directory copies the link, or what it means inside the context", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile:
        "FROM scratch\nCOPY file-link /a\nCOPY dir-link /b\nCOPY dir-link/ /c/\nCOPY dir-link/secret /d\n",
      "file-link": { link: `${canary.dir}/secret` },
      "dir-link": { link: canary.dir },
    });
    const { built, tar, store } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    world.expectStoreUsable(mode, store);
  });

  it("a context link to a host file with extended attributes: the link's own are read, never the host file's", () => {
    const canary = world.canary(mode);
    const secret = `${canary.dir}/secret`;
    // Its name is secret too: a warning about dropped attributes must not read or name it.
    const attribute = `user.${canary.secret}`;
    execFileSync("setfattr", ["-n", attribute, "-v", "host", secret]);
    const ctx = world.context({
      // The whole context: the link is sent, and copied, as a link.
      Dockerfile: "FROM scratch\nCOPY . /c/\n",
      "file-link": { link: secret },
    });
    const { built, tar, store } = buildToTar(mode, ctx);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).not.toContain("extended attributes");
    expect(execFileSync("getfattr", ["--only-values", "-n", attribute, secret], { encoding: "utf8" })).toBe(
      "host",
    );
    execFileSync("setfattr", ["-x", attribute, secret]);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    world.expectStoreUsable(mode, store);
  });

  it("a glob over context links never follows them out", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile: "FROM scratch\nCOPY l* /g/\nCOPY */secret /h/\n",
      l1: { link: canary.dir },
      l2: { link: `${canary.dir}/secret` },
      sub: { link: canary.dir },
    });
    const { built, tar } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
  });

  it(".dockerignore patterns that climb out select nothing outside", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile: "FROM scratch\nCOPY . /all/\n",
      ".dockerignore": `*\n!../**\n!${canary.dir}/**\n!/../../../**\n!f\n`,
      f: "kept\n",
    });
    const { built, tar, out } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    expect(built.status, built.stderr).toBe(0);
    // `/../../../**` cleans to `**` (as Go's filepath.Clean makes it): every file of the context, none outside.
    expect(
      tarNames(out)
        .filter((n) => !n.endsWith("/"))
        .sort(),
    ).toEqual(["all/.dockerignore", "all/Dockerfile", "all/f"]);
  });

  it("a named context's links stay inside it", () => {
    const canary = world.canary(mode);
    const named = world.context({ up: { link: "../../../../../../../../.." }, root: { link: "/" } });
    const ctx = world.context({
      Dockerfile: `FROM scratch\nCOPY --from=named up${canary.dir}/secret /a\nCOPY --from=named root${canary.dir}/ /b/\n`,
    });
    const { built, tar } = buildToTar(mode, ctx, ["--build-context", `named=${named}`]);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    expect(built.status).toBe(1);
  });
});

describe.each(MODES)("COPY and ADD destinations and local tars (%s)", (mode) => {
  it("COPY into a directory the image made a link to / writes inside the image", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile: `FROM busybox\nRUN ln -s / /up && ln -s ${canary.dir} /canary-link\nCOPY f /up${canary.dir}/PWNED\nCOPY f /canary-link/\nCOPY f /canary-link/sub/file\nRUN cat /canary-link/f\n`,
      f: "from the context\n",
    });
    const { built, tar, store } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    expect(built.status, built.stderr).toBe(0);
    world.expectStoreUsable(mode, store);
  });

  it("WORKDIR and COPY --from a stage through links stay inside that stage", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile: [
        "FROM busybox AS s",
        "RUN ln -s / /up",
        "FROM busybox",
        `COPY --from=s /up${canary.dir}/secret /stolen`,
        "",
      ].join("\n"),
    });
    const { built, tar, store } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    expect(built.status).toBe(1);
    world.expectStoreUsable(mode, store);
  });

  it("ADD of a local tar whose entries climb out, are absolute or go through a link stays inside", () => {
    const canary = world.canary(mode);
    const ctx = world.context({ Dockerfile: "FROM busybox\nADD evil.tar /x/\nRUN ls -laR /x\n" });
    // A tar an attacker wrote by hand: GNU tar's --absolute-names and --transform make the names.
    const staging = world.dir("tar-staging");
    writeFileSync(path.join(staging, "payload"), "PAYLOAD\n");
    execFileSync("ln", ["-s", canary.dir, path.join(staging, "link")]);
    const tarFile = path.join(ctx, "evil.tar");
    execFileSync("tar", [
      "-cf",
      tarFile,
      "-C",
      staging,
      "--absolute-names",
      "--transform",
      `s|^payload$|../../../../../../..${canary.dir}/PWNED|`,
      "payload",
    ]);
    execFileSync("tar", [
      "-rf",
      tarFile,
      "-C",
      staging,
      "--absolute-names",
      "--transform",
      `s|^payload$|${canary.dir}/PWNED2|`,
      "payload",
    ]);
    execFileSync("tar", ["-rf", tarFile, "-C", staging, "link"]);
    execFileSync("tar", [
      "-rf",
      tarFile,
      "-C",
      staging,
      "--transform",
      "s|^payload$|link/PWNED3|",
      "payload",
    ]);
    execFileSync("chmod", ["a+r", tarFile]);
    const { built, tar, store } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    world.expectStoreUsable(mode, store);
  });

  it("ADD of a local tar with a hard link to a host path links nothing of the host", () => {
    const canary = world.canary(mode);
    const ctx = world.context({ Dockerfile: "FROM busybox\nADD evil.tar /x/\nRUN cat /x/h || true\n" });
    const staging = world.dir("tar-staging");
    writeFileSync(path.join(staging, "a"), "A\n");
    execFileSync("ln", [path.join(staging, "a"), path.join(staging, "h")]);
    const tarFile = path.join(ctx, "evil.tar");
    // The hard link's target is rewritten to the canary's secret, absolute and climbing.
    execFileSync("tar", [
      "-cf",
      tarFile,
      "-C",
      staging,
      "--absolute-names",
      "--transform",
      `flags=h;s|^a$|../../../../../../..${canary.dir}/secret|`,
      "a",
      "h",
    ]);
    execFileSync("chmod", ["a+r", tarFile]);
    const { built, tar, store } = buildToTar(mode, ctx);
    canary.expectUntouched(built.stdout, built.stderr, tar);
    world.expectStoreUsable(mode, store);
  });
});
