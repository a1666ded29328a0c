/**
 * docs/errors.md against the code: the one table lists every `E_…` code the source can raise,
 * and no code that nothing raises any more, so a program that branches on `code` can trust it.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../helpers/cli.js";

const SOURCE_FOLDERS = [
  "api",
  "build",
  "cli",
  "frontend",
  "solver",
  "worker",
  "exporters",
  "oci",
  "runtime",
  "errors",
];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? sourceFiles(full) : entry.name.endsWith(".ts") ? [full] : [];
  });
}

describe("docs/errors.md", () => {
  it("lists every error code the source raises, and only those", () => {
    const inSource = new Set<string>();
    for (const folder of SOURCE_FOLDERS) {
      for (const file of sourceFiles(path.join(projectRoot, folder))) {
        for (const match of readFileSync(file, "utf8").matchAll(/"(E_[A-Z0-9_]+)"/g)) inSource.add(match[1]!);
      }
    }
    const docs = readFileSync(path.join(projectRoot, "docs", "errors.md"), "utf8");
    const documented = new Set([...docs.matchAll(/^\| `(E_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]!));
    expect(inSource.size).toBeGreaterThan(50);
    expect([...inSource].filter((code) => !documented.has(code)).sort()).toEqual([]);
    expect([...documented].filter((code) => !inSource.has(code)).sort()).toEqual([]);
  });
});
