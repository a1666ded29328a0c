import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { parseInstruction } from "../../../frontend/instructions/index.js";
import { parseDockerfile } from "../../../frontend/syntax/index.js";
import { projectRoot } from "../../helpers/cli.js";

// BuildKit's parser test files (copied into test/fixtures/buildkit-parser, see its README): each instruction in them
// parses, except those BuildKit's own instruction parser also rejects.
const testfiles = `${projectRoot}test/fixtures/buildkit-parser/testfiles`;

describe("BuildKit's parser test files", () => {
  it("every instruction parses, except the ones BuildKit rejects too", () => {
    const rejected: string[] = [];
    for (const name of readdirSync(testfiles).sort()) {
      const ast = parseDockerfile(readFileSync(`${testfiles}/${name}/Dockerfile`), { file: name });
      for (const node of ast.instructions) {
        try {
          parseInstruction(node, { file: name, lines: ast.lines, warn: () => {} });
        } catch (error) {
          if (!(error instanceof DockerfileError)) throw error;
          rejected.push(`${name}:${error.line}:${error.column}: ${error.reason}`);
        }
      }
    }
    const copyFlags = "(it takes --from, --chown, --chmod, --link, --parents, --exclude)";
    expect(rejected).toEqual([
      `flags:3:6: unknown flag: --user for COPY ${copyFlags}`,
      `flags:4:6: unknown flag: --doit for COPY ${copyFlags}`,
      `flags:5:6: unknown flag: --user for COPY ${copyFlags}`,
      `flags:6:6: unknown flag: --doit for COPY ${copyFlags}`,
      "flags:8:5: unknown flag: --doit for CMD, which takes no flags",
      "flags:9:5: unknown flag: --doit for CMD, which takes no flags",
      "flags:10:5: unknown flag: --doit for CMD, which takes no flags",
      "health:4:1: HEALTHCHECK requires at least one argument",
      "health:7:1: Missing command after HEALTHCHECK CMD",
      'health:10:13: Unknown type "CONNECT" in HEALTHCHECK (try CMD)',
    ]);
  });
});
