/**
 * What the hostile suite's harness does not give: a shell line run as the mode's user, for cases
 * whose point is the shell around tbuild (a redirection, bash's `>(cmd)`), with the harness's fixed
 * environment and `$TBUILD` naming bin/tbuild.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { tbuildBin } from "../helpers/cli.js";
import { FIXED_EPOCH } from "../helpers/images.js";
import type { RunResult } from "../helpers/judges.js";
import { type Mode, ROOTLESS_USER } from "./harness.js";

/** `bash -c script` as root or as the rootless user, with TBUILD_ROOT=store. */
export function shellAs(
  mode: Mode,
  store: string,
  script: string,
  env: Record<string, string> = {},
): RunResult {
  const home =
    mode === "rootless"
      ? execFileSync("getent", ["passwd", ROOTLESS_USER], { encoding: "utf8" }).split(":")[5]!
      : (process.env.HOME ?? "/");
  const assignments = Object.entries({
    PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: home,
    TBUILD_ROOT: store,
    TBUILD_CONFIG: "/dev/null",
    SOURCE_DATE_EPOCH: String(FIXED_EPOCH),
    TBUILD: tbuildBin,
    ...env,
  }).map(([k, v]) => `${k}=${v}`);
  const command = ["env", "-i", ...assignments, "bash", "-c", script];
  const [file, ...args] = mode === "rootless" ? ["runuser", "-u", ROOTLESS_USER, "--", ...command] : command;
  const result = spawnSync(file!, args, { encoding: "utf8", input: "", maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
