import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ShellExpansionError, ShellLex } from "../../../frontend/shell/index.js";

// BuildKit's own expansion cases (test/fixtures/buildkit-shell/README.md says where they come
// from and how they read), run one vitest case per line.

function fixtureLines(name: string): string[] {
  const text = readFileSync(new URL(`../../fixtures/buildkit-shell/${name}`, import.meta.url), "utf8");
  return text.split("\n");
}

/** BuildKit's BuildEnvs: `k=v` splits at the first `=`, a bare `k` is set and empty, later wins. */
function envFrom(entries: readonly string[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of entries) {
    const equals = entry.indexOf("=");
    if (equals < 0) env.set(entry, "");
    else env.set(entry.slice(0, equals), entry.slice(equals + 1));
  }
  return env;
}

interface EnvVarCase {
  line: number;
  input: string;
  expected: string;
}

function envVarCases(): EnvVarCase[] {
  const cases: EnvVarCase[] = [];
  fixtureLines("envVarTest").forEach((raw, index) => {
    if (raw.startsWith("#") || raw.trim() === "") return;
    const fields = raw.trim().split("|");
    if (fields.length !== 3) throw new Error(`envVarTest:${index + 1}: expected 3 fields: ${raw}`);
    const [platform, input, expected] = fields.map((field) => field.trim()) as [string, string, string];
    if (platform !== "A" && platform !== "U" && platform !== "W") {
      throw new Error(`envVarTest:${index + 1}: unknown platform ${platform}`);
    }
    if (platform !== "W") cases.push({ line: index + 1, input, expected });
  });
  return cases;
}

interface WordsCase {
  line: number;
  input: string;
  expected: string[];
  env: Map<string, string>;
}

function wordsCases(): WordsCase[] {
  const cases: WordsCase[] = [];
  const envEntries: string[] = [];
  fixtureLines("wordsTest").forEach((raw, index) => {
    if (raw.startsWith("#") || raw === "") return;
    if (raw.startsWith("ENV ")) {
      envEntries.push(raw.slice(3).replace(/^ +/, ""));
      return;
    }
    const fields = raw.split("|");
    if (fields.length !== 2) throw new Error(`wordsTest:${index + 1}: expected exactly one |: ${raw}`);
    const [input, expected] = fields as [string, string];
    cases.push({
      line: index + 1,
      input: input.trim(),
      expected: expected.replace(/^ +/, "").split(","),
      env: envFrom(envEntries),
    });
  });
  return cases;
}

const envVarEnvironment = envFrom(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
const allEnvVarCases = envVarCases();
const allWordsCases = wordsCases();

describe("BuildKit envVarTest (ProcessWord)", () => {
  it("has its A and U lines", () => {
    expect(allEnvVarCases.length).toBeGreaterThan(200);
  });

  for (const { line, input, expected } of allEnvVarCases) {
    it(`line ${line}: ${JSON.stringify(input)} → ${expected === "error" ? "error" : JSON.stringify(expected)}`, () => {
      const lex = new ShellLex();
      if (expected === "error") {
        expect(() => lex.processWord(input, envVarEnvironment)).toThrow(ShellExpansionError);
      } else {
        expect(lex.processWord(input, envVarEnvironment)).toBe(expected);
      }
    });
  }
});

describe("BuildKit wordsTest (ProcessWords)", () => {
  it("has its lines", () => {
    expect(allWordsCases.length).toBeGreaterThan(20);
  });

  for (const { line, input, expected, env } of allWordsCases) {
    const shown = expected.length === 1 && expected[0] === "error" ? "error" : JSON.stringify(expected);
    it(`line ${line}: ${JSON.stringify(input)} → ${shown}`, () => {
      const lex = new ShellLex();
      if (shown === "error") {
        expect(() => lex.processWords(input, env)).toThrow(ShellExpansionError);
      } else {
        expect(lex.processWords(input, env)).toEqual(expected);
      }
    });
  }
});
