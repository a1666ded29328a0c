import { describe, expect, it } from "vitest";
import { dump, parse } from "./parse.js";

describe("line continuations", () => {
  it("join lines without the escape token, keeping the blanks around it", () => {
    expect(dump("FROM a\nRUN echo a \\\n    b\n")).toEqual(['(from "a")', '(run "echo a     b")']);
    expect(dump("FROM a\nRUN echo a\\\nb\n")).toEqual(['(from "a")', '(run "echo ab")']);
  });

  it("allow blanks after the escape token", () => {
    expect(dump("FROM a\nRUN a \\ \t \n b\n")).toEqual(['(from "a")', '(run "a  b")']);
  });

  it("skip comment lines, indented or not, inside the instruction", () => {
    expect(dump("FROM a\nRUN a \\\n# one\n   # two\n  b\n")).toEqual(['(from "a")', '(run "a   b")']);
  });

  it("skip blank lines inside the instruction, with a warning at the first one", () => {
    const ast = parse("FROM a\nRUN a \\\n\n   \n  b\n");
    expect(ast.instructions[1]!.args).toEqual(["a   b"]);
    expect(ast.warnings).toEqual([
      {
        message: "Empty continuation line found in: RUN a   b",
        range: { start: { line: 3, column: 1 }, end: { line: 3, column: 1 } },
      },
    ]);
  });

  it("give no warning when no blank line is inside an instruction", () => {
    expect(parse("FROM a\n\nRUN a \\\n# c\n b\n\n").warnings).toEqual([]);
  });

  it("accept an escape token at the end of the file", () => {
    expect(dump("FROM a\nRUN something \\")).toEqual(['(from "a")', '(run "something")']);
    expect(dump("FROM a\nRUN something \\\n# only a comment follows\n")).toEqual([
      '(from "a")',
      '(run "something")',
    ]);
  });

  it("do not happen after an escaped escape token", () => {
    expect(dump("FROM a\nENV C trailing\\\\\nENV D next\n")).toEqual([
      '(from "a")',
      '(env "C" "trailing\\\\\\\\" "")',
      '(env "D" "next" "")',
    ]);
  });

  it("may put the escape token alone on a line", () => {
    expect(dump("FROM a\nENV E hello\\\n\\\nworld\n")).toEqual(['(from "a")', '(env "E" "helloworld" "")']);
  });

  it("read Windows line endings like Unix ones", () => {
    expect(dump("FROM a\r\nRUN b \\\r\n c\r\nCMD d\r\n")).toEqual([
      '(from "a")',
      '(run "b  c")',
      '(cmd "d")',
    ]);
  });

  it("keep a carriage return that does not end a line", () => {
    expect(dump("FROM a\nRUN a\rb\n")).toEqual(['(from "a")', '(run "a\\rb")']);
  });

  it("join a quoted word across lines for ENV", () => {
    expect(dump('FROM a\nENV name="a \\\n   b" c=d\n')).toEqual([
      '(from "a")',
      '(env "name" "\\"a    b\\"" "=" "c" "d" "=")',
    ]);
  });

  it("join a JSON array across lines", () => {
    expect(dump('FROM a\nCMD ["a", \\\n     "b"]\n')).toEqual(['(from "a")', '(cmd "a" "b")']);
  });

  it("cover the instruction's range up to its last line", () => {
    const ast = parse("FROM a\n  RUN a \\\n b \\\n# c\n");
    expect(ast.instructions[1]!.range).toEqual({
      start: { line: 2, column: 3 },
      end: { line: 4, column: 4 },
    });
  });
});
