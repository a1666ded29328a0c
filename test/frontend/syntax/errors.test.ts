import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { errorOf, rejection } from "./parse.js";

describe("syntax errors", () => {
  it("name the file, line and column, and show the line with a caret", () => {
    const error = errorOf("FROM a\n\tENV PATH\n");
    expect(error).toBeInstanceOf(DockerfileError);
    expect(error.message).toBe("Dockerfile:2:6: ENV must have two arguments\n 2 |  ENV PATH\n   |      ^");
  });

  it("an unknown instruction, with a suggestion when one is close", () => {
    expect(rejection("FROM a\nRUNN echo\n")).toBe("2:1 unknown instruction: RUNN (did you mean RUN?)");
    expect(rejection("FROM a\n  cop a b\n")).toBe("2:3 unknown instruction: cop (did you mean copy?)");
    expect(rejection("FROM a\nEntryPiont x\n")).toBe(
      "2:1 unknown instruction: EntryPiont (did you mean entrypoint?)",
    );
    expect(rejection("FROM a\nFROBNICATE x\n")).toBe("2:1 unknown instruction: FROBNICATE");
  });

  it("an unknown instruction is reported after the parse, as BuildKit does, so a later syntax error wins", () => {
    expect(rejection("FROMM a\nENV X\n")).toBe("2:5 ENV must have two arguments");
    expect(rejection("FROMM a\nBAD b\n")).toBe("1:1 unknown instruction: FROMM (did you mean FROM?)");
  });

  it("a file with no instructions, at its last line", () => {
    expect(rejection("")).toBe("1:1 file with no instructions");
    expect(rejection("\n\n   \n")).toBe("3:1 file with no instructions");
    expect(rejection("# just\n# comments\n")).toBe("2:1 file with no instructions");
    expect(rejection("# syntax=docker/dockerfile:1\n")).toBe("1:1 file with no instructions");
  });

  it("ENV and LABEL without a value, or with a word lacking '='", () => {
    expect(rejection("FROM a\nENV PATH\n")).toBe("2:5 ENV must have two arguments");
    expect(rejection("FROM a\nLABEL  x\n")).toBe("2:8 LABEL must have two arguments");
    expect(rejection("FROM a\nENV a=b c\n")).toBe(
      '2:9 Syntax error - can\'t find = in "c". Must be of the form: name=value',
    );
  });

  it("positions inside a continued instruction point at the right physical line", () => {
    expect(rejection("FROM a\nLABEL a=b \\\n   c=d \\\n   e\n")).toBe(
      '4:4 Syntax error - can\'t find = in "e". Must be of the form: name=value',
    );
  });

  it("a line continuation with nothing after it", () => {
    expect(rejection("FROM a\n\\\n")).toBe("2:1 a line continuation with no instruction after it");
  });

  it("a line longer than BuildKit's line reader accepts", () => {
    expect(rejection(`FROM a\nLABEL x=${"a".repeat(65_536)}\n`)).toBe(
      "2:1 dockerfile line greater than max allowed size of 65535",
    );
    expect(() => errorOf(`FROM a\nLABEL x=${"a".repeat(65_535 - 8)}\n`)).toThrow("the file was accepted");
  });

  it("every one of them is a DockerfileError with a position", () => {
    const sources = [
      "",
      "# escape=x\nFROM a\n",
      "FROM a\nRUN <<EOF\n",
      'FROM a\nCMD [1, "a"]\n',
      "FROM a\nNOPE\n",
      "FROM a\nENV x\n",
    ];
    for (const source of sources) {
      const error = errorOf(source);
      expect(error.line).toBeGreaterThanOrEqual(1);
      expect(error.column).toBeGreaterThanOrEqual(1);
    }
  });
});
