import { describe, expect, it } from "vitest";
import { errorOf, parse, parseLast } from "./node.js";

describe("ONBUILD", () => {
  it("ONBUILD RUN … keeps the trigger's text for the image config and parses it to check it now", () => {
    expect(parseLast("ONBUILD RUN make install")).toMatchObject({
      kind: "onbuild",
      expression: "RUN make install",
      inner: { kind: "run", command: { form: "shell", command: "make install" } },
    });
  });

  it("the trigger's flags are checked now, at their own column", () => {
    expect(parseLast("onbuild COPY --from=build /out /app")).toMatchObject({
      expression: "COPY --from=build /out /app",
      inner: { kind: "copy", from: "build", sources: ["/out"], dest: "/app" },
    });
    expect(errorOf("FROM a\nONBUILD COPY --bogus=1 a /b")).toEqual({
      reason:
        "unknown flag: --bogus for COPY (it takes --from, --chown, --chmod, --link, --parents, --exclude)",
      at: "2:14",
    });
  });

  it("ONBUILD ONBUILD, ONBUILD FROM and ONBUILD MAINTAINER are errors at the trigger", () => {
    expect(errorOf("ONBUILD ONBUILD RUN x")).toEqual({
      reason: "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
      at: "1:9",
    });
    expect(errorOf("ONBUILD FROM alpine")).toEqual({
      reason: "FROM isn't allowed as an ONBUILD trigger",
      at: "1:9",
    });
    expect(errorOf("ONBUILD maintainer me")).toEqual({
      reason: "MAINTAINER isn't allowed as an ONBUILD trigger",
      at: "1:9",
    });
  });

  it("a heredoc trigger keeps its body in the expression", () => {
    expect(parseLast("ONBUILD RUN <<EOF\necho hi\nEOF")).toMatchObject({
      expression: "RUN <<EOF\necho hi\nEOF",
      inner: { kind: "run", heredocs: [{ name: "EOF", content: "echo hi\n" }] },
    });
  });

  it("the trigger's lint warnings wait for the build that runs it", () => {
    expect(parse("ONBUILD ENV A 1").warnings).toEqual([]);
  });

  it("ONBUILD with nothing to trigger is an error", () => {
    expect(errorOf("ONBUILD").reason).toBe("ONBUILD requires at least one argument");
  });
});
