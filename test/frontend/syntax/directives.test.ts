import { describe, expect, it } from "vitest";
import { dump, parse, rejection } from "./parse.js";

describe("parser directives", () => {
  it("are read from the comments at the top and kept lower-cased, with their lines", () => {
    const ast = parse("# syntax=docker/dockerfile:1\n# CHECK = skip=all\nFROM a\n");
    expect(ast.directives.map(({ name, value, range }) => [name, value, range.start.line])).toEqual([
      ["syntax", "docker/dockerfile:1", 1],
      ["check", "skip=all", 2],
    ]);
  });

  it("print nothing in the dump and are not comments of the first instruction", () => {
    const ast = parse("# syntax=x\n# a comment\nFROM a\n");
    expect(ast.instructions[0]!.comments).toEqual(["a comment"]);
    expect(dump("# syntax=x\nFROM a\n")).toEqual(['(from "a")']);
  });

  it("take blanks around the name, the equals sign and the value", () => {
    const ast = parse("  #   Escape   =   `   \nFROM a `\n  b\n");
    expect(ast.escapeToken).toBe("`");
    expect(ast.directives[0]).toMatchObject({ name: "escape", value: "`" });
    expect(dump("  #   Escape   =   `   \nFROM a `\n  b\n")).toEqual(['(from "a" "b")']);
  });

  it("escape=` makes the backtick the line continuation and the backslash an ordinary character", () => {
    expect(dump("# escape=`\nFROM a\nRUN dir c:\\\nRUN echo `\n  done\n")).toEqual([
      '(from "a")',
      '(run "dir c:\\\\")',
      '(run "echo   done")',
    ]);
  });

  it("escape=` also governs the escapes inside ENV words", () => {
    expect(dump("# escape=`\nFROM a\nENV X=a` b\n")).toEqual(['(from "a")', '(env "X" "a` b" "=")']);
    expect(rejection("# escape=`\nFROM a\nENV X=a\\ b\n")).toBe(
      '3:10 Syntax error - can\'t find = in "b". Must be of the form: name=value',
    );
  });

  it("are ignored after a comment that is not a directive", () => {
    const ast = parse("# hello\n# escape=`\nFROM a\nRUN b `\n");
    expect(ast.directives).toEqual([]);
    expect(ast.escapeToken).toBe("\\");
    expect(dump("# hello\n# escape=`\nFROM a\nRUN b `\n")).toEqual(['(from "a")', '(run "b `")']);
  });

  it("are ignored after a blank line, after an instruction, and after an unknown directive", () => {
    expect(parse("\n# escape=`\nFROM a\n").directives).toEqual([]);
    expect(parse("FROM a\n# escape=`\nRUN b `\n").escapeToken).toBe("\\");
    expect(parse("# foo=bar\n# escape=`\nFROM a\n").directives).toEqual([]);
  });

  it("are found after a byte order mark on the first line", () => {
    const ast = parse("\uFEFF# escape=`\nFROM a `\n b\n");
    expect(ast.escapeToken).toBe("`");
    expect(dump("\uFEFF# escape=`\nFROM a `\n b\n")).toEqual(['(from "a" "b")']);
  });

  it("may be given once each", () => {
    expect(rejection("# escape=`\n# escape=`\nFROM a\n")).toBe(
      "2:3 only one escape parser directive can be used",
    );
    expect(rejection("# syntax=a\n#syntax=b\nFROM a\n")).toBe(
      "2:2 only one syntax parser directive can be used",
    );
  });

  it("accept only a backslash or a backtick as the escape token", () => {
    expect(rejection("# escape=x\nFROM a\n")).toBe("1:10 invalid escape token 'x' does not match ` or \\");
  });
});
