import { describe, expect, it } from "vitest";
import { cleanAbsolutePath, cleanPath, cleanRelativePath } from "../../oci/clean-path.js";

describe("cleanPath is Go's path.Clean", () => {
  // The examples of Go's own documentation of path.Clean.
  it.each([
    ["a/c", "a/c"],
    ["a//c", "a/c"],
    ["a/c/.", "a/c"],
    ["a/c/b/..", "a/c"],
    ["/../a/c", "/a/c"],
    ["/../a/b/../././/c", "/a/c"],
    ["", "."],
    ["../../x", "../../x"],
    ["/", "/"],
  ])("%j → %j", (input, expected) => {
    expect(cleanPath(input)).toBe(expected);
  });
});

describe("paths inside a filesystem never climb above its root", () => {
  it("absolute: rooted, clean, no trailing slash", () => {
    expect(cleanAbsolutePath("a/./b/")).toBe("/a/b");
    expect(cleanAbsolutePath("../../etc/passwd")).toBe("/etc/passwd");
    expect(cleanAbsolutePath("")).toBe("/");
  });

  it("relative: the same without the leading slash, empty for the root", () => {
    expect(cleanRelativePath("./blobs/sha256/")).toBe("blobs/sha256");
    expect(cleanRelativePath(".")).toBe("");
    expect(cleanRelativePath("a/../../b")).toBe("b");
  });
});
