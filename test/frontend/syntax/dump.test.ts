import { describe, expect, it } from "vitest";
import { dump } from "./parse.js";

const run = (command: string | Uint8Array) =>
  dump(
    typeof command === "string"
      ? `FROM a\nRUN ${command}\n`
      : Buffer.concat([Buffer.from("FROM a\nRUN "), command]),
  )[1];

describe("the dump quotes values as Go's %q", () => {
  it("escapes quotes and backslashes", () => {
    expect(run('echo "a\\b"')).toBe('(run "echo \\"a\\\\b\\"")');
  });

  it("uses the short escapes for \\a \\b \\f \\r \\t \\v", () => {
    expect(run("a\x07\x08\x0c\r\t\x0bz")).toBe('(run "a\\a\\b\\f\\r\\t\\vz")');
  });

  it("uses \\xNN for other control characters and DEL", () => {
    expect(run("a\x01\x1b\x7fz")).toBe('(run "a\\x01\\x1b\\x7fz")');
  });

  it("keeps printable Unicode as it is", () => {
    expect(run("héllo wörld ☃ 😀 日本")).toBe('(run "héllo wörld ☃ 😀 日本")');
  });

  it("uses \\u and \\U for Unicode that is not printable", () => {
    expect(run("a\u00a0b\u00adc\u200bd\u{e0001}e")).toBe('(run "a\\u00a0b\\u00adc\\u200bd\\U000e0001e")');
  });

  it("uses \\xNN for each byte that is not UTF-8", () => {
    expect(run(Buffer.from([0x61, 0xff, 0xe2, 0x82, 0x62, 0x0a]))).toBe('(run "a\\xff\\xe2\\x82b")');
  });

  it("lower-cases the keyword and prints flags as a quoted list", () => {
    expect(dump('FROM a\nCopy --chown="x y" --link a b\n')[1]).toBe(
      '(copy ["--chown=x y" "--link"] "a" "b")',
    );
  });
});
