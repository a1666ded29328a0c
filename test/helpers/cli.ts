import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

/**
 * The checkout the tests run tbuild from: this one, or where the global setup made it reachable
 * by the rootless test user (helpers/stage-checkout.ts).
 */
export const projectRoot = process.env.TBUILD_TEST_ROOT
  ? `${process.env.TBUILD_TEST_ROOT}/`
  : fileURLToPath(new URL("../../", import.meta.url));
export const tbuildBin = `${projectRoot}bin/tbuild`;

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `bin/tbuild` as a user would, from the built `dist/`. */
export function tbuild(
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {},
): CliResult {
  const result = spawnSync(tbuildBin, args, {
    cwd: options.cwd ?? projectRoot,
    env: { ...process.env, ...options.env },
    input: options.input ?? "",
    encoding: "utf8",
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Runs tbuild against the store at `root`, with a fixed SOURCE_DATE_EPOCH so digests repeat. */
export function tbuildInStore(root: string, args: string[], sourceDateEpoch: number): CliResult {
  return tbuild(args, { env: { TBUILD_ROOT: root, SOURCE_DATE_EPOCH: String(sourceDateEpoch) } });
}

/** The same, failing the test with tbuild's own message unless it succeeds; gives stdout. */
export function tbuildInStoreOk(root: string, args: string[], sourceDateEpoch: number): string {
  const result = tbuildInStore(root, args, sourceDateEpoch);
  if (result.status !== 0) throw new Error(`tbuild ${args.join(" ")} failed: ${result.stderr}`);
  return result.stdout;
}

/**
 * `tbuild` without blocking this process: for tests whose own servers (a proxy, a fake registry)
 * must keep answering while tbuild runs.
 */
export function tbuildAsync(
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(tbuildBin, args, {
      cwd: options.cwd ?? projectRoot,
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    child.on("error", reject);
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}
