/**
 * `tbuild` run without blocking this process, for cases whose other end (a registry that says
 * what the test tells it to) is a server in this same process: `world.tbuild` waits synchronously,
 * and the server would never answer.
 */

import type { RunResult } from "../helpers/judges.js";
import type { HostileWorld, Mode, TbuildOptions } from "./harness.js";

export function tbuildAsync(
  world: HostileWorld,
  mode: Mode,
  store: string,
  args: string[],
  options: TbuildOptions = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = world.spawnTbuild(mode, store, args, options);
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    child.once("error", reject);
    child.once("close", (status) => resolve({ status, stdout, stderr }));
  });
}
