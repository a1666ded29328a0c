import { describe, expect, it } from "vitest";
import { errorOf, parse, parseLast } from "./node.js";

const SECOND = 1_000_000_000;

describe("HEALTHCHECK", () => {
  it("HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2h --start-interval=1.5s --retries=3 CMD … in nanoseconds", () => {
    expect(
      parseLast(
        "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2h --start-interval=1.5s --retries=3 CMD curl -f http://localhost/",
      ),
    ).toEqual(
      expect.objectContaining({
        kind: "healthcheck",
        test: { type: "cmd", command: { form: "shell", command: "curl -f http://localhost/" } },
        interval: 90 * SECOND,
        timeout: 500_000_000,
        startPeriod: 7200 * SECOND,
        startInterval: 1.5 * SECOND,
        retries: 3,
      }),
    );
  });

  it("CMD in exec form keeps the elements", () => {
    expect(parseLast('HEALTHCHECK CMD ["/bin/check", "--quiet"]')).toMatchObject({
      test: { type: "cmd", command: { form: "exec", argv: ["/bin/check", "--quiet"] } },
    });
  });

  it("the type word is case-insensitive", () => {
    expect(parseLast("HEALTHCHECK cmd true")).toMatchObject({ test: { type: "cmd" } });
    expect(parseLast("HEALTHCHECK none")).toMatchObject({ test: { type: "none" } });
  });

  it("durations take Go's syntax: units ns, us, ms, s, m, h, fractions, sums", () => {
    const interval = (value: string) => parseLast(`HEALTHCHECK --interval=${value} CMD true`);
    expect(interval("1h2m3s4ms")).toMatchObject({ interval: 3723 * SECOND + 4_000_000 });
    expect(interval("2500us")).toMatchObject({ interval: 2_500_000 });
    expect(interval("1000000ns")).toMatchObject({ interval: 1_000_000 });
    expect(interval(".5m")).toMatchObject({ interval: 30 * SECOND });
    expect(interval("+1s")).toMatchObject({ interval: SECOND });
  });

  it("zero durations and zero retries mean the default and are left out, as BuildKit writes them", () => {
    const check = parseLast(
      "HEALTHCHECK --start-period=0s --start-interval=0s --interval=5s --timeout=0 --retries=0 CMD true",
    );
    expect(check).toMatchObject({ interval: 5 * SECOND });
    for (const field of ["timeout", "startPeriod", "startInterval", "retries"]) {
      expect(check).not.toHaveProperty(field);
    }
  });

  it("a duration under 1ms (other than 0), negative, or malformed is an error at its flag", () => {
    expect(errorOf("HEALTHCHECK --retries=1 --interval=500us CMD true")).toEqual({
      reason: '--interval cannot be less than 1ms (got "500us"; 0 means the default)',
      at: "1:25",
    });
    expect(errorOf("HEALTHCHECK --timeout=-1s CMD true").reason).toBe(
      '--timeout cannot be less than 1ms (got "-1s"; 0 means the default)',
    );
    expect(errorOf("HEALTHCHECK --timeout=30 CMD true").reason).toBe(
      '--timeout: missing unit in duration "30" (write a number and a unit: ns, us, ms, s, m, h; e.g. 30s or 1m30s)',
    );
    expect(errorOf("HEALTHCHECK --timeout=3d CMD true").reason).toMatch(
      /^--timeout: unknown unit "d" in duration "3d"/,
    );
    expect(errorOf("HEALTHCHECK --timeout=fast CMD true").reason).toMatch(
      /^--timeout: invalid duration "fast"/,
    );
    expect(errorOf("HEALTHCHECK --timeout=.s CMD true").reason).toMatch(/^--timeout: invalid duration "\.s"/);
  });

  it("retries must be a whole number, not negative", () => {
    expect(errorOf("HEALTHCHECK --retries=-1 CMD true")).toEqual({
      reason: "--retries cannot be negative (-1)",
      at: "1:13",
    });
    expect(errorOf("HEALTHCHECK --retries=three CMD true").reason).toBe(
      '--retries must be a whole number, not "three"',
    );
    expect(errorOf("HEALTHCHECK --retries=3000000000 CMD true").reason).toMatch(
      /^--retries must be a whole number/,
    );
  });

  it("HEALTHCHECK NONE disables the inherited check and takes no arguments", () => {
    expect(parseLast("HEALTHCHECK NONE")).toMatchObject({ kind: "healthcheck", test: { type: "none" } });
    expect(errorOf("HEALTHCHECK NONE --now")).toEqual({
      reason: "HEALTHCHECK NONE takes no arguments",
      at: "1:1",
    });
  });

  it("flags on HEALTHCHECK NONE are ignored, as BuildKit does, with a warning", () => {
    const { instructions, warnings } = parse("HEALTHCHECK --interval=5s NONE");
    expect(instructions[0]).not.toHaveProperty("interval");
    expect(warnings.map((warning) => warning.message)).toEqual([
      "HEALTHCHECK NONE ignores its flags: --interval=5s",
    ]);
  });

  it("a type other than CMD or NONE is an error at the type word", () => {
    expect(errorOf("HEALTHCHECK CONNECT TCP 7000")).toEqual({
      reason: 'Unknown type "CONNECT" in HEALTHCHECK (try CMD)',
      at: "1:13",
    });
  });

  it("HEALTHCHECK needs a type, and CMD needs a command", () => {
    expect(errorOf("HEALTHCHECK").reason).toBe("HEALTHCHECK requires at least one argument");
    expect(errorOf("HEALTHCHECK CMD").reason).toBe("Missing command after HEALTHCHECK CMD");
    expect(errorOf("HEALTHCHECK CMD []").reason).toBe("Missing command after HEALTHCHECK CMD");
  });

  it("HEALTHCHECK takes only its five flags", () => {
    expect(errorOf("HEALTHCHECK --intervall=5s CMD true").reason).toBe(
      "unknown flag: --intervall for HEALTHCHECK (did you mean --interval?)",
    );
  });
});
