import { describe, expect, it } from "vitest";
import { namesBuiltinSyntax } from "../../../frontend/lower/syntax-directive.js";

const DIGEST = `sha256:${"ab".repeat(32)}`;

describe("which # syntax= images name the built-in frontend's syntax", () => {
  it.each([
    "docker/dockerfile:1",
    "docker/dockerfile:1.4",
    "docker/dockerfile:1.7.1",
    `docker/dockerfile:1.7@${DIGEST}`,
    "docker.io/docker/dockerfile:1",
    "index.docker.io/docker/dockerfile:1.6",
    "docker/dockerfile",
    "docker/dockerfile:latest",
  ])("%s is the stable dockerfile syntax", (image) => {
    expect(namesBuiltinSyntax(image)).toBe(true);
  });

  it.each([
    "docker/dockerfile:1-labs",
    "docker/dockerfile:1.7-labs",
    "docker/dockerfile:1.8.0-rc1",
    "docker/dockerfile:0.1",
    `docker/dockerfile@${DIGEST}`,
    "docker/dockerfile-upstream:master",
    "ghcr.io/docker/dockerfile:1",
    "example.com/my/frontend:1",
    "Not A Reference",
  ])("%s is another frontend", (image) => {
    expect(namesBuiltinSyntax(image)).toBe(false);
  });
});
