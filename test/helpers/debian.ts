/**
 * A Debian image for tests, made from Debian's own packages: `mmdebstrap --variant=minbase
 * bookworm` writes a root filesystem tar (owners kept, so `tbuild import` of it works as root and
 * as an unprivileged user alike). Made once (about a minute; it needs Debian's mirrors) and kept in
 * /var/tmp under a name that carries DEBIAN_IMAGE_VERSION, readable by every user.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, rename, rm } from "node:fs/promises";
import { tbuild } from "./cli.js";

/** Bumped when the tar made below changes, so an old cached one is not reused. */
const DEBIAN_IMAGE_VERSION = "bookworm-minbase-1";
export const DEBIAN_TAR = `/var/tmp/tbuild-test-debian-${DEBIAN_IMAGE_VERSION}.tar`;
/** mmdebstrap's own limit: a slow mirror should fail the test's setup, not hang it. */
const MAKE_TIMEOUT_MS = 15 * 60_000;

let making: Promise<string> | undefined;

/** The path of the Debian root filesystem tar, made on first use. */
export function debianRootfsTar(): Promise<string> {
  making ??= makeDebianTar();
  return making;
}

async function makeDebianTar(): Promise<string> {
  if (existsSync(DEBIAN_TAR)) return DEBIAN_TAR;
  const partial = `${DEBIAN_TAR}.${process.pid}.partial.tar`;
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn("mmdebstrap", ["--quiet", "--variant=minbase", "bookworm", partial], {
        stdio: ["ignore", "ignore", "pipe"],
        timeout: MAKE_TIMEOUT_MS,
      });
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      child.once("error", reject);
      child.once("close", (code, signal) => {
        if (code === 0) resolve();
        else reject(new Error(`mmdebstrap failed (${code ?? signal}): ${stderr.slice(-2000)}`));
      });
    });
    await chmod(partial, 0o644);
    // Another test process may have made it first: the tars are equivalent, keep either.
    await rename(partial, DEBIAN_TAR);
  } finally {
    await rm(partial, { force: true });
  }
  return DEBIAN_TAR;
}

/** Imports the Debian root filesystem into the store at `storeRoot` as `name`, with `CMD ["bash"]`. */
export async function importDebian(
  storeRoot: string,
  name: string,
  options: { run?: (args: string[]) => { status: number | null; stderr: string } } = {},
): Promise<void> {
  const tar = await debianRootfsTar();
  const args = ["import", tar, name, "--change", 'CMD ["bash"]'];
  const result = options.run ? options.run(args) : tbuild(args, { env: { TBUILD_ROOT: storeRoot } });
  if (result.status !== 0)
    throw new Error(`tbuild import of ${tar} failed (${result.status}): ${result.stderr}`);
}
