/**
 * examples/python-cache, built as its README says: a Python tool on Debian's python3 and
 * python3-jinja2, whose apt downloads live in cache mounts. The base image is made here (no
 * Docker Hub). A rebuild with --no-cache runs every step again, yet installs from the packages
 * already in the cache mount: apt fetches no package a second time.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { type CliResult, projectRoot, tbuild } from "../helpers/cli.js";
import { makeDockerDebianSlim } from "../helpers/debian-image.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
const example = `${projectRoot}examples/python-cache`;
const INSTALL_STEP = /^#(\d+) \[\d+\/\d+\] RUN --mount=type=cache,target=\/var\/cache\/apt.*apt-get install/m;

/** The output lines of the apt-get step in a `--progress=plain` log. */
function installStepLines(log: string): string[] {
  const step = INSTALL_STEP.exec(log);
  if (!step) throw new Error(`no apt-get install step in the build's log:\n${log}`);
  return log.split("\n").filter((line) => line.startsWith(`#${step[1]} `));
}

/** apt's "Get:" lines for packages (.deb archives), not for the index files of `apt-get update`. */
function packageDownloads(lines: string[]): string[] {
  return lines.filter(
    (line) => /Get:\d+ \S+ \S+ \S+ \S+ \S+ \S+ \[/.test(line) && !/InRelease|Packages/.test(line),
  );
}

describe("examples/python-cache", () => {
  const store = tempDir("example-python-store");
  const inStore = (args: string[]) => tbuild(args, { env: { TBUILD_ROOT: store } });
  let first: CliResult;

  beforeAll(async () => {
    await makeDockerDebianSlim(store, "debian:bookworm-slim", tempDir("example-python-base"));
    first = inStore(["build", "--progress=plain", "-t", "release-notes", example]);
    if (first.status !== 0) throw new Error(`the example did not build: ${first.stderr}`);
  }, 900_000);

  it("renders the release notes with Jinja2, as the unprivileged user app", () => {
    const result = inStore(["run", "--rm", "release-notes"]);
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const lines = result.stdout.split("\n");
    expect(lines.slice(0, 9)).toEqual([
      "Tbuild Example: release notes",
      "=============================",
      "",
      "1.1.0 (02 May 2024), 2 changes",
      "  - FEATURE: cache mounts keep downloaded packages between builds",
      "  - FIX: a rebuild with --no-cache downloads nothing it already has",
      "",
      "1.0.0 (14 March 2024), 1 change",
      "  - FEATURE: first release",
    ]);
    expect(result.stdout).toMatch(/\(rendered by Jinja2 3\.\d+\.\d+\)\n$/);
    const whoami = inStore(["run", "--rm", "--entrypoint", "id", "release-notes", "-un"]);
    expect(whoami.stdout).toBe("app\n");
  });

  it("keeps the downloaded packages out of the image's layers", () => {
    const result = inStore([
      "run",
      "--rm",
      "-u",
      "root",
      "--entrypoint",
      "sh",
      "release-notes",
      "-c",
      "find /var/cache/apt /var/lib/apt/lists -name '*.deb' -o -name '*_Packages*' | wc -l",
    ]);
    expect(result.stdout).toBe("0\n");
  });

  it("rebuilds with --no-cache from the packages in the cache mount, downloading none again", () => {
    const firstDownloads = packageDownloads(installStepLines(first.stderr));
    expect(firstDownloads.join("\n")).toMatch(/ python3-jinja2 /);

    const rebuild = inStore(["build", "--progress=plain", "--no-cache", "-t", "release-notes", example]);
    expect(rebuild.status).toBe(0);
    const lines = installStepLines(rebuild.stderr);
    // The step ran again (it is not a cache hit), and apt installed every package anew...
    expect(lines.join("\n")).not.toMatch(/CACHED/);
    expect(lines.join("\n")).toMatch(/Setting up python3-jinja2 /);
    // ...from the archives it had: not one package fetched.
    expect(packageDownloads(lines)).toEqual([]);
    expect(lines.join("\n")).toMatch(/Need to get 0 B/);

    // Another build's step that mounts the same cache (its id defaults to the target) sees them.
    const probe = tempDir("example-python-probe");
    mkdirSync(probe, { recursive: true });
    writeFileSync(
      path.join(probe, "Dockerfile"),
      [
        "FROM debian:bookworm-slim",
        "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked ls /var/cache/apt/archives",
        "",
      ].join("\n"),
    );
    const listing = inStore(["build", "--progress=plain", "--no-cache", probe]);
    expect(listing.status).toBe(0);
    expect(listing.stderr).toMatch(/ python3-jinja2_[^ ]+_all\.deb\n/);
    expect(listing.stderr).toMatch(/ python3\.11-minimal_[^ ]+\.deb\n/);
  }, 300_000);
});
