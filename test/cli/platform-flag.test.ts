import { describe, expect, it } from "vitest";
import type { LoweredBuild } from "../../frontend/lower/index.js";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

describe("--platform with several platforms", () => {
  it("tbuild debug graph asks for one of them (it shows one platform's graph)", () => {
    const result = tbuild(["debug", "graph", "--platform", "linux/amd64,arm64", "examples/hello"], {
      env: { TBUILD_ROOT: tempDir("platform-store") },
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(
      "tbuild debug graph shows one platform's graph, and --platform names 2 (linux/amd64, linux/arm64): give one of them",
    );
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
