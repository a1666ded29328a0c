/**
 * Attestation files in a filesystem output (`provenance.json` at the output's root) are written
 * beside files an image chose: an image whose own `/provenance.json` is a symlink out of the
 * output, or a directory, must not make tbuild write through it or fail half-way. The build's
 * statement takes the name (with a warning), and a secret given to the build appears in nothing
 * it wrote, even in `mode=max`.
 */
import { execFileSync } from "node:child_process";
import { lstatSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

describe.each(MODES)("attestation files in a filesystem output (%s)", (mode) => {
  let store = "";
  beforeAll(() => {
    store = world.store(mode);
  });

  it("an image's /provenance.json symlink to the canary's secret is replaced, never followed", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile: `FROM busybox\nRUN ln -s ${path.join(canary.dir, "secret")} /provenance.json && mkdir /d && ln -s ${canary.dir} /d/up\n`,
    });
    const out = path.join(world.dir("out", mode), "local");
    const built = world.tbuild(mode, store, ["build", "--provenance", "-o", `type=local,dest=${out}`, ctx]);
    expect(built.status, built.stderr).toBe(0);
    expect(built.stderr).toContain(
      "the image's /provenance.json is replaced by the build's attestation of that name",
    );
    expect(lstatSync(path.join(out, "provenance.json")).isFile()).toBe(true);
    const written = readFileSync(path.join(out, "provenance.json"), "utf8");
    expect(JSON.parse(written).predicateType).toBe("https://slsa.dev/provenance/v1");
    canary.expectUntouched(built.stdout, built.stderr, written);
    world.expectStoreUsable(mode, store);
  });

  it("an image's /provenance.json directory in a type=tar output: one provenance.json entry, the statement", () => {
    const canary = world.canary(mode);
    const ctx = world.context({ Dockerfile: "FROM busybox\nRUN mkdir -p /provenance.json/inner\n" });
    const dir = world.dir("tar", mode);
    const tar = path.join(dir, "fs.tar");
    const built = world.tbuild(mode, store, ["build", "--provenance", "-o", `type=tar,dest=${tar}`, ctx]);
    expect(built.status, built.stderr).toBe(0);
    const names = execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).split("\n");
    expect(names.filter((n) => n.startsWith("provenance.json"))).toEqual(["provenance.json"]);
    const statement = execFileSync("tar", ["-xOf", tar, "provenance.json"], { encoding: "utf8" });
    expect(JSON.parse(statement)._type).toBe("https://in-toto.io/Statement/v1");
    expect(readdirSync(dir)).toEqual(["fs.tar"]);
    canary.expectUntouched(built.stdout, built.stderr, statement);
    world.expectStoreUsable(mode, store);
  });

  it("a secret's value is in no attestation, even with mode=max, and none of its file's bytes", () => {
    const canary = world.canary(mode);
    const ctx = world.context({
      Dockerfile:
        "FROM busybox\nARG SHOWN\nRUN --mount=type=secret,id=key,required=true wc -c /run/secrets/key > /size\n",
    });
    const out = path.join(world.dir("max", mode), "local");
    const built = world.tbuild(mode, store, [
      "build",
      "--provenance=mode=max",
      "--build-arg",
      "SHOWN=yes",
      "--secret",
      `id=key,src=${path.join(canary.dir, "secret")}`,
      "-o",
      `type=local,dest=${out}`,
      ctx,
    ]);
    expect(built.status, built.stderr).toBe(0);
    const written = readFileSync(path.join(out, "provenance.json"), "utf8");
    const request = JSON.parse(written).predicate.buildDefinition.externalParameters.request;
    expect(request.secrets).toEqual([{ id: "key" }]);
    expect(request.args["build-arg:SHOWN"]).toBe("yes");
    canary.expectUntouched(built.stdout, built.stderr, written);
    world.expectStoreUsable(mode, store);
  });
});
