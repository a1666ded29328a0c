/**
 * Bad words on the command line: each gets one clear error naming what is wrong, before any step
 * runs, with the exit code of its kind (2 for usage), never a stack trace and never a silent
 * no-op; and a huge line in an error is shown as an excerpt, not echoed whole.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { hostileWorld, MODES } from "./harness.js";

const world = hostileWorld();

const DIGEST = `sha256:${"0".repeat(64)}`;
/** A step that says when it ran: a refused build never shows it. */
const DOCKERFILE = "FROM busybox\nRUN --mount=type=secret,id=x echo step-ran\n";
const STACK = /\n\s+at /;

describe.each(MODES)("command-line input (%s)", (mode) => {
  let store = "";
  beforeAll(() => {
    store = world.store(mode);
  });

  const refused = (args: string[], env: Record<string, string> = {}) => {
    const result = world.tbuild(mode, store, args, { env });
    expect(result.stderr).not.toMatch(STACK);
    expect(result.stderr).not.toContain("step-ran");
    return result;
  };

  it("-t NAME:TAG@DIGEST is a usage error, and no image gets that name", () => {
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const result = refused(["build", "--progress=plain", "-t", `app:1@${DIGEST}`, ctx]);
    expect(result.status).toBe(2);
    expect(result.stderr).toBe(
      `ERROR: -t app:1@${DIGEST}: a digest is not a tag (refusing to name an image with a digest reference); give NAME[:TAG] without "@${DIGEST}"\n`,
    );
    expect(world.tbuild(mode, store, ["images"]).stdout).not.toMatch(/^app\s/m);
  });

  it("tbuild tag to NAME@DIGEST is a usage error, and no image gets that name", () => {
    const result = refused(["tag", "busybox", `copy:1@${DIGEST}`]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`tbuild tag copy:1@${DIGEST}: a digest is not a tag`);
    expect(world.tbuild(mode, store, ["images"]).stdout).not.toMatch(/^copy\s/m);
  });

  it("--secret src= a directory (the canary's) is an error naming the secret, and nothing is read", () => {
    const canary = world.canary(mode);
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const result = refused(["build", "--progress=plain", "--secret", `id=x,src=${canary.dir}`, ctx]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(
      `ERROR: --secret id=x: src=${canary.dir} is a directory: a secret is one file\n`,
    );
    canary.expectUntouched(result.stdout, result.stderr);
  });

  it("--secret src= a file that does not exist is an error naming the secret", () => {
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const missing = path.join(world.dir("secrets", mode), "missing.txt");
    const result = refused(["build", "--progress=plain", "--secret", `id=x,src=${missing}`, ctx]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(`ERROR: --secret id=x: src=${missing} does not exist\n`);
  });

  it("--secret env= an unset variable is an error naming the secret and the variable", () => {
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const result = refused(["build", "--progress=plain", "--secret", "id=x,env=NOT_SET_ANYWHERE", ctx]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /^ERROR: --secret id=x: the environment variable NOT_SET_ANYWHERE is not set: .*\n$/,
    );
    // Set, even to nothing, it is a secret (an empty one): the build runs.
    const empty = world.tbuild(mode, store, ["build", "-q", "--secret", "id=x,env=EMPTY_SECRET", ctx], {
      env: { EMPTY_SECRET: "" },
    });
    expect(empty.status, empty.stderr).toBe(0);
  });

  it.each([
    [
      ["--cache-to", "type=local,dest=DIR,bogus=1"],
      "--cache-to",
      "type=local takes no bogus= (it takes dest=, tag=, mode=",
    ],
    [
      ["--cache-to", "type=registry,ref=localhost:5000/c,bogus=1"],
      "--cache-to",
      "type=registry takes no bogus= (it takes ref=, mode=",
    ],
    [
      ["--cache-from", "type=local,src=DIR,bogus=1"],
      "--cache-from",
      "type=local takes no bogus= (it takes src=, tag=, digest=, mounts=)",
    ],
    [
      ["--cache-to", "type=inline,mounts=true"],
      "--cache-to",
      "inline cache rides in the image config and cannot carry cache mounts",
    ],
    [
      ["-o", "type=tar,dest=DIR/out.tar,mounts=true"],
      "--output",
      "type=tar takes no mounts= (it takes dest=)",
    ],
    [
      ["-o", "type=oci,dest=DIR/out.tar,bogus=1"],
      "--output",
      "type=oci takes no bogus= (it takes dest=, name=, tar=",
    ],
  ])("%j is a usage error listing the known attributes, before anything runs", (flags, flag, message) => {
    const ctx = world.context({ Dockerfile: DOCKERFILE });
    const dir = world.dir("attrs", mode);
    const args = flags.map((f) => f.replace("DIR", dir));
    const result = refused(["build", "--progress=plain", "--secret", "id=x,env=HOME", ...args, ctx]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(new RegExp(`^ERROR: ${flag} "[^"]+": `));
    expect(result.stderr).toContain(message);
    expect(result.stderr.split("\n").filter(Boolean)).toHaveLength(1);
  });

  it.each(["quiet", "plain", "rawjson"])(
    "a 10 MB Dockerfile line gives a small error naming file:line:column (--progress=%s)",
    (progress) => {
      const canary = world.canary(mode);
      const ctx = world.context({ Dockerfile: "FROM busybox\n" });
      writeFileSync(path.join(ctx, "Dockerfile"), `FROM busybox\nRUN echo ${"a".repeat(10_000_000)}\n`);
      const result = refused(["build", `--progress=${progress}`, ctx]);
      expect(result.status).toBe(1);
      expect(result.stderr.length).toBeLessThan(10_000);
      expect(result.stderr).toContain("Dockerfile:2:1: dockerfile line greater than max allowed size");
      expect(result.stderr).toMatch(/more bytes\)/);
      canary.expectUntouched(result.stderr);
    },
  );

  it("a 120 kB build-arg value in a failing step's error is an excerpt", () => {
    const ctx = world.context({ Dockerfile: "FROM busybox\nARG WHO\nUSER $WHO\nRUN true\n" });
    // 120 kB: about the most one argument may carry (the kernel's limit is 128 kB).
    const value = "u".repeat(120_000);
    const result = refused(["build", "--progress=plain", "--build-arg", `WHO=${value}`, ctx]);
    expect(result.status).toBe(1);
    expect(result.stderr.length).toBeLessThan(10_000);
    expect(result.stderr).toMatch(/Dockerfile:4\n/);
    expect(result.stderr).toMatch(/ERROR: .*u+… \(\d+ more bytes\)/);
  });

  it("the store is usable after these refusals", () => {
    world.expectStoreUsable(mode, store);
  });
});
