/**
 * Each step that reads the context is keyed on exactly what it reads: the dependency-first shape
 * every Docker tutorial teaches (copy the manifest, install, copy the sources) keeps its install
 * step cached when a source changes; a file no step reads changes nothing; `--explain` names the
 * files of the step's own selection. The same holds for RUN bind mounts of the context and for
 * named contexts.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { FIXED_EPOCH, importBusybox } from "../helpers/images.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();
let storeRoot: string;

beforeAll(async () => {
  storeRoot = tempDir("content-keys-store");
  await importBusybox(storeRoot, "busybox");
});

function writeTree(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    writeFileSync(path.join(dir, name), text);
  }
}

/** Builds with --explain; gives which steps ran and which were cached (by their Dockerfile text), and the explain lines. */
function build(dir: string, extra: string[] = []) {
  const result = tbuild(["build", "--progress=plain", "--explain", ...extra, dir], {
    env: { TBUILD_ROOT: storeRoot, SOURCE_DATE_EPOCH: String(FIXED_EPOCH) },
  });
  expect(result.status, result.stderr).toBe(0);
  const names = new Map<string, string>();
  const ran: string[] = [];
  const cached: string[] = [];
  for (const line of result.stderr.split("\n")) {
    const named = /^#(\d+) \[(?!internal\])[^\]]+\] (.*)$/.exec(line);
    if (named) names.set(named[1]!, named[2]!);
    const done = /^#(\d+) (DONE|CACHED)/.exec(line);
    const name = done ? names.get(done[1]!) : undefined;
    if (name !== undefined) (done![2] === "DONE" ? ran : cached).push(name);
  }
  const explained = result.stderr.split("\n").filter((l) => l.startsWith("explain: "));
  return { ran, cached, explained };
}

describe("a step's cache key covers exactly the context files it reads", () => {
  it("editing a source keeps the dependency install of the tutorials' shape cached", () => {
    const dir = path.join(tempDir("content-keys"), "ctx");
    writeTree(dir, {
      Dockerfile: [
        "FROM busybox",
        "WORKDIR /app",
        "COPY requirements.txt .",
        "RUN cp requirements.txt installed.txt",
        "COPY . .",
        "RUN cat src/main.txt > built.txt",
        "",
      ].join("\n"),
      "requirements.txt": "flask\n",
      "src/main.txt": "v1\n",
      "README.md": "readme\n",
      ".dockerignore": "notes/\n",
      "notes/todo.txt": "ignored\n",
    });
    build(dir);

    writeFileSync(path.join(dir, "src/main.txt"), "v2\n");
    const afterSource = build(dir);
    expect(afterSource.cached).toEqual(
      expect.arrayContaining(["COPY requirements.txt .", "RUN cp requirements.txt installed.txt"]),
    );
    expect(afterSource.ran).toEqual(["COPY . .", "RUN cat src/main.txt > built.txt"]);
    expect(afterSource.explained[0]).toBe("explain: [5/6] COPY . .: input file src/main.txt changed");

    // Ignored by .dockerignore: no step reads it.
    writeFileSync(path.join(dir, "notes/todo.txt"), "still ignored\n");
    expect(build(dir).ran).toEqual([]);

    writeFileSync(path.join(dir, "requirements.txt"), "flask\nrequests\n");
    const afterManifest = build(dir);
    expect(afterManifest.ran).toEqual([
      "COPY requirements.txt .",
      "RUN cp requirements.txt installed.txt",
      "COPY . .",
      "RUN cat src/main.txt > built.txt",
    ]);
    expect(afterManifest.explained[0]).toBe(
      "explain: [3/6] COPY requirements.txt .: input file requirements.txt changed",
    );
  });

  it("a file only a later COPY's glob selects re-runs that COPY alone", () => {
    const dir = path.join(tempDir("content-keys"), "ctx");
    writeTree(dir, {
      Dockerfile: "FROM busybox\nCOPY conf/*.ini /etc/app/\nCOPY src /src\n",
      "conf/a.ini": "a\n",
      "conf/b.txt": "not selected\n",
      "src/x": "x\n",
    });
    build(dir);
    writeFileSync(path.join(dir, "conf/b.txt"), "edited, still not selected\n");
    const untouched = build(dir);
    expect(untouched.ran).toEqual([]);
    writeFileSync(path.join(dir, "src/y"), "new\n");
    const added = build(dir);
    expect(added.ran).toEqual(["COPY src /src"]);
    expect(added.explained[0]).toBe("explain: [3/3] COPY src /src: input file src/y added");
  });

  it("a RUN bind mount of the context is keyed on its source path only", () => {
    const dir = path.join(tempDir("content-keys"), "ctx");
    writeTree(dir, {
      Dockerfile:
        "FROM busybox\nRUN --mount=type=bind,source=deps,target=/deps cat /deps/list > /installed\nCOPY app /app\n",
      "deps/list": "one\n",
      "app/main": "v1\n",
    });
    build(dir);
    writeFileSync(path.join(dir, "app/main"), "v2\n");
    expect(build(dir).ran).toEqual(["COPY app /app"]);
    writeFileSync(path.join(dir, "deps/list"), "two\n");
    expect(build(dir).ran).toEqual([
      "RUN --mount=type=bind,source=deps,target=/deps cat /deps/list > /installed",
      "COPY app /app",
    ]);
  });

  it("a named context is keyed per step too", () => {
    const named = path.join(tempDir("content-keys"), "named");
    writeTree(named, { "a/one": "1\n", "b/two": "2\n" });
    const dir = path.join(tempDir("content-keys"), "ctx");
    writeTree(dir, { Dockerfile: "FROM busybox\nCOPY --from=extra a /a\nCOPY --from=extra b /b\n" });
    const flags = ["--build-context", `extra=${named}`];
    build(dir, flags);
    writeFileSync(path.join(named, "b/two"), "22\n");
    expect(build(dir, flags).ran).toEqual(["COPY --from=extra b /b"]);
  });
});
