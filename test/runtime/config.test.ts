import { describe, expect, it } from "vitest";
import { applyConfigChanges } from "../../frontend/lower/config-changes.js";
import {
  containerConfig,
  NoCommandError,
  parseEnvFile,
  parseEnvFlags,
  processArgs,
} from "../../runtime/config.js";
import { parseVolumeFlag } from "../../runtime/mounts.js";

const image = {
  Entrypoint: ["/entry"],
  Cmd: ["--serve"],
  Env: ["PATH=/usr/bin:/bin", "MODE=image"],
  WorkingDir: "/app",
  User: "app",
};

describe("docker run's rules for the container config", () => {
  it("keeps the image's entrypoint and command when the run gives none", () => {
    const config = containerConfig(image, { args: [], env: [] });
    expect(processArgs(config, "img")).toEqual(["/entry", "--serve"]);
    expect(config).toMatchObject({ WorkingDir: "/app", User: "app" });
  });

  it("replaces Cmd with the run's arguments, after the entrypoint", () => {
    expect(processArgs(containerConfig(image, { args: ["--check"], env: [] }), "img")).toEqual([
      "/entry",
      "--check",
    ]);
  });

  it("drops the image's Cmd with --entrypoint, and clears the entrypoint with an empty one", () => {
    expect(processArgs(containerConfig(image, { entrypoint: "/other", args: [], env: [] }), "img")).toEqual([
      "/other",
    ]);
    expect(processArgs(containerConfig(image, { entrypoint: "", args: ["sh"], env: [] }), "img")).toEqual([
      "sh",
    ]);
    expect(() => processArgs(containerConfig(image, { entrypoint: "", args: [], env: [] }), "img")).toThrow(
      NoCommandError,
    );
  });

  it("applies -e over the image's Env by name, in place, and appends new names", () => {
    const config = containerConfig(image, { args: [], env: ["MODE=run", "EXTRA=1"] });
    expect(config.Env).toEqual(["PATH=/usr/bin:/bin", "MODE=run", "EXTRA=1"]);
  });

  it("takes -w and -u over the image's WorkingDir and User; -w must be absolute", () => {
    expect(
      containerConfig(image, { args: [], env: [], workingDir: "/srv/", user: "1000:1000" }),
    ).toMatchObject({
      WorkingDir: "/srv",
      User: "1000:1000",
    });
    expect(() => containerConfig(image, { args: [], env: [], workingDir: "srv" })).toThrow(/absolute/);
  });

  it("never changes the image's config it starts from", () => {
    const copy = structuredClone(image);
    containerConfig(image, { entrypoint: "x", args: ["y"], env: ["MODE=z"], anonymousVolumes: ["/v"] });
    expect(image).toEqual(copy);
  });
});

describe("environment flags", () => {
  it("takes K alone from the host, and leaves it out when the host has none", () => {
    expect(parseEnvFlags(["A=1", "HOSTVAR", "MISSING", "B="], { HOSTVAR: "h" })).toEqual([
      "A=1",
      "HOSTVAR=h",
      "B=",
    ]);
    expect(() => parseEnvFlags(["=x"], {})).toThrow(/empty/);
  });

  it("reads an env file as docker does: comments, blank lines, K alone from the host", () => {
    const text = "# a comment\n\n  A=1 2\nHOSTVAR\nMISSING\nB=x=y\r\n";
    expect(parseEnvFile(text, "vars", { HOSTVAR: "h" })).toEqual(["A=1 2", "HOSTVAR=h", "B=x=y"]);
    expect(() => parseEnvFile("BAD NAME=1\n", "vars", {})).toThrow(/vars:1: invalid variable name/);
  });
});

describe("-v", () => {
  const name = () => "anon";

  it("reads host paths, volume names and anonymous volumes", () => {
    expect(parseVolumeFlag("/srv/data:/data", "/cwd", name)).toEqual({
      kind: "bind",
      source: "/srv/data",
      destination: "/data",
      readonly: false,
    });
    expect(parseVolumeFlag("./here:/data:ro", "/cwd", name)).toMatchObject({
      kind: "bind",
      source: "/cwd/here",
      readonly: true,
    });
    expect(parseVolumeFlag("cache:/root/.cache", "/cwd", name)).toMatchObject({
      kind: "volume",
      name: "cache",
      anonymous: false,
    });
    expect(parseVolumeFlag("/scratch", "/cwd", name)).toMatchObject({
      kind: "volume",
      name: "anon",
      destination: "/scratch",
      anonymous: true,
    });
    expect(parseVolumeFlag("/scratch:ro", "/cwd", name)).toMatchObject({ anonymous: true, readonly: true });
  });

  it("refuses what docker refuses, and says which options are not supported yet", () => {
    expect(() => parseVolumeFlag("/a:relative", "/cwd", name)).toThrow(/must be absolute/);
    expect(() => parseVolumeFlag("/a:/", "/cwd", name)).toThrow(/root/);
    expect(() => parseVolumeFlag("bad name:/a", "/cwd", name)).toThrow(/neither a host path/);
    expect(() => parseVolumeFlag("/a:/b:shared", "/cwd", name)).toThrow(/not supported yet/);
    expect(() => parseVolumeFlag("a:b:c:d", "/cwd", name)).toThrow(/expected/);
  });
});

describe("commit --change over the container's config", () => {
  it("replaces CMD, replaces ENV entries in place, adds LABELs, and clears CMD with a lone ENTRYPOINT", () => {
    const base = { Cmd: ["sh"], Env: ["A=1", "B=2"], Labels: { a: "1" } };
    expect(applyConfigChanges(base, ['CMD ["echo"]', "ENV B=3 C=4", "LABEL b=2"])).toEqual({
      Cmd: ["echo"],
      ArgsEscaped: true,
      Env: ["A=1", "B=3", "C=4"],
      Labels: { a: "1", b: "2" },
    });
    expect(applyConfigChanges(base, ['ENTRYPOINT ["/e"]'])).toMatchObject({
      Entrypoint: ["/e"],
      Cmd: null,
    });
  });

  it("expands values from the container's own Env", () => {
    expect(applyConfigChanges({ Env: ["HOME=/root"] }, ["WORKDIR $HOME/app"]).WorkingDir).toBe("/root/app");
  });
});
