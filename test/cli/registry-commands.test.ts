import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { tbuild } from "../helpers/cli.js";
import { tempDirs } from "../helpers/temp.js";

/** Temporary directories, removed when the file's tests end. */
const tempDir = tempDirs();

function env(): NodeJS.ProcessEnv {
  const dir = tempDir("cli");
  writeFileSync(path.join(dir, "config.toml"), "");
  return {
    TBUILD_ROOT: path.join(dir, "store"),
    TBUILD_CONFIG: path.join(dir, "config.toml"),
    DOCKER_CONFIG: dir,
  };
}

describe("pull, push, login and logout on the command line", () => {
  it("are listed in tbuild --help", () => {
    const { stdout } = tbuild(["--help"]);
    for (const name of ["pull", "push", "login", "logout"])
      expect(stdout).toMatch(new RegExp(`\\n\\s+${name}\\s`));
  });

  it("say what is missing with exit code 2", () => {
    expect(tbuild(["pull"], { env: env() })).toMatchObject({ status: 2 });
    expect(tbuild(["push", "a", "b"], { env: env() })).toMatchObject({ status: 2 });
    const noPassword = tbuild(["login", "-u", "me", "127.0.0.1:5000"], { env: env() });
    expect(noPassword.status).toBe(2);
    expect(noPassword.stderr).toContain("give -u USER and --password-stdin");
    const both = tbuild(["login", "-u", "me", "-p", "x", "--password-stdin", "127.0.0.1:5000"], {
      env: env(),
    });
    expect(both.status).toBe(2);
  });

  it("reject an invalid reference before any network use", () => {
    const result = tbuild(["pull", "Not/Valid"], { env: env() });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('invalid image reference "Not/Valid"');
  });

  it("logout of a registry never logged in to says so and succeeds", () => {
    const result = tbuild(["logout", "reg.example:5000"], { env: env() });
    expect(result.status).toBe(0);
    expect(result.stdout).toBe("Not logged in to reg.example:5000\n");
  });
});
