import { beforeAll, describe, expect, it } from "vitest";
import { importDebian } from "../helpers/debian.js";
import { tempDirs } from "../helpers/temp.js";
import { ModeEnv, modes } from "./harness.js";

const tempDir = tempDirs();

describe.each(modes())("a Debian image (mmdebstrap minbase) run as $name", (mode) => {
  let env: ModeEnv;
  beforeAll(async () => {
    env = new ModeEnv(mode, tempDir);
    await importDebian(env.store, "debian", { run: (args) => env.run(args) });
  }, 900_000);

  it("runs apt-get update, whose downloads drop to the _apt user", () => {
    const result = env.run(
      [
        "run",
        "--rm",
        "debian",
        "sh",
        "-c",
        "apt-get update && stat -c %U /var/lib/apt/lists/partial && setpriv --reuid=_apt --regid=nogroup --clear-groups id -un",
      ],
      { timeoutMs: 300_000 },
    );
    expect(result.stderr).not.toMatch(/unsandboxed|setgroups|seteuid|Operation not permitted/);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/Reading package lists/);
    expect(result.stdout).toMatch(/\n_apt\n_apt\n$/);
  }, 300_000);
});
