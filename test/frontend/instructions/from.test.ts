import { describe, expect, it } from "vitest";
import { errorOf, parse, parseLast } from "./node.js";

describe("FROM", () => {
  it("FROM image gives the image, unexpanded", () => {
    expect(parseLast("FROM $BASE:1.2")).toMatchObject({ kind: "from", image: "$BASE:1.2" });
    expect(parseLast("FROM alpine")).not.toHaveProperty("stageName");
  });

  it("FROM --platform=linux/arm64 image AS build names the stage and the platform", () => {
    expect(parseLast("FROM --platform=linux/arm64 golang:1.22 AS build")).toMatchObject({
      kind: "from",
      image: "golang:1.22",
      stageName: "build",
      platform: "linux/arm64",
    });
  });

  it("the stage name is lower-cased, with a StageNameCasing warning", () => {
    const { instructions, warnings } = parse("FROM alpine AS Builder");
    expect(instructions[0]).toMatchObject({ stageName: "builder" });
    expect(warnings.map((warning) => warning.message)).toEqual([
      "StageNameCasing: Stage name 'Builder' should be lowercase",
    ]);
  });

  it("`as` whose casing differs from FROM's gets a FromAsCasing warning", () => {
    expect(parse("FROM alpine as build").warnings.map((warning) => warning.message)).toEqual([
      "FromAsCasing: 'as' and 'FROM' keywords' casing do not match",
    ]);
    expect(parse("from alpine AS build").warnings).toHaveLength(1);
    expect(parse("from alpine as build").warnings).toEqual([]);
    expect(parse("From alpine as build").warnings).toEqual([]);
  });

  it("FROM needs one or three arguments", () => {
    expect(errorOf("FROM")).toEqual({
      reason: "FROM requires either one or three arguments (FROM image [AS name])",
      at: "1:1",
    });
    expect(errorOf("FROM a b").reason).toMatch(/^FROM requires either one or three arguments/);
    expect(errorOf("FROM a FOR b").reason).toMatch(/^FROM requires either one or three arguments/);
  });

  it("a stage name that starts with a digit or holds symbols is an error at the name", () => {
    expect(errorOf("FROM alpine\nFROM alpine AS 1st")).toEqual({
      reason: 'invalid name for build stage: "1st", name can\'t start with a number or contain symbols',
      at: "2:16",
    });
    expect(errorOf("FROM alpine AS a$b").reason).toMatch(/^invalid name for build stage: "a\$b"/);
    expect(parseLast("FROM alpine AS my-stage_1.0")).toMatchObject({ stageName: "my-stage_1.0" });
  });

  it("FROM takes only --platform", () => {
    expect(errorOf("FROM --pull alpine").reason).toBe("unknown flag: --pull for FROM (it takes --platform)");
  });
});
