import { describe, expect, it } from "vitest";
import { errorOf, parse, parseLast } from "./node.js";

describe("ENV and LABEL", () => {
  it('ENV A=1 B="two words" gives the pairs, values as written (quotes go at expansion)', () => {
    expect(parseLast('ENV A=1 B="two words"')).toMatchObject({
      kind: "env",
      vars: [
        { key: "A", value: "1" },
        { key: "B", value: '"two words"' },
      ],
    });
  });

  it("LABEL gives the pairs", () => {
    expect(parseLast('LABEL org.opencontainers.image.title="tbuild" version=1')).toMatchObject({
      kind: "label",
      labels: [
        { key: "org.opencontainers.image.title", value: '"tbuild"' },
        { key: "version", value: "1" },
      ],
    });
  });

  it("the legacy `ENV key value` form works, with a LegacyKeyValueFormat warning", () => {
    const { instructions, warnings } = parse("ENV PATH /usr/local/bin:$PATH");
    expect(instructions[0]).toMatchObject({ vars: [{ key: "PATH", value: "/usr/local/bin:$PATH" }] });
    expect(warnings).toEqual([
      {
        message:
          'LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format',
        range: { start: { line: 1, column: 1 }, end: { line: 1, column: 30 } },
      },
    ]);
    expect(parse("LABEL maintainer me").warnings[0]?.message).toMatch(
      /^LegacyKeyValueFormat: "LABEL key=value"/,
    );
  });

  it("ENV or LABEL with no pair, or a blank name, is an error", () => {
    expect(errorOf("ENV").reason).toBe("ENV requires at least one argument");
    expect(errorOf("LABEL").reason).toBe("LABEL requires at least one argument");
    expect(errorOf("ENV =x").reason).toBe("ENV names can not be blank");
  });
});

describe("ARG", () => {
  it("ARG A B=2 declares several, with and without defaults", () => {
    expect(parseLast("ARG A B=2 C= D=x=y")).toMatchObject({
      kind: "arg",
      args: [{ key: "A" }, { key: "B", value: "2" }, { key: "C", value: "" }, { key: "D", value: "x=y" }],
    });
    expect((parseLast("ARG A") as { args: object[] }).args[0]).not.toHaveProperty("value");
  });

  it('ARG abc="123 456" keeps the quoted default as written', () => {
    expect(parseLast('ARG abc="123 456" def')).toMatchObject({
      args: [{ key: "abc", value: '"123 456"' }, { key: "def" }],
    });
  });

  it("ARG with no name, or a blank one, is an error", () => {
    expect(errorOf("ARG").reason).toBe("ARG requires at least one argument");
    expect(errorOf("ARG A =1")).toEqual({ reason: "ARG names can not be blank", at: "1:7" });
  });
});

describe("EXPOSE, VOLUME, USER, WORKDIR, STOPSIGNAL, MAINTAINER", () => {
  it("EXPOSE keeps its words", () => {
    expect(parseLast("EXPOSE 80 443/tcp 53/udp 8000-8010 $PORT")).toMatchObject({
      kind: "expose",
      ports: ["80", "443/tcp", "53/udp", "8000-8010", "$PORT"],
    });
    expect(errorOf("EXPOSE").reason).toBe("EXPOSE requires at least one argument");
  });

  it("VOLUME takes words or a JSON array", () => {
    expect(parseLast("VOLUME /data /logs")).toMatchObject({ kind: "volume", volumes: ["/data", "/logs"] });
    expect(parseLast('VOLUME ["/var/lib/db", " /cache "]')).toMatchObject({
      volumes: ["/var/lib/db", "/cache"],
    });
    expect(errorOf("VOLUME").reason).toBe("VOLUME requires at least one argument");
    expect(errorOf('VOLUME ["/a", " "]').reason).toBe("VOLUME specified can not be an empty string");
  });

  it("USER, WORKDIR and STOPSIGNAL take exactly one argument", () => {
    expect(parseLast("USER app:app")).toMatchObject({ kind: "user", user: "app:app" });
    expect(parseLast("WORKDIR /srv/my app")).toMatchObject({ kind: "workdir", path: "/srv/my app" });
    expect(parseLast("STOPSIGNAL SIGQUIT")).toMatchObject({ kind: "stopsignal", signal: "SIGQUIT" });
    expect(errorOf("USER").reason).toBe("USER requires exactly one argument");
    expect(errorOf("FROM a\n  WORKDIR")).toEqual({
      reason: "WORKDIR requires exactly one argument",
      at: "2:3",
    });
    expect(errorOf("STOPSIGNAL").reason).toBe("STOPSIGNAL requires exactly one argument");
  });

  it("MAINTAINER works with a MaintainerDeprecated warning at the instruction", () => {
    const { instructions, warnings } = parse("FROM a\nMAINTAINER Jane <jane@example.com>");
    expect(instructions[1]).toMatchObject({ kind: "maintainer", maintainer: "Jane <jane@example.com>" });
    expect(warnings).toEqual([
      {
        message: "MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label",
        range: { start: { line: 2, column: 1 }, end: { line: 2, column: 35 } },
      },
    ]);
    expect(errorOf("MAINTAINER").reason).toBe("MAINTAINER requires exactly one argument");
  });
});

describe("unknown instructions", () => {
  it("are errors, with a suggestion in the writer's casing", () => {
    expect(errorOf("FROM a\nCOPPY a b")).toEqual({
      reason: "unknown instruction: COPPY (did you mean COPY?)",
      at: "2:1",
    });
    expect(errorOf("run2 true").reason).toBe("unknown instruction: run2 (did you mean run?)");
    expect(errorOf("FETCH url").reason).toBe("unknown instruction: FETCH");
  });
});
