import { describe, expect, it } from "vitest";
import { parseDockerfile } from "../../../frontend/syntax/index.js";
import { parse } from "./parse.js";

describe("the syntax tree", () => {
  it("keeps the file name, the source lines and the escape token", () => {
    const ast = parseDockerfile("FROM a\r\nRUN b\n", { file: "build/Dockerfile.dev" });
    expect(ast.file).toBe("build/Dockerfile.dev");
    expect(ast.lines).toEqual(["FROM a", "RUN b"]);
    expect(ast.escapeToken).toBe("\\");
    expect(parseDockerfile("FROM a\n").file).toBe("Dockerfile");
  });

  it("keeps the logical line as BuildKit's Original", () => {
    const ast = parse("FROM a\n   RUN echo a \\\n  b   \n");
    expect(ast.instructions[1]!.original).toBe("RUN echo a   b   ");
  });

  it("gives every instruction a range from its keyword to the end of its last line", () => {
    const ast = parse("FROM a\n\n  COPY x \\\n    y\n");
    expect(ast.instructions.map((i) => i.range)).toEqual([
      { start: { line: 1, column: 1 }, end: { line: 1, column: 7 } },
      { start: { line: 3, column: 3 }, end: { line: 4, column: 6 } },
    ]);
  });

  it("ranges ONBUILD's trigger from its own keyword", () => {
    const ast = parse("FROM a\nONBUILD  RUN x\n");
    expect(ast.instructions[1]!.inner!.range).toEqual({
      start: { line: 2, column: 10 },
      end: { line: 2, column: 15 },
    });
  });

  it("records the comments above an instruction as BuildKit does", () => {
    const ast = parse(
      [
        "# first",
        "FROM a",
        "# one",
        "",
        "#   two  ",
        "RUN x",
        "# dropped by the empty comment",
        "#",
        "# kept",
        "RUN y",
        "   # indented keeps its '#'",
        "RUN z \\",
        "# inside a continuation: not recorded",
        "  more",
        "CMD w",
      ].join("\n"),
    );
    expect(ast.instructions.map((i) => i.comments)).toEqual([
      ["first"],
      ["one", "two"],
      ["kept"],
      ["# indented keeps its '#'"],
      [],
    ]);
  });

  it("reads bytes that are not UTF-8 and dumps them as Go does", () => {
    const bytes = Buffer.concat([
      Buffer.from("FROM a\nRUN echo "),
      Buffer.from([0xff, 0xc3]),
      Buffer.from("\n"),
    ]);
    expect(parse(bytes).instructions[1]!.original).toBe("RUN echo \udcff\udcc3");
  });
});
