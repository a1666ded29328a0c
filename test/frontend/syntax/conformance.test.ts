import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { dumpAst, parseDockerfile } from "../../../frontend/syntax/index.js";
import { tbuild } from "../../helpers/cli.js";

const fixtures = new URL("../../fixtures/buildkit-parser/", import.meta.url);
const positive = new URL("testfiles/", fixtures);
const negative = new URL("testfiles-negative/", fixtures);

const caseNames = (dir: URL) => readdirSync(dir).sort();
const dockerfile = (dir: URL, name: string) => new URL(`${name}/Dockerfile`, dir);

describe("BuildKit's parser test files", () => {
  it("has every case of the copied data", () => {
    expect(caseNames(positive)).toHaveLength(33);
    expect(caseNames(negative)).toHaveLength(4);
  });

  describe.each(caseNames(positive))("%s", (name) => {
    it("dumps exactly what BuildKit's parser prints", () => {
      const ast = parseDockerfile(readFileSync(dockerfile(positive, name)), { file: `${name}/Dockerfile` });
      expect(dumpAst(ast)).toBe(readFileSync(new URL(`${name}/result`, positive), "utf8"));
    });
  });

  describe.each(caseNames(negative))("%s", (name) => {
    it("is rejected with a positioned DockerfileError", () => {
      const source = readFileSync(dockerfile(negative, name));
      let thrown: unknown;
      try {
        parseDockerfile(source, { file: `${name}/Dockerfile` });
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(DockerfileError);
      const error = thrown as DockerfileError;
      expect(error.line).toBeGreaterThanOrEqual(1);
      expect(error.column).toBeGreaterThanOrEqual(1);
      expect(error.message).toMatch(new RegExp(`^${name}/Dockerfile:${error.line}:${error.column}: `));
    });
  });

  it("rejects each negative case for its own reason and place", () => {
    const reason = (name: string) => {
      try {
        parseDockerfile(readFileSync(dockerfile(negative, name)));
      } catch (err) {
        const { line, column, reason } = err as DockerfileError;
        return `${line}:${column} ${reason}`;
      }
      return "accepted";
    };
    expect(reason("empty_dockerfile")).toBe("1:1 file with no instructions");
    expect(reason("only_comments")).toBe("3:1 file with no instructions");
    expect(reason("env_no_value")).toBe("3:5 ENV must have two arguments");
    expect(reason("shykes-nested-json")).toBe(
      "1:5 when using JSON array syntax, arrays must be comprised of strings only",
    );
  });
});

describe("tbuild debug parse", () => {
  it.each(["json", "escape-with-syntax", "lk4d4-the-edge-case-generator", "health"])(
    "prints BuildKit's dump of %s",
    (name) => {
      const { status, stdout, stderr } = tbuild(["debug", "parse", dockerfile(positive, name).pathname]);
      expect(stderr).toBe("");
      expect(status).toBe(0);
      expect(stdout).toBe(readFileSync(new URL(`${name}/result`, positive), "utf8"));
    },
  );

  it("reads standard input for -", () => {
    const { status, stdout } = tbuild(["debug", "parse", "-"], { input: 'FROM scratch\nCMD ["/app"]\n' });
    expect(status).toBe(0);
    expect(stdout).toBe('(from "scratch")\n(cmd "/app")\n');
  });

  it("reports a syntax error at file:line:column with the line and a caret, no stack, exit 1", () => {
    const { status, stdout, stderr } = tbuild(["debug", "parse", "-"], { input: "FROM scratch\nENV PATH\n" });
    expect(status).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe("ERROR: <stdin>:2:5: ENV must have two arguments\n 2 | ENV PATH\n   |     ^\n");
  });

  it("rejects each negative case with exit code 1", () => {
    for (const name of caseNames(negative)) {
      const { status, stderr } = tbuild(["debug", "parse", dockerfile(negative, name).pathname]);
      expect(status).toBe(1);
      expect(stderr).toMatch(/^ERROR: .*Dockerfile:\d+:\d+: /);
      expect(stderr).not.toMatch(/\n\s+at /);
    }
  });

  it("names a missing file", () => {
    const { status, stderr } = tbuild(["debug", "parse", "no/such/Dockerfile"]);
    expect(status).toBe(1);
    expect(stderr).toBe("ERROR: cannot read the Dockerfile no/such/Dockerfile: no such file\n");
  });

  it("prints an empty continuation line as a warning, not in the dump", () => {
    const { status, stdout, stderr } = tbuild(["debug", "parse", "-"], {
      input: "FROM a\nRUN b \\\n\n  c\n",
    });
    expect(status).toBe(0);
    expect(stdout).toBe('(from "a")\n(run "b   c")\n');
    expect(stderr).toBe("WARNING: <stdin>:3: Empty continuation line found in: RUN b   c\n");
  });

  it("needs exactly one FILE", () => {
    expect(tbuild(["debug", "parse"]).status).toBe(2);
  });
});
