import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

function context(dockerfile: string): string {
  const dir = tempDir("syntax-ctx");
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, "Dockerfile"), dockerfile);
  return dir;
}

const ANOTHER_FRONTEND = "asks for another frontend";

describe("the # syntax= directive", () => {
  it.each(["docker/dockerfile:1", `docker/dockerfile:1.7@sha256:${"0".repeat(64)}`])(
    "# syntax=%s builds with no word, as BuildKit would",
    (image) => {
      const dir = context(`# syntax=${image}\nFROM scratch\nCOPY Dockerfile /\n`);
      const result = tbuild(["debug", "graph", dir]);
      expect(result.status, result.stderr).toBe(0);
      expect(result.stderr).not.toContain(ANOTHER_FRONTEND);
    },
  );

  it("another frontend image is named in one warning, and the build still succeeds", async () => {
    const store = tempDir("syntax-store");
    await importBusybox(store, "busybox");
    const dir = context("# syntax=docker/dockerfile:1-labs\nFROM busybox\nRUN echo built > /out\n");
    const env = { TBUILD_ROOT: store };
    const result = tbuild(["build", "--progress=plain", "-t", "labs:1", dir], { env });
    expect(result.status, result.stderr).toBe(0);
    const warnings = result.stderr.split("\n").filter((line) => line.includes(ANOTHER_FRONTEND));
    expect(warnings).toEqual([
      expect.stringContaining(
        "Dockerfile:1: # syntax=docker/dockerfile:1-labs asks for another frontend; tbuild builds with its built-in Dockerfile frontend (the stable dockerfile:1 syntax)",
      ),
    ]);
    expect(tbuild(["run", "--rm", "labs:1", "cat", "/out"], { env }).stdout).toBe("built\n");
  });
});
