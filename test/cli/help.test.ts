import { describe, expect, it } from "vitest";
import { commands } from "../../cli/commands.js";
import { tbuild } from "../helpers/cli.js";

describe("tbuild --help", () => {
  it("lists every command", () => {
    const { status, stdout } = tbuild(["--help"]);
    expect(status).toBe(0);
    for (const command of commands) expect(stdout).toContain(command.name);
  });

  it("lists every flag of a command with its meaning", () => {
    for (const command of commands) {
      const { status, stdout } = tbuild([...command.name.split(" "), "--help"]);
      expect(status).toBe(0);
      for (const flag of command.flags) expect(stdout).toContain(`--${flag.name}`);
    }
  });

  it("rejects an unknown command with exit code 2 and no stack trace", () => {
    const { status, stderr } = tbuild(["frobnicate"]);
    expect(status).toBe(2);
    expect(stderr).toContain('unknown command "frobnicate"');
    expect(stderr).not.toMatch(/\n\s+at /);
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
    expect(stdout).toMatch(/^tbuild \d+\.\d+\.\d+\nnode v24\./);
  });
});
