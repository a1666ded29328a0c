/**
 * A build whose Dockerfile did not change takes its tree from the store instead of parsing
 * (frontend/syntax/parse-cache.ts): the tree must survive JSON as it is, and an edited Dockerfile,
 * or a damaged remembered tree, must never give the old one.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { dumpAst, parseDockerfile } from "../../../frontend/syntax/index.js";
import { tbuild } from "../../helpers/cli.js";
import { tempDirs } from "../../helpers/temp.js";

const tempDir = tempDirs();
const positive = new URL("../../fixtures/buildkit-parser/testfiles/", import.meta.url);

describe("a remembered Dockerfile tree", () => {
  it.each(readdirSync(positive).sort())(
    "%s: is the same tree, and dumps as BuildKit does, after JSON",
    (name) => {
      const ast = parseDockerfile(readFileSync(new URL(`${name}/Dockerfile`, positive)), {
        file: `${name}/Dockerfile`,
      });
      const remembered = JSON.parse(JSON.stringify(ast));
      expect(remembered).toEqual(ast);
      expect(dumpAst(remembered)).toBe(readFileSync(new URL(`${name}/result`, positive), "utf8"));
    },
  );

  it("is used while the Dockerfile is unchanged, and never after it changed or was damaged", () => {
    const store = tempDir("parse-cache-store");
    const context = tempDir("parse-cache-ctx");
    const env = { TBUILD_ROOT: store };
    const label = () => {
      const inspected = tbuild(["inspect", "parsed:1"], { env });
      expect(inspected.status, inspected.stderr).toBe(0);
      return (JSON.parse(inspected.stdout) as { config: { config: { Labels?: Record<string, string> } } })
        .config.config.Labels?.version;
    };
    const build = () => {
      const result = tbuild(["build", "--progress=plain", "-t", "parsed:1", context], { env });
      expect(result.status, result.stderr).toBe(0);
      return result.stderr;
    };
    // An empty continuation line is a warning of the parser's: it must come with a remembered tree too.
    const dockerfile = (version: string) =>
      writeFileSync(
        path.join(context, "Dockerfile"),
        `FROM scratch\nLABEL version=${version} \\\n\n  other=x\n`,
      );
    const trees = () => readdirSync(path.join(store, "dockerfiles")).filter((n) => n.endsWith(".json"));

    dockerfile("1");
    expect(build()).toContain("Empty continuation line");
    expect(trees()).toHaveLength(1);
    expect(build()).toContain("Empty continuation line");
    expect(label()).toBe("1");

    dockerfile("2");
    build();
    expect(label()).toBe("2");
    expect(trees()).toHaveLength(2);

    for (const tree of trees()) writeFileSync(path.join(store, "dockerfiles", tree), '{"instructions": 1');
    build();
    expect(label()).toBe("2");
    for (const tree of trees()) writeFileSync(path.join(store, "dockerfiles", tree), "{}");
    build();
    expect(label()).toBe("2");
  });
});
