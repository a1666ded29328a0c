/**
 * docs/config.md against the code: every config.toml key build/config.ts accepts and every
 * environment variable tbuild reads is described there, and its example config is one tbuild reads.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  CONFIG_TABLES,
  parseConfig,
  REMOTE_WORKER_KEYS,
  readBuildDefaults,
  readGcPolicy,
  readRemoteWorkers,
  readWorkerSettings,
} from "../../build/config.js";
import { projectRoot } from "../helpers/cli.js";

const docs = readFileSync(path.join(projectRoot, "docs/config.md"), "utf8");

/** The .ts files of the folders tbuild is built from (not tests or benchmarks). */
function sourceFiles(): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith(".ts")) files.push(full);
    }
  };
  for (const folder of ["cli", "frontend", "solver", "worker", "exporters", "oci", "runtime", "errors"]) {
    walk(path.join(projectRoot, folder));
  }
  return files;
}

describe("docs/config.md", () => {
  it("describes every table and key config.toml accepts", () => {
    for (const [table, keys] of Object.entries(CONFIG_TABLES)) {
      const heading =
        table === "registry"
          ? '## `[registry."HOST"]`'
          : table === "pool"
            ? "## `[pool.NAME]`"
            : `## \`[${table}]\``;
      expect(docs).toContain(heading);
      for (const key of keys) expect(docs, `${table}.${key}`).toMatch(new RegExp(`\\n\\| \`${key}\` \\|`));
    }
    const remote = docs.slice(docs.indexOf("## `[worker.NAME]`"), docs.indexOf("## `[pool.NAME]`"));
    expect(remote).not.toBe("");
    for (const key of REMOTE_WORKER_KEYS)
      expect(remote, `worker.NAME.${key}`).toMatch(new RegExp(`\\n\\| \`${key}\` \\|`));
  });

  it("describes every environment variable the code reads", () => {
    const names = new Set<string>();
    for (const file of sourceFiles()) {
      for (const match of readFileSync(file, "utf8").matchAll(/\benv(?:\.|\?\.)([A-Z][A-Z0-9_]*)\b/g)) {
        names.add(match[1]!);
      }
    }
    // The ones users ask about first are described even if the code came to read them elsewhere.
    for (const name of [
      "TBUILD_ROOT",
      "TBUILD_CONFIG",
      "TBUILD_PROGRESS",
      "SOURCE_DATE_EPOCH",
      "DOCKER_CONFIG",
      "CI",
    ]) {
      names.add(name);
    }
    for (const name of names) expect(docs, name).toMatch(new RegExp(`\\n\\| \`${name}\` \\|`));
    expect(docs).toContain("`XDG_DATA_HOME`");
    expect(docs).toContain("`XDG_CONFIG_HOME`");
  });

  it("gives an example config.toml that tbuild reads as described", () => {
    const example = /```toml\n([\s\S]*?)```/.exec(docs)?.[1];
    expect(example).toBeDefined();
    const config = parseConfig(example!, "/etc/tbuild/config.toml");
    expect(config.registries["docker.io"]?.mirrors).toEqual(["mirror.example:5000"]);
    expect(config.registries["mirror.example:5000"]?.http).toBe(true);
    // CA paths are relative to the config file's directory.
    expect(config.registries["registry.corp.example"]?.ca).toEqual(["/etc/tbuild/certs/corp-root-ca.pem"]);
    expect(readGcPolicy(config)).toEqual({ keepStorage: 10e9, keepDuration: 168 * 3600 * 1000 });
    expect(readBuildDefaults(config)).toEqual({ jobs: 4 });
    expect(readWorkerSettings(config)).toEqual({ snapshotter: "auto" });
    const { workers, pools } = readRemoteWorkers(config);
    expect(Object.keys(workers)).toEqual(["build1", "arm1"]);
    expect(workers.build1?.maxBuilds).toBe(4);
    expect(workers.arm1?.platforms).toEqual(["linux/arm64"]);
    expect(pools.ci?.workers).toEqual(["build1", "arm1"]);
  });

  it("rejects an unknown table or top-level key, naming it and the known tables", () => {
    expect(() => parseConfig('[registy."docker.io"]\nmirrors = ["m:5000"]\n', "/x/config.toml")).toThrow(
      "/x/config.toml: unknown table [registy] (known: [registry], [gc], [build], [worker], [pool])",
    );
    expect(() => parseConfig("jobs = 2\n", "/x/config.toml")).toThrow(
      "/x/config.toml: unknown key jobs (known tables: [registry], [gc], [build], [worker], [pool])",
    );
  });

  it("rejects an unknown key of [build], naming it and the known ones", () => {
    const config = parseConfig("[build]\njobz = 2\n", "/x/config.toml");
    expect(() => readBuildDefaults(config)).toThrow("/x/config.toml: unknown key build.jobz (known: jobs)");
    expect(() => readBuildDefaults(parseConfig("[build]\njobs = 0\n", "/x/config.toml"))).toThrow(
      "build.jobs must be a whole number of at least 1",
    );
  });

  it("rejects an unknown key or snapshotter of [worker], naming the known ones", () => {
    expect(() =>
      readWorkerSettings(parseConfig('[worker]\nsnapshoter = "copy"\n', "/x/config.toml")),
    ).toThrow(
      "/x/config.toml: unknown key worker.snapshoter (known: snapshotter; a remote worker is a [worker.NAME] table)",
    );
    expect(() =>
      readWorkerSettings(parseConfig('[worker]\nsnapshotter = "vfs"\n', "/x/config.toml")),
    ).toThrow('/x/config.toml: worker.snapshotter must be one of "auto", "overlay", "copy"');
    expect(readWorkerSettings(parseConfig('[worker]\nsnapshotter = "copy"\n', "/x/config.toml"))).toEqual({
      snapshotter: "copy",
    });
  });
});
