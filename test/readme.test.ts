/**
 * README.md against the code: the Quick start is the one verified block, every `tbuild` command
 * line it shows names a command and flags that exist, its links lead to files, its Measured table
 * names every benchmark script, and its example Dockerfile builds and runs as it says.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { commands, findCommand } from "../cli/commands.js";
import type { CommandSpec } from "../cli/spec.js";
import { projectRoot, tbuild } from "./helpers/cli.js";
import { importBusybox } from "./helpers/images.js";
import { tempDirs } from "./helpers/temp.js";

const readme = readFileSync(path.join(projectRoot, "README.md"), "utf8");
const tempDir = tempDirs();

/** The fenced blocks of `text` in the given language. */
function blocks(text: string, language: string): string[] {
  return [...text.matchAll(new RegExp(`\`\`\`${language}\\n([\\s\\S]*?)\`\`\``, "g"))].map((m) => m[1]!);
}

/** The section of the README under `## title`, up to the next `## `. */
function section(title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`);
  expect(start, `section ${title}`).toBeGreaterThanOrEqual(0);
  const end = readme.indexOf("\n## ", start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** Shell words of one command (quotes kept together), up to a comment, pipe or `&&`. */
function words(command: string): string[] {
  const out: string[] = [];
  for (const match of command.matchAll(/'[^']*'|"[^"]*"|#.*$|\|\|?|&&|\S+/g)) {
    const word = match[0];
    if (word.startsWith("#") || word === "|" || word === "||" || word === "&&") break;
    out.push(word);
  }
  return out;
}

/** Every `tbuild ...` invocation in the README's sh blocks, as its words after `tbuild`. */
function tbuildInvocations(): string[][] {
  const found: string[][] = [];
  for (const block of blocks(readme, "sh")) {
    for (const line of block.split("\n")) {
      for (const part of line.split(/&&|\|/)) {
        const w = words(part.replace(/<\(/g, "( "));
        const at = w.findIndex((word) => word === "tbuild" || word === "bin/tbuild" || word === "(");
        if (at < 0) continue;
        const rest = w[at] === "(" ? w.slice(at + 1) : w.slice(at);
        if (rest[0] === "tbuild" || rest[0] === "bin/tbuild") found.push(rest.slice(1).map(unquote));
      }
    }
  }
  return found;
}

function unquote(word: string): string {
  return word.replace(/^(['"])(.*)\1$/, "$2").replace(/\)$/, "");
}

/** The flags a command line uses that its command does not have (none for a correct line). */
function unknownFlags(spec: CommandSpec, args: string[]): string[] {
  const unknown: string[] = [];
  const global = new Set(["help", "debug"]);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg.startsWith("--")) {
      const name = arg.slice(2).split("=")[0]!;
      const flag = spec.flags.find((f) => f.name === name);
      if (!flag && !global.has(name)) unknown.push(arg);
      if (flag?.type === "string" && !arg.includes("=")) i++;
    } else if (arg.startsWith("-") && arg.length > 1) {
      for (const [j, letter] of [...arg.slice(1)].entries()) {
        const flag = spec.flags.find((f) => f.short === letter);
        if (!flag && letter !== "h") unknown.push(`-${letter} in ${arg}`);
        if (flag?.type === "string") {
          if (j === arg.length - 2) i++;
          break;
        }
      }
    } else if (spec.flagsEndAtFirstOperand) {
      break;
    }
  }
  return unknown;
}

describe("README.md", () => {
  it("has a Quick start of one sh block of the two verified commands", () => {
    const quickStart = section("Quick start");
    const sh = blocks(quickStart, "sh");
    expect(sh).toHaveLength(1);
    expect(sh[0]!.trim().split("\n")).toEqual([
      "bash .ci/install && examples/import-busybox.sh && bin/tbuild build -t hello examples/hello && bin/tbuild run --rm hello",
      "npm test",
    ]);
  });

  it("shows only commands and flags tbuild has", () => {
    const invocations = tbuildInvocations();
    expect(invocations.length).toBeGreaterThan(50);
    for (const args of invocations) {
      const found = findCommand(args);
      expect(found, `tbuild ${args.join(" ")}`).toBeDefined();
      expect(unknownFlags(found!.spec, args.slice(found!.consumed)), `tbuild ${args.join(" ")}`).toEqual([]);
    }
  });

  it("shows every command tbuild has", () => {
    const shown = new Set(tbuildInvocations().map((args) => findCommand(args)?.spec.name));
    for (const command of commands) expect(shown, command.name).toContain(command.name);
  });

  it("links only to files that exist", () => {
    const links = [...readme.matchAll(/\]\(([^)#]+)\)/g)].map((m) => m[1]!).filter((l) => !l.includes("://"));
    expect(links.length).toBeGreaterThan(0);
    for (const link of links) expect(existsSync(path.join(projectRoot, link)), link).toBe(true);
  });

  it("names every benchmark script in its Measured table", () => {
    const measured = readme.slice(readme.indexOf("### Measured"));
    const scripts = readdirSync(path.join(projectRoot, "benchmarks")).filter(
      (f) => f.endsWith(".ts") && f !== "run.ts",
    );
    for (const script of scripts) expect(measured, script).toContain(`${script}\``);
  });

  it("has an example Dockerfile that builds and runs as its commands say", async () => {
    const store = tempDir("readme-store");
    const project = tempDir("readme-app");
    await importBusybox(store, "busybox");
    const [dockerfile] = blocks(readme, "dockerfile");
    writeFileSync(path.join(project, "Dockerfile"), dockerfile!);
    const env = { TBUILD_ROOT: store, TOKEN: "s3cret" };

    const built = tbuild(
      ["build", "--secret", "id=token,env=TOKEN", "--build-arg", "VERSION=1.2.3", "-t", "app", "."],
      { cwd: project, env },
    );
    expect(built.status, built.stderr).toBe(0);
    const ran = tbuild(["run", "--rm", "app"], { cwd: project, env });
    expect(ran.status, ran.stderr).toBe(0);
    expect(ran.stdout).toBe("app 1.2.3\n");

    const stage = tbuild(["build", "--target", "build", "-q", "-t", "app:build", "."], { cwd: project, env });
    expect(stage.status, stage.stderr).toBe(0);
    const inStage = tbuild(["run", "--rm", "app:build", "cat", "/src/version.txt"], { cwd: project, env });
    expect(inStage.stdout).toBe("app dev\n");
  });
});
