/**
 * `tbuild run --init`: a tiny init as the container's PID 1, as `docker run --init` gives: tini,
 * statically linked (it runs in any image), bound read-only at /sbin/docker-init (docker's place)
 * and started as `docker-init -- ENTRYPOINT CMD`. It passes signals on to the process, which, not
 * being PID 1, gets the kernel's default actions (a SIGTERM ends a `sleep`), and reaps the
 * orphans that would otherwise stay zombies.
 */
import { accessSync, constants, realpathSync, statSync } from "node:fs";
import path from "node:path";
import { TbuildError } from "../errors/index.js";

/** Where docker binds its init in the container. */
export const INIT_MOUNT = "/sbin/docker-init";

/** Debian's tini package installs the static build here (and `docker-init` links to it). */
const DEBIAN_TINI_STATIC = "/usr/bin/tini-static";

/** The names a static tini goes by on PATH: docker's, then Debian's. */
const INIT_NAMES = ["docker-init", "tini-static"];

export class InitNotFoundError extends TbuildError {
  constructor(message: string) {
    super("E_INIT_NOT_FOUND", message);
  }
}

/**
 * The host path of the init to bind into the container: `$TBUILD_INIT` when set, else tini's static
 * build (/usr/bin/tini-static, or docker-init or tini-static on PATH), its symlinks resolved.
 */
export function findInit(env: NodeJS.ProcessEnv, debianTini = DEBIAN_TINI_STATIC): string {
  const named = env.TBUILD_INIT;
  if (named !== undefined && named !== "") {
    if (!path.isAbsolute(named) || !isExecutableFile(named)) {
      throw new InitNotFoundError(
        `TBUILD_INIT=${named}: not an executable file at an absolute path; point it at a static init such as /usr/bin/tini-static`,
      );
    }
    return realpathSync(named);
  }
  const candidates = [
    debianTini,
    ...(env.PATH ?? "")
      .split(":")
      .filter((dir) => path.isAbsolute(dir))
      .flatMap((dir) => INIT_NAMES.map((name) => path.join(dir, name))),
  ];
  const found = candidates.find(isExecutableFile);
  if (found === undefined) {
    throw new InitNotFoundError(
      "--init needs tini's static build (/usr/bin/tini-static, or docker-init on PATH), which is not installed: apt-get install tini, or set TBUILD_INIT to a static init",
    );
  }
  return realpathSync(found);
}

/** The process's argv under the init: `docker-init -- ARGV...`. */
export function argsUnderInit(args: readonly string[]): string[] {
  return [INIT_MOUNT, "--", ...args];
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * runc could not bind the init at /sbin/docker-init: the image has something there a file cannot
 * be bound onto (a directory). Undefined for any other failure.
 */
export function initMountFailure(err: TbuildError, image: string): TbuildError | undefined {
  if (err.code !== "E_SANDBOX_RUNC" || !err.message.includes(`rootfs at "${INIT_MOUNT}"`)) return undefined;
  const reason = /: ([^:]+)$/.exec(err.message.trim())?.[1] ?? "refused";
  return new TbuildError(
    "E_INIT_MOUNT",
    `--init: cannot bind the init at ${INIT_MOUNT} in image ${image} (${reason}): the image has something else there; run it without --init`,
    { cause: err },
  );
}
