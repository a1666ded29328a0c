import { describe, expect, it } from "vitest";
import { DockerfileError } from "../../../frontend/errors.js";
import { errorOf, parseError, parseLast } from "./node.js";

describe("instruction flags", () => {
  it("an unknown flag is an error at the flag's column, naming the instruction and the flags it takes", () => {
    expect(errorOf("FROM alpine\nCOPY --chown=1 --bogus a /b")).toEqual({
      reason:
        "unknown flag: --bogus for COPY (it takes --from, --chown, --chmod, --link, --parents, --exclude)",
      at: "2:16",
    });
  });

  it("a misspelt flag gets a suggestion", () => {
    expect(errorOf("COPY --form=build a /b")).toEqual({
      reason: "unknown flag: --form for COPY (did you mean --from?)",
      at: "1:6",
    });
  });

  it("a flag on an instruction that takes none says so", () => {
    expect(errorOf("ENV --foo=1 A=1").reason).toBe("unknown flag: --foo for ENV, which takes no flags");
    expect(errorOf("STOPSIGNAL --now SIGTERM").reason).toBe(
      "unknown flag: --now for STOPSIGNAL, which takes no flags",
    );
    expect(errorOf("ARG --required A").reason).toBe("unknown flag: --required for ARG, which takes no flags");
  });

  it("a flag given twice is an error at the second one, unless it is repeatable", () => {
    expect(errorOf("COPY --from=a --chown=1 --from=b x /y")).toEqual({
      reason: "duplicate flag specified: --from (COPY takes it once)",
      at: "1:25",
    });
    const copy = parseLast("COPY --exclude=*.md --exclude=*.txt . /app");
    expect(copy).toMatchObject({ exclude: ["*.md", "*.txt"] });
  });

  it("a boolean flag takes no value, or true/false in any case", () => {
    expect(parseLast("COPY --link a /b")).toMatchObject({ link: true });
    expect(parseLast("COPY --link=true a /b")).toMatchObject({ link: true });
    expect(parseLast("COPY --link=FALSE a /b")).toMatchObject({ link: false });
    expect(parseLast("COPY a /b")).toMatchObject({ link: false });
    expect(errorOf("COPY --link=yes a /b").reason).toBe("expecting boolean value for flag --link, not: yes");
    expect(errorOf("COPY --link= a /b").reason).toBe("missing a value on flag: --link");
  });

  it("a string flag needs a value", () => {
    expect(errorOf("COPY --from a /b")).toEqual({
      reason: "missing a value on flag: --from (write --from=…)",
      at: "1:6",
    });
  });

  it("an empty string flag counts as not given, as in BuildKit", () => {
    expect(parseLast("COPY --from= a /b")).not.toHaveProperty("from");
  });

  it("errors are DockerfileErrors with the file, position and an excerpt, never a stack trace", () => {
    const error = parseError("FROM alpine\nRUN --netwrk=none true");
    expect(error).toBeInstanceOf(DockerfileError);
    expect(error.code).toBe("E_DOCKERFILE");
    expect(error.message).toBe(
      [
        "Dockerfile:2:5: unknown flag: --netwrk for RUN (did you mean --network?)",
        " 2 | RUN --netwrk=none true",
        "   |     ^",
      ].join("\n"),
    );
  });

  it("a flag on a continuation line is located there", () => {
    expect(errorOf("FROM alpine\nRUN --mount=type=cache,target=/a \\\n    --netwrk=none true")).toEqual({
      reason: "unknown flag: --netwrk for RUN (did you mean --network?)",
      at: "3:5",
    });
  });

  it("the same flag twice is located at each use", () => {
    const error = parseError("RUN --mount=type=bind,target=/a --mount=from=$X,target=/b true");
    expect(error.reason).toBe("'from' doesn't support variable expansion, define alias stage instead");
    expect(error.column).toBe(33);
  });
});
