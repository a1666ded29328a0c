import { describe, expect, it } from "vitest";
import { commands } from "../../cli/commands.js";
import { tbuild } from "../helpers/cli.js";

/** The help line of a flag: the one naming `--name` followed by its value or a blank. */
function flagLine(help: string, name: string): string | undefined {
  return help.split("\n").find((line) => new RegExp(`(^|[ ,])--${name}( |$)`).test(line));
}

describe("tbuild --help", () => {
  it("lists every command with its summary", () => {
    const { status, stdout } = tbuild(["--help"]);
    expect(status).toBe(0);
    for (const command of commands) {
      expect(stdout).toMatch(new RegExp(`\\n  ${command.name} +${escapeRegExp(command.summary)}\\n`));
    }
  });

  it("gives a command's help for tbuild help COMMAND too", () => {
    const viaHelp = tbuild(["help", "debug", "graph"]);
    expect(viaHelp.status).toBe(0);
    expect(viaHelp.stdout).toBe(tbuild(["debug", "graph", "--help"]).stdout);
    expect(viaHelp.stdout).toContain("Usage: tbuild debug graph [FLAGS] CONTEXT");
  });

  it("lists every flag of every command on one line with its meaning and its default", () => {
    for (const command of commands) {
      const { status, stdout } = tbuild([...command.name.split(" "), "--help"]);
      expect(status, command.name).toBe(0);
      for (const flag of [...command.flags, { name: "debug", description: "show the stack trace" }]) {
        const line = flagLine(stdout, flag.name);
        expect(line, `${command.name} --${flag.name}`).toBeDefined();
        expect(line).toContain(flag.description);
        if ("short" in flag && flag.short) expect(line).toContain(`-${flag.short}, --${flag.name}`);
        if ("values" in flag && flag.values)
          expect(line).toContain(`--${flag.name} ${flag.values.join("|")}`);
        if ("default" in flag && flag.default !== undefined) {
          expect(line).toContain(`(default: ${flag.default})`);
        } else {
          expect(line).not.toContain("(default:");
        }
      }
    }
  });

  it("shows the defaults a user of docker buildx build looks for", () => {
    const { stdout } = tbuild(["build", "--help"]);
    expect(flagLine(stdout, "progress")).toMatch(/--progress auto\|tty\|plain\|rawjson\|quiet .*auto/);
    expect(flagLine(stdout, "jobs")).toMatch(/\(default: the CPU count/);
    expect(flagLine(stdout, "file")).toContain("(default: CONTEXT/Dockerfile)");
    expect(flagLine(stdout, "target")).toContain("(default: the last stage)");
    expect(flagLine(stdout, "platform")).toContain("(default: this machine's)");
    expect(flagLine(stdout, "output")).toContain("(default: the local store, under the -t names)");
    expect(flagLine(stdout, "worker")).toContain("ssh://USER@HOST|cmd://COMMAND");
    const run = tbuild(["run", "--help"]).stdout;
    expect(flagLine(run, "network")).toContain("--network host|none");
    expect(flagLine(run, "network")).toContain("(default: host)");
  });

  it("rejects an unknown command with exit code 2 and no stack trace", () => {
    const { status, stderr } = tbuild(["frobnicate"]);
    expect(status).toBe(2);
    expect(stderr).toContain('unknown command "frobnicate"');
    expect(stderr).not.toMatch(/\n\s+at /);
    expect(tbuild(["help", "frobnicate"]).status).toBe(2);
  });

  it("rejects an unknown flag with exit code 2", () => {
    const { status, stderr } = tbuild(["version", "--frob"]);
    expect(status).toBe(2);
    expect(stderr).toContain("--frob");
  });
});

describe("tbuild version", () => {
  it("runs on Node 24 whatever node is first on PATH", () => {
    const { status, stdout } = tbuild(["version"], { env: { PATH: "/usr/bin:/bin" } });
    expect(status).toBe(0);
    expect(stdout).toMatch(/^tbuild \d+\.\d+\.\d+\ncommit \S+\nnode v24\.\d+\.\d+\nrunc .+\n$/);
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
