/**
 * `tbuild completion`: each script is loaded in its real shell and asked for completions the way
 * the shell's line editor asks: bash through `_tbuild` with COMP_WORDS/COMP_CWORD, fish through
 * `complete -C`, zsh through an interactive zsh in a pseudo-terminal (zsh/zpty) pressing TAB.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { commands } from "../../cli/commands.js";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

const tempDir = tempDirs();

function script(shell: string): string {
  const { status, stdout, stderr } = tbuild(["completion", shell]);
  if (status !== 0) throw new Error(`tbuild completion ${shell} failed: ${stderr}`);
  return stdout;
}

function requireShell(shell: string): void {
  if (spawnSync(shell, ["-c", "exit 0"]).status !== 0) {
    throw new Error(`${shell} is not installed: .ci/install installs it (apt-get install ${shell})`);
  }
}

const firstWords = [...new Set(commands.map((c) => c.name.split(" ")[0]!))];

describe("tbuild completion", () => {
  it("refuses a shell it has no script for, with exit code 2", () => {
    const result = tbuild(["completion", "tcsh"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('bash, zsh or fish (not "tcsh")');
    expect(tbuild(["completion"]).status).toBe(2);
  });
});

describe("bash completion", () => {
  let file: string;
  beforeAll(() => {
    requireShell("bash");
    file = path.join(tempDir("completion"), "tbuild.bash");
    writeFileSync(file, script("bash"));
  });

  /** COMPREPLY after `_tbuild` for a command line; a trailing space starts a new, empty word. */
  function complete(line: string, words?: string[]): string[] {
    const compWords = words ?? line.split(" ");
    const result = spawnSync(
      "bash",
      [
        "--norc",
        "-c",
        'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; _tbuild; printf "%s\\n" "${COMPREPLY[@]}"; complete -p tbuild',
        "bash",
        file,
        ...compWords,
      ],
      { encoding: "utf8" },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const lines = result.stdout.split("\n").filter(Boolean);
    expect(lines.at(-1)).toBe("complete -o default -F _tbuild tbuild");
    return lines.slice(0, -1);
  }

  it("completes command names", () => {
    expect(complete("tbuild bu")).toEqual(["build"]);
    expect(complete("tbuild ").sort()).toEqual([...firstWords].sort());
    expect(complete("tbuild debug ").sort()).toEqual(["graph", "parse"]);
  });

  it("completes a command's flags", () => {
    expect(complete("tbuild build --prog")).toEqual(["--progress"]);
    expect(complete("tbuild debug graph --fo")).toEqual(["--format"]);
    const runFlags = complete("tbuild run -");
    for (const flag of commands.find((c) => c.name === "run")!.flags)
      expect(runFlags).toContain(`--${flag.name}`);
  });

  it("completes the values of a flag with a fixed set, after a blank or an =", () => {
    expect(complete("tbuild build --progress ").sort()).toEqual(["auto", "plain", "quiet", "rawjson", "tty"]);
    expect(complete("tbuild build --progress r")).toEqual(["rawjson"]);
    // bash splits `--progress=ra` at the = (COMP_WORDBREAKS): the words are --progress, =, ra.
    expect(complete("", ["tbuild", "build", "--progress", "=", "ra"])).toEqual(["rawjson"]);
    expect(complete("tbuild run --network n")).toEqual(["none"]);
    expect(complete("tbuild completion z")).toEqual(["zsh"]);
  });

  it("leaves file names to bash for other values and operands", () => {
    expect(complete("tbuild build -f ")).toEqual([]);
    expect(complete("tbuild build --file Dock")).toEqual([]);
    expect(complete("tbuild build -t app ")).toEqual([]);
  });
});

describe("fish completion", () => {
  let file: string;
  beforeAll(() => {
    requireShell("fish");
    file = path.join(tempDir("completion"), "tbuild.fish");
    writeFileSync(file, script("fish"));
  });

  function complete(line: string): string[] {
    const result = spawnSync(
      "fish",
      ["--no-config", "-c", "source $argv[1]; complete -C $argv[2]", file, line],
      {
        encoding: "utf8",
      },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    return result.stdout
      .split("\n")
      .filter(Boolean)
      .map((l) => l.split("\t")[0]!);
  }

  it("parses, and names every command", () => {
    expect(spawnSync("fish", ["--no-execute", file]).status).toBe(0);
    expect(complete("tbuild ").sort()).toEqual([...firstWords].sort());
  });

  it("completes command names, flags and fixed values", () => {
    expect(complete("tbuild bu")).toEqual(["build"]);
    expect(complete("tbuild debug ").sort()).toEqual(["graph", "parse"]);
    expect(complete("tbuild build --prog")).toEqual(["--progress"]);
    expect(complete("tbuild build --progress ").sort()).toEqual(["auto", "plain", "quiet", "rawjson", "tty"]);
    expect(complete("tbuild debug graph --format ").sort()).toEqual(["dot", "json"]);
    expect(complete("tbuild run --network ").sort()).toEqual(["bridge", "host", "none", "private"]);
  });
});

describe("zsh completion", () => {
  let fpathDir: string;
  beforeAll(() => {
    requireShell("zsh");
    fpathDir = path.join(tempDir("completion"), "functions");
    mkdirSync(fpathDir);
    writeFileSync(path.join(fpathDir, "_tbuild"), script("zsh"));
  });

  /**
   * What zsh shows after TAB at the end of `line`: an interactive `zsh -f` in a pseudo-terminal
   * with compinit and the script in $fpath, exiting right after the completion
   * (`comppostfuncs`). The screen text, escape sequences removed.
   */
  function pressTab(line: string): string {
    const driver = `
      zmodload zsh/zpty || exit 3
      zpty z zsh -f -i
      zpty -w z "PROMPT="
      zpty -w z "fpath=($1 \\$fpath); autoload -U compinit; compinit -u -D"
      zpty -w z "comppostfuncs=( exit )"
      zpty -w z "$2"$'\\t'
      while zpty -r z; do :; done
    `;
    const result = spawnSync("zsh", ["-f", "-c", driver, "zsh", fpathDir, line], {
      encoding: "utf8",
      timeout: 20_000,
      env: { ...process.env, TERM: "vt100" },
    });
    expect(result.status).toBe(0);
    const text = result.stdout
      .replace(/\x1b\[[0-9;?]*[a-zA-Z]/g, "")
      .replace(/[\r\x07]/g, "\n")
      .replace(/\x00/g, "");
    // What follows the typed line's echo: the completed line, and the list of matches.
    return text.slice(text.lastIndexOf("comppostfuncs=( exit )"));
  }

  it("parses, and names every command", () => {
    const source = script("zsh");
    expect(spawnSync("zsh", ["-n", "-c", source]).status).toBe(0);
    for (const word of firstWords) expect(source).toMatch(new RegExp(`'${word}:`));
    expect(pressTab("tbuild ")).toMatch(/build +-- build an image from a Dockerfile/);
  });

  it("completes a command name, a flag and a flag's fixed values", () => {
    expect(pressTab("tbuild bu")).toContain("tbuild build ");
    expect(pressTab("tbuild build --prog")).toContain("tbuild build --progress ");
    expect(pressTab("tbuild build --progress ")).toMatch(/auto +plain +quiet +rawjson +tty/);
    expect(pressTab("tbuild debug ")).toMatch(/graph +-- print the build graph/);
    expect(pressTab("tbuild run --network ")).toMatch(/host +none/);
  });
});
