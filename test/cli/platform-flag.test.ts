import { describe, expect, it } from "vitest";
import type { LoweredBuild } from "../../frontend/lower/index.js";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

const MULTI =
  "--platform linux/amd64,linux/arm64: tbuild builds one platform at a time; multi-platform builds are not supported yet";

describe("--platform with several platforms", () => {
  it.each([
    ["build", ["build", "--progress=plain"]],
    ["debug graph", ["debug", "graph"]],
  ])("tbuild %s says multi-platform builds are not supported yet", (_name, command) => {
    const result = tbuild([...command, "--platform", "linux/amd64,linux/arm64", "examples/hello"], {
      env: { TBUILD_ROOT: tempDir("platform-store") },
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(MULTI);
    expect(result.stderr).not.toContain("not a valid architecture");
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(result.stdout).toBe("");
  });

  it("one platform still lowers for that platform", () => {
    const result = tbuild(["debug", "graph", "--platform", "linux/arm64", "examples/hello"], {
      env: { TBUILD_ROOT: tempDir("platform-store") },
    });
    expect(result.status, result.stderr).toBe(0);
    expect((JSON.parse(result.stdout) as LoweredBuild).image.architecture).toBe("arm64");
  });
});
