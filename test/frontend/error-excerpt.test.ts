/**
 * A Dockerfile error shows the line it is about, and a caret under the column; a line of
 * megabytes shows the part around the column, with how much was left out either side.
 */
import { describe, expect, it } from "vitest";
import { capLine, excerptAround } from "../../errors/excerpt.js";
import { DockerfileError } from "../../frontend/errors.js";

describe("Dockerfile error excerpts", () => {
  it("a short line is shown whole with the caret under the column", () => {
    const err = new DockerfileError("unknown instruction: BOGUS", {
      file: "Dockerfile",
      position: { line: 2, column: 3 },
      lines: ["FROM busybox", "  BOGUS x"],
    });
    expect(err.message).toBe("Dockerfile:2:3: unknown instruction: BOGUS\n 2 |   BOGUS x\n   |   ^");
  });

  it("a 10 MB line shows a window around the column, and the caret still points at it", () => {
    const line = `RUN echo ${"a".repeat(5_000_000)}X${"b".repeat(5_000_000)}`;
    const column = line.indexOf("X") + 1;
    const err = new DockerfileError("something at X", {
      file: "Dockerfile",
      position: { line: 7, column },
      lines: ["FROM busybox", "", "", "", "", "", line],
    });
    expect(err.message.length).toBeLessThan(1000);
    const [head, source, caret] = err.message.split("\n");
    expect(head).toBe(`Dockerfile:7:${column}: something at X`);
    expect(source).toMatch(/^ 7 \| … \(\d+ bytes\) a+Xb+… \(\d+ more bytes\)$/);
    expect(source![caret!.indexOf("^")]).toBe("X");
    const [, before, after] = /… \((\d+) bytes\) (a+)Xb+… \((\d+) more bytes\)/.exec(source!)!.slice(0, 4);
    expect(Number(before) + after!.length).toBe(5_000_000 + "RUN echo ".length);
  });

  it("a line is cut between characters, never inside a surrogate pair", () => {
    const line = "é".repeat(10) + "😀".repeat(400);
    const capped = capLine(line, 11);
    expect(capped).toBe(`${"é".repeat(10)}… (${Buffer.byteLength("😀".repeat(400))} more bytes)`);
    expect(excerptAround("😀".repeat(400), 1, 5).text).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])/);
  });
});
