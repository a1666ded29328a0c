import { describe, expect, it } from "vitest";
import { errorOf, parseLast } from "./node.js";

describe("RUN, CMD, ENTRYPOINT", () => {
  it("shell form is one command string for the stage's SHELL", () => {
    expect(parseLast("RUN apt-get update && apt-get install -y curl")).toEqual(
      expect.objectContaining({
        kind: "run",
        command: { form: "shell", command: "apt-get update && apt-get install -y curl" },
        mounts: [],
        heredocs: [],
      }),
    );
  });

  it("exec form keeps the JSON elements", () => {
    expect(parseLast('RUN ["/bin/echo", "a b"]')).toMatchObject({
      command: { form: "exec", argv: ["/bin/echo", "a b"] },
    });
    expect(parseLast('CMD ["nginx", "-g", "daemon off;"]')).toMatchObject({
      kind: "cmd",
      command: { form: "exec", argv: ["nginx", "-g", "daemon off;"] },
    });
    expect(parseLast("ENTRYPOINT []")).toMatchObject({
      kind: "entrypoint",
      command: { form: "exec", argv: [] },
    });
    expect(parseLast("CMD node server.js")).toMatchObject({
      command: { form: "shell", command: "node server.js" },
    });
  });

  it("RUN --mount (repeatable), --network and --security are kept, mounts raw for expansion", () => {
    const run = parseLast(
      "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=npm --network=none --security=insecure make",
    );
    expect(run).toMatchObject({
      kind: "run",
      mounts: ["type=cache,target=/root/.cache", "type=secret,id=npm"],
      mountPositions: [
        { line: 1, column: 5 },
        { line: 1, column: 44 },
      ],
      network: "none",
      security: "insecure",
      command: { form: "shell", command: "make" },
    });
  });

  it("without --network or --security the fields are absent (the defaults apply)", () => {
    const run = parseLast("RUN true");
    expect(run).not.toHaveProperty("network");
    expect(run).not.toHaveProperty("security");
  });

  it("an unknown --network or --security value is an error at the flag", () => {
    expect(errorOf("RUN --network=bridge true")).toEqual({
      reason: 'invalid network mode "bridge"; use one of default, none, host',
      at: "1:5",
    });
    expect(errorOf("RUN --network=hots true").reason).toBe(
      'invalid network mode "hots" (did you mean host?); use one of default, none, host',
    );
    expect(errorOf("RUN --security=privileged true")).toEqual({
      reason: 'security "privileged" is not valid; use one of sandbox, insecure',
      at: "1:5",
    });
  });

  it("a mount value is checked for CSV syntax and a variable stage in from= before expansion", () => {
    expect(errorOf('RUN --mount=type=bind,source=a\\"b true').reason).toBe(
      'failed to parse --mount as CSV: bare " in non-quoted-field (column 19)',
    );
    expect(errorOf("RUN --mount=type=bind,from=$STAGE,target=/s true").reason).toBe(
      "'from' doesn't support variable expansion, define alias stage instead",
    );
    // Other fields may use variables: they are expanded before parseMount reads them.
    expect(parseLast("RUN --mount=type=cache,target=$HOME/.cache true")).toMatchObject({
      mounts: ["type=cache,target=$HOME/.cache"],
    });
  });

  it("RUN <<EOF keeps the heredoc script beside the command", () => {
    const run = parseLast("RUN <<EOF\napt-get update\napt-get install -y git\nEOF");
    expect(run).toMatchObject({
      kind: "run",
      command: { form: "shell", command: "<<EOF" },
      heredocs: [{ name: "EOF", content: "apt-get update\napt-get install -y git\n", expand: true }],
    });
  });

  it("RUN python3 <<EOF keeps the command that reads the heredoc", () => {
    expect(parseLast("RUN python3 <<'EOF'\nprint('hi')\nEOF")).toMatchObject({
      command: { form: "shell", command: "python3 <<'EOF'" },
      heredocs: [{ name: "EOF", content: "print('hi')\n", expand: false }],
    });
  });

  it("CMD and ENTRYPOINT take no flags", () => {
    expect(errorOf("CMD --doit a b").reason).toBe("unknown flag: --doit for CMD, which takes no flags");
  });
});

describe("SHELL", () => {
  it("SHELL takes a JSON array", () => {
    expect(parseLast('SHELL ["/bin/bash", "-eo", "pipefail", "-c"]')).toMatchObject({
      kind: "shell",
      argv: ["/bin/bash", "-eo", "pipefail", "-c"],
    });
  });

  it("SHELL in shell form or empty is an error", () => {
    expect(errorOf("FROM a\nSHELL /bin/bash -c")).toEqual({
      reason: 'SHELL requires the arguments to be in JSON form, e.g. SHELL ["/bin/bash", "-c"]',
      at: "2:1",
    });
    expect(errorOf("SHELL []").reason).toBe("SHELL requires at least one argument");
  });
});
